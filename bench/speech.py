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
  every layer, torch       WhisperLayers: transformers' encoder in fp32 on the utterance + 0.5 s, every layer pooled
as CPU ms per utterance and RTF (CPU s / s of utterance audio), one thread, median over runs.

Before/after (issue 19): --compare-checkpoint PATH runs the whole path and its stages a second time, in the same
process, with the Whisper features the emotion model at PATH reads (e.g. the previous default, exported from git into
a temporary folder: last_layer), and prints its RTF, ASR + audio embedding and audio embedding per utterance against
today's default's (every_layer), as after/before ratios. Only the features differ between the two: the speech path does
not run the emotion model (bench/model.py times its scoring).
Timings are printed, never asserted.
Run: .venv/bin/python bench/speech.py [--runs 3] [--audio-features every_layer | --compare-checkpoint PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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
from emostream.perception.encode import UtteranceEncoder, voice_for_model
from emostream.perception.segment import SegmentPerceiver
from emostream.perception.session import StreamSession
from emostream.perception.utterance import UtteranceBundle
from emostream.perception.voice.asr import Transcriber
from emostream.perception.voice.prosody import prosody_frames
from emostream.perception.voice.speakers import OnlineDiarizer, VoiceEmbedder
from emostream.perception.voice.vad import StreamingVad
from emostream.perception.voice.whisper_layers import SAMPLES_PER_ENCODER_FRAME, WhisperLayers
from emostream.settings import Settings, load_settings
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


EMBEDDINGS = ("last layer, CT2 30 s", "last layer, CT2 window", "every layer, torch")
EMBEDDING_OF = {"last_layer": "last layer, CT2 window", "every_layer": "every layer, torch"}  # what each kind serves


@dataclass
class Models:
    """Loaded once; every run and every stage uses the same instances."""

    settings: Settings
    perceiver: SegmentPerceiver
    encoder: UtteranceEncoder
    voices: VoiceEmbedder
    embedders: dict[str, Callable[[np.ndarray], object]]  # the audio embedding each way (EMBEDDINGS), or none

    @classmethod
    def load(cls, settings: Settings, embedders: bool = True) -> Models:
        """`embedders`: also the audio embedding each way (it does not depend on the settings: timed once per run)."""
        encoder = UtteranceEncoder(settings.voice)
        model_dir = encoder.transcriber.model_dir
        ways: dict[str, Callable[[np.ndarray], object]] = {}
        if embedders:
            last_layer = Transcriber(model_dir, audio_features="last_layer")
            ways = dict(zip(EMBEDDINGS, (PaddedLastLayer(model_dir), lambda audio: last_layer(audio, transcribe=False),
                                         WhisperLayers(model_dir)), strict=True))
        return cls(settings, SegmentPerceiver(settings), encoder, VoiceEmbedder(), ways)


@dataclass
class Work:
    """One input, prepared: its segments cut and decoded, and the utterances the whole path gave."""

    input: Input
    stream_id: str
    payloads: list[tuple[SegmentHeaders, bytes]] = field(default_factory=list)  # (headers, payload) of each media segment
    decoded: list[DecodedSegment] = field(default_factory=list)  # ending with the end marker
    pushes: list[list[UtteranceBundle]] = field(default_factory=list)  # the bundles each push returned (non-empty ones)

    @property
    def bundles(self) -> list[UtteranceBundle]:
        return [b for push in self.pushes for b in push]


def whole_path(models: Models, work: Work) -> tuple[Stopwatch, list[list[UtteranceBundle]]]:
    """file_segments() through Spine.utterances with the loaded models and fresh stream state."""
    perception = Spine(models.settings, models.perceiver, models.encoder, voices=models.voices)
    watch, pushes = Stopwatch(), []
    with watch:
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
    _, work.pushes = whole_path(models, work)  # warm-up (first calls compile and allocate); gives the utterances
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
    with session_total:
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


def measure(models: Models, work: Work, runs: int) -> Result:
    stage_runs, whole_runs = [], []
    for run in range(runs):
        whole, _ = whole_path(models, work)
        whole_runs.append(whole)
        stage_runs.append(run_stages(models, work))
        print(f"  {work.input.label} run {run + 1}: whole path {whole.cpu:.2f} s CPU, {whole.wall:.2f} s wall; stages (s CPU) "
              + " ".join(f"{s}={stage_runs[-1][s].cpu:.3f}" for s in STAGES), file=sys.stderr, flush=True)
    cpu = {s: statistics.median(r[s].cpu for r in stage_runs) for s in stage_runs[0]}  # STAGES and the embeddings timed
    cpu["whole"] = statistics.median(w.cpu for w in whole_runs)
    cpu["other"] = cpu["whole"] - sum(cpu[s] for s in STAGES)
    return Result(work, cpu, statistics.median(w.wall for w in whole_runs))


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


def compare(after: tuple[str, list[Result]], before: tuple[str, list[Result]]) -> None:
    """Today's default against the compared checkpoint's features, input by input, as after/before ratios."""
    (after_kind, after_results), (before_kind, before_results) = after, before
    print()
    print(f"before/after, same process and inputs, CPU time: before = {before_kind} features, after = {after_kind}")
    header = f"{'input':<10}{'measure':<34}{'before':>10}{'after':>10}{'after/before':>14}"
    print(header)
    print("-" * len(header))
    for a, b in zip(after_results, before_results, strict=True):
        rows = (
            ("whole path, CPU s per audio s", b.cpu["whole"] / b.work.input.seconds, a.cpu["whole"] / a.work.input.seconds, ".4f"),
            ("whole path, wall s per audio s", b.whole_wall / b.work.input.seconds, a.whole_wall / a.work.input.seconds, ".4f"),
            ("ASR + audio emb., CPU ms/utt.", per_utterance_ms(b, "asr+audio"), per_utterance_ms(a, "asr+audio"), ".1f"),
            ("audio emb. alone, CPU ms/utt.", per_utterance_ms(a, EMBEDDING_OF[before_kind]),  # timed once, in the first run
             per_utterance_ms(a, EMBEDDING_OF[after_kind]), ".1f"),
        )
        for name, was, now, form in rows:
            print(f"{a.work.input.label:<10}{name:<34}{was:>10{form}}{now:>10{form}}{now / was:>14.2f}")
    for kind, results in (before, after):
        worst = max(r.cpu["whole"] / r.work.input.seconds for r in results)
        print(f"{kind}: worst input {worst:.4f}x real time per stream on one core, "
              f"{'meets' if worst <= TARGET_RTF else 'MISSES'} the target of <= {TARGET_RTF:g}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed passes per input; the median is printed")
    parser.add_argument("--turns", type=int, default=5, help="clips per actor in the two-speaker meeting")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the shared data folder (default: {DATA})")
    parser.add_argument("--audio-features", choices=("last_layer", "every_layer"),
                        help="voice.audio_features of the whole path (default: what the default model reads)")
    parser.add_argument("--compare-checkpoint", type=Path, metavar="PATH",
                        help="also time the path with the Whisper features of the emotion model at PATH (e.g. the previous "
                             "default, exported from git into a temporary folder) and print after/before ratios")
    args = parser.parse_args()
    if args.runs < 1 or args.turns < 1:
        parser.error("--runs and --turns must be at least 1")
    if args.compare_checkpoint and args.audio_features:
        parser.error("--compare-checkpoint compares two models' features: leave --audio-features unset")
    if not args.data.is_dir():
        sys.exit(f"needs the real speech recordings in {args.data} (the shared data folder beside the project)")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    # ONNX Runtime (VAD) and CTranslate2 (Whisper) run on one thread already
    settings = load_settings(voice={"audio_features": args.audio_features} if args.audio_features else {})
    setups = [settings]
    if not args.audio_features:  # the default model's features (a given kind is timed whatever the model reads)
        setups = [settings.model_copy(update={"voice": voice_for_model(settings.voice, model)})
                  for model in [settings.serve.model, *([args.compare_checkpoint] if args.compare_checkpoint else [])]]
    done: list[tuple[str, list[Result]]] = []
    with tempfile.TemporaryDirectory(prefix="emostream-bench-") as tmp:
        inputs = build_inputs(args.data, Path(tmp), args.turns)
        for index, setup in enumerate(setups):
            print("loading models (untimed)…", file=sys.stderr, flush=True)
            models = Models.load(setup, embedders=index == 0)
            pools = one_thread()
            voice = setup.voice
            if index:
                print(f"\n## before: the Whisper features of {args.compare_checkpoint}")
            print(f"# speech bench: {platform.processor() or platform.machine()}, 1 thread, median of {args.runs} runs, "
                  f"{time.strftime('%Y-%m-%d %H:%M %Z')}, load average {os.getloadavg()[0]:.1f}; "
                  f"model loading excluded (loaded and warmed up first); {setup.ingest.segment_seconds:g} s segments, "
                  f"ASR {voice.asr_model_dir or 'Whisper tiny.en (bundled)'} beam {voice.asr_beam_size}, diarize={voice.diarize}, "
                  f"audio features {voice.audio_features}")
            print(f"# thread pools limited to 1 thread (by default: {pools})")
            results = []
            for item in inputs:
                print(f"preparing {item.label} (warm-up run)…", file=sys.stderr, flush=True)
                work = prepare(models, item)
                one_thread()  # libraries first loaded by the warm-up, if any
                bundles = work.bundles
                speakers = sorted({b.speaker_id for b in bundles})
                spoken = sum(b.duration for b in bundles)
                print(f"{item.label:<9}{item.seconds:.1f} s of audio ({item.about}): {len(bundles)} utterances ({spoken:.1f} s), "
                      f"{len(work.payloads)} segments, speakers {', '.join(speakers) or '-'}")
                results.append(measure(models, work, args.runs))
            print()
            report(results)
            done.append((str(voice.audio_features), results))
            del models
    if len(done) == 2:
        compare(done[0], done[1])


if __name__ == "__main__":
    main()
