"""Speech path cost: real-time factor per stage and for the whole speech path of one stream, per core.

Inputs are built from the real recordings in ../shared/data, written as 16 kHz mono WAV and cut into
~2 s segments like a published stream:
  librivox  the five LibriVox clips (one male reader) with ~1 s of background noise before, between and after
  meeting   a mono "meeting": RAVDESS clips of Actor_01 (male) and Actor_02 (female) taking turns with
            ~1 s noise pauses, so diarisation has two voices to tell apart

Stages, each timed by calling the component directly on the same audio or utterances:
  decode        decode_segment() over the pre-cut segments
  vad           StreamingVad.push over every segment's audio
  prosody       prosody_frames() per segment and channel
  diarisation   VoiceEmbedder on each utterance + OnlineDiarizer.assign
  asr+audio     Transcriber (Whisper encoder -> audio embedding, decoder -> transcript) per utterance; with
                --audio-features every_layer the audio embedding comes from whisper_layers.py (torch) instead
  text          SentenceEmbedder over each push's transcripts, as UtteranceEncoder batches them
  stitching     StreamSession.push over the perceived segments minus the time inside VAD and diarisation
  other         whole path minus the stages above (cutting the file into segments, thumbnails, glue)
  whole path    Spine.utterances over file_segments(), end to end
The utterances are those the whole path produced (a warm-up run, untimed). Everything runs on one
thread (torch, ONNX Runtime, CTranslate2, and numpy's OpenBLAS and every OpenMP pool through
threadpoolctl: left alone, OpenBLAS takes a second core in Whisper's and resemblyzer's feature
extraction and mostly spins there), so figures are per core; the whole path is also timed on the
wall clock, which matches its CPU time when nothing ran in parallel. Model loading is excluded:
models are loaded once and warmed up before any timing.
RTF = CPU seconds of processing / seconds of audio (the target is <= 0.05 per stream on one core).

A second table times the audio embedding alone, per utterance of the same inputs, each way it can be made:
  last layer, CT2 30 s     CTranslate2 int8, Whisper's own 30 s padded window, last layer pooled
  last layer, CT2 window   Transcriber(audio_features="last_layer") encoder only: the >= 10 s window of asr.py
  every layer, torch int8  WhisperLayers as the transcriber runs it: transformers' encoder, its Linear layers in int8,
                           on the utterance + 0.5 s, every layer pooled
  every layer, torch fp32  the same in float32 throughout (what it ran before the int8 layers)
as CPU ms per utterance and RTF (CPU s / s of utterance audio), one thread, median over runs.

Before/after (issue 19): --compare-checkpoint PATH runs the whole path and its stages a second time, in the same
process, with the Whisper features the emotion model at PATH reads (e.g. the previous default, exported from git into
a temporary folder: last_layer), and prints its RTF, ASR + audio embedding and audio embedding per utterance against
today's default's (every_layer), as after/before ratios. Only the features differ between the two: the speech path does
not run the emotion model (bench/model.py times its scoring).
--compare-float32 does the same with the every-layer encoder in float32 as "before" (int8 Linear layers are the
default: whisper_layers.py), everything else equal.
--compare-text-embeddings does the same with a sentence embedding of every transcript as "before" (what the path made
before text embeddings followed the served model: perception/encode.scoring_voice; the default model reads no words).
--compare-turn-look-ahead does the same with the cutter asking Smart Turn at every pause that reaches turn_pause as
"before", also where the merge gap closes the utterance in the frames at hand anyway (vad.py: what it did before that
look-ahead; the bench swaps UtteranceCutter._merge_gap_ahead for its runs). Each setup's Smart Turn calls are counted.
When two setups are compared, both are loaded and prepared first, then they take turns run by run, so that the load's
drift on a shared machine weighs on both alike.
Another Whisper model's features with tiny.en's transcripts: EMOSTREAM_VOICE__FEATURE_MODEL_DIR=DIR (e.g. Whisper base's
joined folder) with --audio-features every_layer; the embedding-alone rows then time that model's encoder.
Timings are printed, never asserted.
Run: .venv/bin/python bench/speech.py [--runs 3] [--audio-features every_layer | --compare-checkpoint PATH | --compare-float32
                                      | --compare-text-embeddings | --compare-turn-look-ahead]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from emostream.contracts import SegmentHeaders
from emostream.media.decode import SAMPLE_RATE, DecodedSegment, decode_segment
from emostream.media.records import file_segments, segment_headers
from emostream.media.segmenter import segment_file
from emostream.perception.encode import UtteranceEncoder, scoring_voice
from emostream.perception.segment import SegmentPerceiver
from emostream.perception.session import StreamSession
from emostream.perception.utterance import UtteranceBundle
from emostream.perception.voice.asr import Transcriber
from emostream.perception.voice.prosody import prosody_frames
from emostream.perception.voice.speakers import OnlineDiarizer, VoiceEmbedder
from emostream.perception.voice.turn import SmartTurn
from emostream.perception.voice.vad import StreamingVad, UtteranceCutter
from emostream.perception.voice.whisper_layers import SAMPLES_PER_ENCODER_FRAME, Precision, WhisperLayers
from emostream.settings import Settings, VoiceSettings, load_settings
from emostream.spine import Spine

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
LIBRIVOX = "speech-librivox"
RAVDESS = "ravdess-speech-16k"
PAUSE_SECONDS = 1.0  # background noise between clips
TARGET_RTF = 0.05  # the speech path's budget (issue 19): <= 0.05x real time per stream on one core
WHISPER_WINDOW_SECONDS = 30  # Whisper's own padded input
STAGES = ("decode", "vad", "prosody", "diarisation", "asr+audio", "text", "stitching")


# -- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    label: str
    path: Path  # 16 kHz mono WAV
    seconds: float
    about: str


def read_mono(path: Path) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        sys.exit(f"{path}: {rate} Hz, expected {SAMPLE_RATE}")
    return audio.mean(axis=1)


def noise_floor_db(audio: np.ndarray) -> float:
    """The recording's own background level: its 10th-percentile 10 ms frame, dBFS."""
    hop = SAMPLE_RATE // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    return float(np.percentile(20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9), 10))


def room_noise(seconds: float, seed: int, level_db: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 10 ** (level_db / 20), int(seconds * SAMPLE_RATE)).astype(np.float32)


def join(clips: list[np.ndarray]) -> np.ndarray:
    """The clips one after another, with PAUSE_SECONDS of noise at their quietest background level around each."""
    level = min(noise_floor_db(clip) for clip in clips)
    parts = [room_noise(PAUSE_SECONDS, 0, level)]
    for i, clip in enumerate(clips):
        parts += [clip, room_noise(PAUSE_SECONDS, i + 1, level)]
    return np.concatenate(parts)


def build_inputs(data: Path, tmp: Path, turns: int) -> list[Input]:
    librivox = sorted((data / LIBRIVOX).glob("*.wav"))
    actors = [sorted((data / RAVDESS / f"Actor_{n:02d}").glob("*.flac")) for n in (1, 2)]
    if len(librivox) < 5 or any(len(files) < 5 + turns for files in actors):
        sys.exit(f"needs the real speech recordings: {data / LIBRIVOX}/*.wav (5 clips) and "
                 f"{data / RAVDESS}/Actor_01, Actor_02/*.flac (the shared data folder beside the project)")
    inputs = []
    for label, clips, about in (
        ("librivox", [read_mono(p) for p in librivox], f"{len(librivox)} LibriVox clips, one reader"),
        ("meeting", [read_mono(actors[turn % 2][5 + turn // 2]) for turn in range(2 * turns)],
         f"{2 * turns} RAVDESS clips, Actor_01 and Actor_02 taking turns, mono"),
    ):
        audio = join(clips)
        path = tmp / f"{label}.wav"
        sf.write(str(path), np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
        inputs.append(Input(label, path, len(audio) / SAMPLE_RATE, f"{about}, {PAUSE_SECONDS:g} s noise pauses"))
    return inputs


# -- timing ---------------------------------------------------------------------------------------


class Stopwatch:
    """CPU seconds (the whole process, every thread) and wall seconds spent inside `with`; adds up over uses."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0

    def __enter__(self) -> Stopwatch:
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu += time.process_time() - self._cpu
        self.wall += time.perf_counter() - self._wall


def timed(watch: Stopwatch, function: Callable) -> Callable:  # type: ignore[type-arg]
    """`function`, with the time spent inside it added to `watch`."""

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        with watch:
            return function(*args, **kwargs)

    return wrapper


class PaddedLastLayer:
    """The audio embedding as Whisper would make it: CTranslate2 int8 on a 30 s padded window, last layer pooled."""

    def __init__(self, model_dir: Path) -> None:
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        self.model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="int8", intra_threads=1)
        self.mel = FeatureExtractor()

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        import ctranslate2

        padded = np.zeros(WHISPER_WINDOW_SECONDS * SAMPLE_RATE, np.float32)
        padded[: len(audio)] = audio[: len(padded)]
        mel = self.mel(padded, padding=0)[None, :, : WHISPER_WINDOW_SECONDS * 100]
        hidden = np.asarray(self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))))[0]
        frames = max(1, min(len(audio) // SAMPLES_PER_ENCODER_FRAME, len(hidden)))
        return np.concatenate([hidden[:frames].mean(axis=0), hidden[:frames].std(axis=0)])


EMBEDDINGS = ("last layer, CT2 30 s", "last layer, CT2 window", "every layer, torch int8", "every layer, torch fp32")
# what each kind of features (kind()) is made by
EMBEDDING_OF = {"last_layer": "last layer, CT2 window", "every_layer int8": "every layer, torch int8",
                "every_layer float32": "every layer, torch fp32"}


def kind(voice: VoiceSettings, precision: Precision) -> str:
    """The features a setup gives: last_layer, or every_layer and the every-layer encoder's precision."""
    return str(voice.audio_features) if voice.audio_features == "last_layer" else f"{voice.audio_features} {precision}"


@dataclass
class Models:
    """Loaded once; every run and every stage uses the same instances."""

    settings: Settings
    perceiver: SegmentPerceiver
    encoder: UtteranceEncoder
    voices: VoiceEmbedder
    embedders: dict[str, Callable[[np.ndarray], object]]  # the audio embedding each way (EMBEDDINGS), or none
    every_pause: bool = False  # the cutter asks Smart Turn at every pause, without its look-ahead (`cutting`)

    @classmethod
    def load(cls, settings: Settings, embedders: bool = True, precision: Precision = "int8", every_pause: bool = False) -> Models:
        """`embedders`: also the audio embedding each way (it does not depend on the settings: timed once per run).
        `precision`: of the every-layer encoder. `every_pause`: see `cutting`."""
        voice = settings.voice
        assert voice.audio_features is not None  # resolved against the model in main()
        encoder = UtteranceEncoder(voice, Transcriber(voice.asr_model_dir, threads=voice.asr_threads, beam_size=voice.asr_beam_size,
                                                      language=voice.asr_language, audio_features=voice.audio_features,
                                                      layers_precision=precision, feature_model_dir=voice.feature_model_dir))
        model_dir, layers_dir = encoder.transcriber.model_dir, encoder.transcriber.feature_model_dir
        ways: dict[str, Callable[[np.ndarray], object]] = {}
        if embedders:
            last_layer = Transcriber(model_dir, audio_features="last_layer")
            ways = dict(zip(EMBEDDINGS, (PaddedLastLayer(model_dir), lambda audio: last_layer(audio, transcribe=False),
                                         WhisperLayers(layers_dir, "int8"), WhisperLayers(layers_dir, "float32")), strict=True))
        return cls(settings, SegmentPerceiver(settings), encoder, VoiceEmbedder(), ways, every_pause)


@contextmanager
def cutting(models: Models) -> Iterator[None]:
    """Stream sessions cut as the setup asks: with `every_pause`, the cutter as before its look-ahead (Smart Turn asked
    at every pause that reaches turn_pause, also where the merge gap closes the utterance in the same push anyway)."""
    if not models.every_pause:
        yield
        return
    look_ahead = UtteranceCutter._merge_gap_ahead
    UtteranceCutter._merge_gap_ahead = lambda self, starts, levels: False  # type: ignore[method-assign]
    try:
        yield
    finally:
        UtteranceCutter._merge_gap_ahead = look_ahead  # type: ignore[method-assign]


@dataclass
class Work:
    """One input, prepared: its segments cut and decoded, and the utterances the whole path gave."""

    input: Input
    stream_id: str
    payloads: list[tuple[SegmentHeaders, bytes]] = field(default_factory=list)  # (headers, payload) of each media segment
    decoded: list[DecodedSegment] = field(default_factory=list)  # ending with the end marker
    pushes: list[list[UtteranceBundle]] = field(default_factory=list)  # the bundles each push returned (non-empty ones)
    turn_calls: int = 0  # Smart Turn calls of one whole-path run

    @property
    def bundles(self) -> list[UtteranceBundle]:
        return [b for push in self.pushes for b in push]


def whole_path(models: Models, work: Work) -> tuple[Stopwatch, list[list[UtteranceBundle]]]:
    """file_segments() through Spine.utterances with the loaded models and fresh stream state."""
    perception = Spine(models.settings, models.perceiver, models.encoder, voices=models.voices)
    watch, pushes = Stopwatch(), []
    with watch, cutting(models):
        for segment in file_segments(work.input.path, work.stream_id, models.settings.ingest):
            bundles = perception.utterances(segment)
            if bundles:
                pushes.append(bundles)
    return watch, pushes


def prepare(models: Models, item: Input) -> Work:
    work = Work(item, f"bench-{item.label}")
    ingest = models.settings.ingest
    work.payloads = [(segment_headers(work.stream_id, s, None), s.payload)
                     for s in segment_file(item.path, ingest.segment_seconds, ingest.max_segment_seconds)]
    work.decoded = list(file_segments(item.path, work.stream_id, models.settings.ingest))
    calls = [0]
    ask = SmartTurn.__call__

    def counted(model: SmartTurn, audio: np.ndarray) -> float:
        calls[0] += 1
        return ask(model, audio)

    SmartTurn.__call__ = counted  # type: ignore[method-assign]
    try:
        _, work.pushes = whole_path(models, work)  # warm-up (first calls compile and allocate); gives the utterances
    finally:
        SmartTurn.__call__ = ask  # type: ignore[method-assign]
    work.turn_calls = calls[0]
    return work


def run_stages(models: Models, work: Work) -> dict[str, Stopwatch]:
    """One timed pass of every stage over the prepared input."""
    settings, voice, ingest = models.settings, models.settings.voice, models.settings.ingest
    watches = {stage: Stopwatch() for stage in STAGES}
    media = [s for s in work.decoded if not s.is_end_marker]

    with watches["decode"]:
        for headers, payload in work.payloads:
            decode_segment(headers, payload, ingest.decode_threads, ingest.max_decoded_megabytes, ingest.max_frame_side)

    vad = StreamingVad()
    with watches["vad"]:
        for segment in media:
            for index, audio in enumerate(segment.audio):
                vad.push(index, audio, segment.audio_start)

    with watches["prosody"]:
        for segment in media:
            for audio in segment.audio:
                prosody_frames(audio, segment.audio_start)

    diarizer = OnlineDiarizer(voice.diarize_threshold, voice.max_speakers)
    with watches["diarisation"]:
        for bundle in work.bundles:
            diarizer.assign(models.voices(bundle.audio))

    transcriber, sentences = models.encoder.transcriber, models.encoder.sentences
    with watches["asr+audio"]:
        for bundle in work.bundles:
            transcriber(bundle.audio, transcribe=voice.asr)

    with watches["text"]:
        for push in work.pushes:
            texts = [b.transcript for b in push if b.transcript]
            if sentences is not None and texts:
                sentences(texts)

    # Stitching: the session's own work. Its VAD and voice models are wrapped to take their time out.
    perceived = [models.perceiver(segment) for segment in work.decoded]
    inner, session_total = Stopwatch(), Stopwatch()
    session = StreamSession(work.stream_id, settings, voices=timed(inner, models.voices))  # type: ignore[arg-type]
    session._vad.push = timed(inner, session._vad.push)  # type: ignore[method-assign]
    session._diarizer.assign = timed(inner, session._diarizer.assign)  # type: ignore[method-assign]
    with session_total, cutting(models):
        for segment in perceived:
            session.push(segment)
    stitching = watches["stitching"]
    stitching.cpu, stitching.wall = session_total.cpu - inner.cpu, session_total.wall - inner.wall

    for name, embed in models.embedders.items():
        watches[name] = Stopwatch()
        with watches[name]:
            for bundle in work.bundles:
                embed(bundle.audio)
    return watches


def one_thread() -> str:
    """Limit every loaded BLAS and OpenMP pool to one thread; returns what they had before (e.g. numpy's OpenBLAS)."""
    before = ", ".join(sorted({f"{p['prefix']} {p['num_threads']}" for p in threadpool_info()}))
    threadpool_limits(1)
    return before


# -- output ---------------------------------------------------------------------------------------


@dataclass
class Result:
    work: Work
    cpu: dict[str, float]  # median CPU seconds per stage, plus "other" and "whole", and per EMBEDDINGS way
    whole_wall: float


def measure(pairs: list[tuple[Models, Work]], runs: int) -> list[Result]:
    """`runs` timed passes of each setup's models over its prepared input, the setups taking turns within each round:
    a shared machine's load drifts within minutes, and timing one setup after the other put the drift into the
    before/after ratio (one such run had int8 slower than float32 overall while its encoder alone was twice as fast)."""
    stage_runs: list[list[dict[str, Stopwatch]]] = [[] for _ in pairs]
    whole_runs: list[list[Stopwatch]] = [[] for _ in pairs]
    for run in range(runs):
        for k, (models, work) in enumerate(pairs):
            whole, _ = whole_path(models, work)
            whole_runs[k].append(whole)
            stage_runs[k].append(run_stages(models, work))
            print(f"  {work.input.label} setup {k + 1} run {run + 1}: whole path {whole.cpu:.2f} s CPU, {whole.wall:.2f} s wall; "
                  "stages (s CPU) " + " ".join(f"{s}={stage_runs[k][-1][s].cpu:.3f}" for s in STAGES), file=sys.stderr, flush=True)
    results = []
    for (_, work), stages, wholes in zip(pairs, stage_runs, whole_runs, strict=True):
        cpu = {s: statistics.median(r[s].cpu for r in stages) for s in stages[0]}  # STAGES and the embeddings timed
        cpu["whole"] = statistics.median(w.cpu for w in wholes)
        cpu["other"] = cpu["whole"] - sum(cpu[s] for s in STAGES)
        results.append(Result(work, cpu, statistics.median(w.wall for w in wholes)))
    return results


ROWS = (*STAGES, "other", "whole")
ROW_NAMES = {"asr+audio": "ASR + audio emb.", "text": "text embedding", "whole": "whole path"}


def report(results: list[Result]) -> None:
    print("CPU ms per second of audio (RTF = CPU s / audio s), median over runs")
    header = f"{'stage':<18}" + "".join(f"{r.work.input.label + ' ms/s':>17}{'RTF':>8}{'share':>7}" for r in results)
    print(header)
    print("-" * len(header))
    for row in ROWS:
        line = f"{ROW_NAMES.get(row, row):<18}"
        for r in results:
            rtf = r.cpu[row] / r.work.input.seconds
            line += f"{rtf * 1000:>17.2f}{rtf:>8.4f}{r.cpu[row] / r.cpu['whole']:>7.0%}"
        print(line)
    line = f"{'whole path (wall)':<18}"
    for r in results:
        rtf = r.whole_wall / r.work.input.seconds
        line += f"{rtf * 1000:>17.2f}{rtf:>8.4f}{'':>7}"
    print(line)
    print()
    for r in results:
        rtf = r.cpu["whole"] / r.work.input.seconds
        verdict = "meets" if rtf <= TARGET_RTF else "MISSES"
        dominant = max(STAGES, key=lambda s: r.cpu[s])
        bundles = r.work.bundles
        print(f"{r.work.input.label}: whole path {rtf:.4f}x real time on one core ({r.whole_wall / r.work.input.seconds:.4f}x on the "
              f"wall clock), {verdict} the target of <= {TARGET_RTF:g}x per stream; ~{1 / rtf:.0f} such streams per core; "
              f"largest stage: {ROW_NAMES.get(dominant, dominant)} ({r.cpu[dominant] / r.cpu['whole']:.0%}, "
              f"{r.cpu[dominant] * 1000 / max(len(bundles), 1):.0f} ms per utterance)")
    if EMBEDDINGS[0] not in results[0].cpu:
        return
    print()
    print("audio embedding alone, per utterance: CPU ms and RTF (CPU s / s of utterance audio), median over runs")
    header = f"{'way':<24}" + "".join(f"{r.work.input.label + ' ms/utt.':>20}{'RTF':>8}" for r in results)
    print(header)
    print("-" * len(header))
    for name in EMBEDDINGS:
        line = f"{name:<24}"
        for r in results:
            bundles = r.work.bundles
            line += f"{r.cpu[name] * 1000 / max(len(bundles), 1):>20.1f}{r.cpu[name] / max(sum(b.duration for b in bundles), 1e-9):>8.4f}"
        print(line)


def per_utterance_ms(result: Result, row: str) -> float:
    return result.cpu[row] * 1000 / max(len(result.work.bundles), 1)


def setup_name(voice: VoiceSettings, precision: Precision, every_pause: bool = False) -> str:
    """kind(), whether the setup embeds the transcripts, and how it asks Smart Turn."""
    turn = f", Smart Turn {'at every pause' if every_pause else 'unless the merge gap closes in the frames at hand'}"
    return (f"{kind(voice, precision)} features, {'with' if voice.text_embeddings and voice.asr else 'no'} text embeddings"
            + (turn if voice.turn_model == "smart_turn" else ""))


def compare(after: tuple[str, str, list[Result]], before: tuple[str, str, list[Result]]) -> None:
    """Today's default against the compared setup (another checkpoint's features, float32, text embeddings), input by
    input, as after/before ratios. Each half: (setup_name, kind, results)."""
    (after_name, after_kind, after_results), (before_name, before_kind, before_results) = after, before
    print()
    print(f"before/after, same process and inputs, CPU time: before = {before_name}, after = {after_name}")
    header = f"{'input':<10}{'measure':<34}{'before':>10}{'after':>10}{'after/before':>14}"
    print(header)
    print("-" * len(header))
    for a, b in zip(after_results, before_results, strict=True):
        rows = (
            ("whole path, CPU s per audio s", b.cpu["whole"] / b.work.input.seconds, a.cpu["whole"] / a.work.input.seconds, ".4f"),
            ("whole path, wall s per audio s", b.whole_wall / b.work.input.seconds, a.whole_wall / a.work.input.seconds, ".4f"),
            ("ASR + audio emb., CPU ms/utt.", per_utterance_ms(b, "asr+audio"), per_utterance_ms(a, "asr+audio"), ".1f"),
            ("text embedding, CPU ms/utt.", per_utterance_ms(b, "text"), per_utterance_ms(a, "text"), ".1f"),
            ("audio emb. alone, CPU ms/utt.", per_utterance_ms(a, EMBEDDING_OF[before_kind]),  # timed once, in the first run
             per_utterance_ms(a, EMBEDDING_OF[after_kind]), ".1f"),
        )
        for name, was, now, form in rows:
            ratio = f"{now / was:>14.2f}" if float(f"{was:{form}}") > 0 else f"{'-':>14}"  # not of two timer noises
            print(f"{a.work.input.label:<10}{name:<34}{was:>10{form}}{now:>10{form}}{ratio}")
    for a, b in zip(after_results, before_results, strict=True):
        same = [(u.utterance_id, u.start, u.end) for u in a.work.bundles] == [(u.utterance_id, u.start, u.end) for u in b.work.bundles]
        print(f"{a.work.input.label}: utterances (ids and edges) {'the same' if same else 'DIFFER'} before and after")
    for name, _, results in (before, after):
        worst = max(r.cpu["whole"] / r.work.input.seconds for r in results)
        print(f"{name}: worst input {worst:.4f}x real time per stream on one core, "
              f"{'meets' if worst <= TARGET_RTF else 'MISSES'} the target of <= {TARGET_RTF:g}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed passes per input; the median is printed")
    parser.add_argument("--turns", type=int, default=5, help="clips per actor in the two-speaker meeting")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the shared data folder (default: {DATA})")
    parser.add_argument("--audio-features", choices=("last_layer", "every_layer"),
                        help="voice.audio_features of the whole path (default: what the default model reads)")
    parser.add_argument("--compare-float32", action="store_true",
                        help="also time the path with the every-layer encoder in float32 (before its int8 Linear layers) "
                             "and print after/before ratios")
    parser.add_argument("--compare-turn-look-ahead", action="store_true",
                        help="also time the path with the cutter asking Smart Turn at every pause (before its look-ahead) "
                             "and print after/before ratios")
    parser.add_argument("--compare-text-embeddings", action="store_true",
                        help="also time the path with a sentence embedding of every transcript (before they followed the "
                             "served model) and print after/before ratios")
    parser.add_argument("--compare-checkpoint", type=Path, metavar="PATH",
                        help="also time the path with the Whisper features of the emotion model at PATH (e.g. the previous "
                             "default, exported from git into a temporary folder) and print after/before ratios")
    args = parser.parse_args()
    if args.runs < 1 or args.turns < 1:
        parser.error("--runs and --turns must be at least 1")
    if args.compare_checkpoint and args.audio_features:
        parser.error("--compare-checkpoint compares two models' features: leave --audio-features unset")
    if args.compare_float32 and (args.compare_checkpoint or args.audio_features == "last_layer"):
        parser.error("--compare-float32 compares the every-layer encoder's precisions: not with --compare-checkpoint "
                     "or --audio-features last_layer")
    if args.compare_text_embeddings and (args.compare_checkpoint or args.compare_float32 or args.audio_features):
        parser.error("--compare-text-embeddings compares the default path with and without text embeddings: not with "
                     "another comparison or --audio-features (which keeps the settings' text embeddings)")
    if sum(map(bool, (args.compare_checkpoint, args.compare_float32, args.compare_text_embeddings,
                      args.compare_turn_look_ahead))) > 1:
        parser.error("compare one thing at a time: --compare-checkpoint, --compare-float32, --compare-text-embeddings "
                     "or --compare-turn-look-ahead")
    if not args.data.is_dir():
        sys.exit(f"needs the real speech recordings in {args.data} (the shared data folder beside the project)")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    # ONNX Runtime (VAD) and CTranslate2 (Whisper) run on one thread already
    given = load_settings(voice={"audio_features": args.audio_features} if args.audio_features else {})
    settings = given  # a given kind of features is timed whatever the model reads, with the settings' text embeddings
    if not args.audio_features:  # else the default model's features and text embeddings, as the Spine encodes for it
        settings = given.model_copy(update={"voice": scoring_voice(given)})
    # (settings, every-layer encoder precision, what a "before" half is, Smart Turn at every pause)
    setups: list[tuple[Settings, Precision, str, bool]] = [(settings, "int8", "", False)]
    if args.compare_checkpoint:  # the voice that model would be served with (from the settings as given, not resolved)
        served = given.model_copy(update={"serve": given.serve.model_copy(update={"model": args.compare_checkpoint})})
        before = settings.model_copy(update={"voice": scoring_voice(served)})
        setups.append((before, "int8", f"the Whisper features of {args.compare_checkpoint}", False))
    if args.compare_float32:
        setups.append((settings, "float32", "the every-layer encoder in float32", False))
    if args.compare_text_embeddings:
        every_transcript = settings.voice.model_copy(update={"text_embeddings": True})
        setups.append((settings.model_copy(update={"voice": every_transcript}), "int8", "a text embedding of every transcript",
                       False))
    if args.compare_turn_look_ahead:
        setups.append((settings, "int8", "Smart Turn asked at every pause (no look-ahead)", True))
    done: list[tuple[str, str, list[Result]]] = []
    with tempfile.TemporaryDirectory(prefix="emostream-bench-") as tmp:
        inputs = build_inputs(args.data, Path(tmp), args.turns)
        loaded = []
        for index, (setup, precision, _, every_pause) in enumerate(setups):
            print("loading models (untimed)…", file=sys.stderr, flush=True)
            loaded.append(Models.load(setup, embedders=index == 0, precision=precision, every_pause=every_pause))
        pools = one_thread()
        works = []  # per setup, per input
        for models in loaded:
            works.append([])
            for item in inputs:
                print(f"preparing {item.label} (warm-up run)…", file=sys.stderr, flush=True)
                works[-1].append(prepare(models, item))
        one_thread()  # libraries first loaded by the warm-ups, if any
        started, load_before = time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0]
        measured = [measure([(models, works[k][i]) for k, models in enumerate(loaded)], args.runs) for i in range(len(inputs))]
        ended, load_after = time.strftime("%H:%M %Z"), os.getloadavg()[0]
        for k, (setup, precision, before, every_pause) in enumerate(setups):
            voice = setup.voice
            if before:
                print(f"\n## before: {before}")
            turns = ", runs taking turns with the other setup's" if len(setups) > 1 else ""
            print(f"# speech bench: {platform.processor() or platform.machine()}, 1 thread, median of {args.runs} runs{turns}, "
                  f"{started}–{ended}, load average {load_before:.1f} → {load_after:.1f}; "
                  f"model loading excluded (loaded and warmed up first); {setup.ingest.segment_seconds:g} s segments, "
                  f"ASR {voice.asr_model_dir or 'Whisper tiny.en (bundled)'} beam {voice.asr_beam_size}, "
                  f"{f'features from {voice.feature_model_dir}, ' if voice.feature_model_dir else ''}diarize={voice.diarize}, "
                  f"{setup_name(voice, precision, every_pause)}")
            print(f"# thread pools limited to 1 thread (by default: {pools})")
            for item, work in zip(inputs, works[k], strict=True):
                bundles = work.bundles
                speakers = sorted({b.speaker_id for b in bundles})
                spoken = sum(b.duration for b in bundles)
                print(f"{item.label:<9}{item.seconds:.1f} s of audio ({item.about}): {len(bundles)} utterances ({spoken:.1f} s), "
                      f"{len(work.payloads)} segments, speakers {', '.join(speakers) or '-'}, {work.turn_calls} Smart Turn calls")
            results = [per_input[k] for per_input in measured]
            print()
            report(results)
            done.append((setup_name(voice, precision, every_pause), kind(voice, precision), results))
    if len(done) == 2:
        compare(done[0], done[1])


if __name__ == "__main__":
    main()
