"""End of turn: how much sooner utterances close with Smart Turn, how their boundaries change, what the model costs.

Inputs, built from the real recordings in ../shared/data:
  librivox  the five LibriVox clips (one male reader, one sentence each) with 1 s of their own background
            noise before, between and after them, mono
  call      the two-channel call of tests/test_speech.py: RAVDESS Actor_01 (agent) and Actor_02 (customer)
            taking eight turns with 0.7-1.0 s pauses, the fifth turn overlapping the fourth

Each input goes through `StreamSession` (Silero VAD, the utterance cutter, edges tightened; no Whisper) once
with `voice.turn_model: none` (the merge gap alone closes an utterance) and once with `smart_turn` for each
`--turn-pauses` value (a pause of that length is put to Smart Turn; the merge gap stays the fallback). Segments are fed in order,
either one VAD frame (32 ms) at a time, so an utterance comes out at the very frame that closes it, or in
segments of `--segment-seconds` as a live stream publishes them, so it also waits for the rest of the segment
holding that frame.

Per utterance, the closing delay is the media time at the end of the segment whose push closed it minus the
utterance's end (its last clearly spoken 10 ms, as its event reports it): the part of the latency spent
waiting for the pause, before any model runs. The live job adds its own processing on top.
Boundaries: utterances, their mean length, and how many of them have the same edges (within 1 ms) both ways.
Drafted: utterances the live job could start Whisper on early (`live.prepare_drafts`): handed out by
`StreamSession.drafts` while their pause ran, a segment or more before it closed them with that audio.
Model cost: CPU ms per Smart Turn call (log-mel and ONNX Runtime, one thread, median of --runs calls on
8 s windows of real speech), and the calls each input needed (one per pause that lasts turn_pause_seconds).
Timings are printed, never asserted.
Run: .venv/bin/python bench/turn.py [--segment-seconds 0.5] [--runs 30] [--turn-pauses 0.1 0.2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from emostream.media.decode import SAMPLE_RATE  # noqa: E402
from emostream.perception.segment import PerceivedSegment  # noqa: E402
from emostream.perception.session import StreamSession  # noqa: E402
from emostream.perception.voice.prosody import prosody_frames  # noqa: E402
from emostream.perception.voice.speakers import VoiceEmbedder  # noqa: E402
from emostream.perception.voice.turn import SmartTurn  # noqa: E402
from emostream.perception.voice.vad import FRAME_SAMPLES  # noqa: E402
from emostream.settings import load_settings  # noqa: E402
from tests.speech_helpers import build_call, noise_floor_db, read_mono, room_noise  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
CALL_PAUSES = [0.8, 0.9, 0.7, -1.2, 1.0, 0.8, 0.9]  # as tests/test_speech.py's call
CALL_ROLES = ("agent", "customer")


@dataclass(frozen=True)
class Stream:
    label: str
    audio: np.ndarray  # shape = (n_samples, channels) float32 at SAMPLE_RATE
    roles: tuple[str, ...]


def inputs(data: Path) -> list[Stream]:
    librivox = sorted((data / "speech-librivox").glob("*.wav"))
    actors = [sorted((data / "ravdess-speech-16k" / f"Actor_{n:02d}").glob("*.flac")) for n in (1, 2)]
    if len(librivox) < 5 or any(len(files) < 9 for files in actors):
        sys.exit(f"needs the real speech recordings: {data}/speech-librivox/*.wav and "
                 f"{data}/ravdess-speech-16k/Actor_01, Actor_02/*.flac (the shared data folder beside the project)")
    clips = [read_mono(p) for p in librivox]
    level = min(noise_floor_db(c) for c in clips)
    parts = [room_noise(1.0, 0, level)]
    for i, clip in enumerate(clips):
        parts += [clip, room_noise(1.0, i + 1, level)]
    reading = np.concatenate(parts)
    turns = [(speaker, read_mono(actors[speaker][5 + turn // 2])) for turn, speaker in enumerate([0, 1] * 4)]
    call, _ = build_call(turns, CALL_PAUSES)
    return [Stream("librivox", reading[:, None], ()), Stream("call", call.astype(np.float32), CALL_ROLES)]


class Calls:
    """Counts SmartTurn calls and the CPU seconds inside them (wraps the class's __call__)."""

    def __init__(self) -> None:
        self.count, self.cpu = 0, 0.0
        original: Callable[[SmartTurn, np.ndarray], float] = SmartTurn.__call__

        def counted(model: SmartTurn, audio: np.ndarray) -> float:
            started = time.process_time()
            try:
                return original(model, audio)
            finally:
                self.count += 1
                self.cpu += time.process_time() - started

        SmartTurn.__call__ = counted  # type: ignore[method-assign]


@dataclass(frozen=True)
class Run:
    delays: list[float]  # per utterance: seconds from its end to the end of the segment that closed it
    spans: list[tuple[int, float, float]]  # (channel, start, end)
    calls: int
    model_cpu: float
    drafted: int  # utterances handed out as a draft (StreamSession.drafts) a segment or more before they closed


def run(stream: Stream, voice: dict[str, object], step: int, voices: VoiceEmbedder, calls: Calls) -> Run:
    session = StreamSession(stream.label, load_settings(voice={"asr": False, **voice}), voices)
    before_count, before_cpu = calls.count, calls.cpu
    delays, spans, drafts, drafted = [], [], set(), 0
    for seq, first in enumerate(range(0, len(stream.audio), step)):
        audio = stream.audio[first : first + step]
        start, end = first / SAMPLE_RATE, (first + len(audio)) / SAMPLE_RATE
        segment = PerceivedSegment(
            stream_id=stream.label, seq=seq, start=start, end=end, end_of_stream=first + step >= len(stream.audio),
            channels=stream.roles, audio=np.ascontiguousarray(audio.T), audio_start=start,
            prosody=tuple(prosody_frames(channel, start) for channel in audio.T), faces=None, thumbnails=(), timings={})
        for bundle in session.push(segment):
            if not segment.end_of_stream:  # the stream's end flushes what is open: no pause was waited for
                delays.append(end - bundle.end)
            spans.append((bundle.channel, bundle.start, bundle.end))
            drafted += bundle.audio.tobytes() in drafts
        drafts |= {draft.audio.tobytes() for draft in session.drafts()}
    return Run(delays, sorted(spans), calls.count - before_count, calls.cpu - before_cpu, drafted)


def model_cost(stream: Stream, runs: int) -> tuple[float, float]:
    """Median CPU ms of the log-mel and of a whole call, on 8 s windows of the stream's first channel."""
    model, audio = SmartTurn(), stream.audio[:, 0]
    model(audio[: 8 * SAMPLE_RATE])  # ONNX Runtime's first run plans the graph
    features, whole = [], []
    for i in range(runs):
        window = audio[: (3 + i % 6) * SAMPLE_RATE]
        started = time.process_time()
        model.features(window)
        features.append(time.process_time() - started)
        started = time.process_time()
        model(window)
        whole.append(time.process_time() - started)
    return 1000 * statistics.median(features), 1000 * statistics.median(whole)


def describe(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]
    return f"{statistics.mean(values):.3f} / {statistics.median(values):.3f} / {p95:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segment-seconds", type=float, default=0.5, help="live segment length (default 0.5)")
    parser.add_argument("--runs", type=int, default=30, help="Smart Turn calls timed for its cost (default 30)")
    parser.add_argument("--turn-pauses", type=float, nargs="+", help="voice.turn_pause_seconds values to compare "
                        "(default: the setting's default)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)
    streams = inputs(args.data)
    print("loading models (untimed)…", file=sys.stderr, flush=True)
    voices, calls = VoiceEmbedder(), Calls()
    settings = load_settings()
    print(f"# turn bench: {platform.processor() or platform.machine()}, 1 thread; merge gap {settings.voice.merge_gap_seconds:g} s, "
          f"turn pause {settings.voice.turn_pause_seconds:g} s, threshold {settings.voice.turn_threshold:g}")
    modes: dict[str, dict[str, object]] = {"none": {"turn_model": "none"}}
    for pause in args.turn_pauses or [settings.voice.turn_pause_seconds]:
        modes[f"smart {pause:g} s"] = {"turn_model": "smart_turn", "turn_pause_seconds": pause}
    steps = {"frame": FRAME_SAMPLES, f"{args.segment_seconds:g} s": int(args.segment_seconds * SAMPLE_RATE)}
    print()
    print("closing delay per utterance, seconds from its end to the segment that closed it: mean / median / p95")
    header = (f"{'input':<9} {'segments':<9} {'turn model':<13} {'utterances':>10} {'mean length s':>14} {'same edges':>11} "
              f"{'model calls':>12} {'model ms/s':>11} {'drafted':>8}   delay")
    print(header)
    print("-" * (len(header) + 24))
    for stream in streams:
        seconds = len(stream.audio) / SAMPLE_RATE
        for step_label, step in steps.items():
            results = {mode: run(stream, voice, step, voices, calls) for mode, voice in modes.items()}
            baseline = {(c, round(s, 3), round(e, 3)) for c, s, e in results["none"].spans}
            for mode, result in results.items():
                same = sum((c, round(s, 3), round(e, 3)) in baseline for c, s, e in result.spans)
                length = statistics.mean(e - s for _, s, e in result.spans) if result.spans else 0.0
                model_ms = 1000 * result.model_cpu / seconds
                print(f"{stream.label:<9} {step_label:<9} {mode:<13} {len(result.spans):>10} {length:>14.2f} "
                      f"{same:>6}/{len(result.spans):<4} {result.calls:>12} {model_ms:>11.1f} {result.drafted:>8}   "
                      f"{describe(result.delays)}")
    print("(model ms/s: CPU ms in Smart Turn per second of the stream's audio, all channels)")
    print()
    features_ms, call_ms = model_cost(streams[0], args.runs)
    print(f"Smart Turn, one call (8 s window), median of {args.runs}: {call_ms:.1f} ms CPU, of which the log-mel {features_ms:.1f} ms")


if __name__ == "__main__":
    main()
