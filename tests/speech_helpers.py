"""Speech test material: padded clips, two-speaker calls with known turns, word error rate."""

from __future__ import annotations

import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
WORD_FIXES = {"mr": "mister", "mrs": "missus"}


def read_mono(path: Path) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == RATE, f"{path}: {rate} Hz"
    return audio.mean(axis=1)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """audio : shape = (n,) or (n, channels) float in [-1, 1], written as 16-bit PCM at 16 kHz."""
    samples = np.atleast_2d(audio.T).T if audio.ndim == 2 else audio[:, None]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def room_noise(seconds: float, seed: int = 0, level_db: float = -66.0) -> np.ndarray:
    """A noise floor at `level_db` dBFS RMS, as any real recording has."""
    return np.random.default_rng(seed).normal(0, 10 ** (level_db / 20), int(seconds * RATE)).astype(np.float32)


def noise_floor_db(audio: np.ndarray) -> float:
    """The recording's own background level: its 10th-percentile 10 ms frame, dBFS."""
    hop = RATE // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    return float(np.percentile(20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9), 10))


def speech_bounds(audio: np.ndarray, below_peak_db: float = 30.0, above_floor_db: float = 12.0) -> tuple[float, float]:
    """First and last 10 ms frame that is clearly speech, in seconds: within `below_peak_db` of the
    loudest frame and `above_floor_db` over the recording's noise floor (its 10th-percentile frame)."""
    hop = RATE // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    db = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9)
    loud = np.flatnonzero(db >= max(db.max() - below_peak_db, np.percentile(db, 10) + above_floor_db))
    return loud[0] / 100, (loud[-1] + 1) / 100


def words(text: str) -> list[str]:
    tokens = re.sub(r"[^a-z' ]", " ", text.lower().replace("-", " ")).split()
    return [WORD_FIXES.get(t, t) for t in tokens]


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """(substitutions + deletions + insertions) / reference words, over all pairs."""
    errors = total = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref, hyp = words(reference), words(hypothesis)
        distance = np.arange(len(hyp) + 1)
        for i, r in enumerate(ref, 1):
            previous, distance = distance, np.empty_like(distance)
            distance[0] = i
            for j, h in enumerate(hyp, 1):
                distance[j] = min(previous[j] + 1, distance[j - 1] + 1, previous[j - 1] + (r != h))
        errors += int(distance[-1])
        total += len(ref)
    return errors / total


@dataclass(frozen=True)
class Turn:
    speaker: int  # 0 or 1
    start: float  # seconds in the call
    end: float


def build_call(clips: list[tuple[int, np.ndarray]], pauses: list[float], seed: int = 0) -> tuple[np.ndarray, list[Turn]]:
    """Place clips of two speakers one after another on two channels.

    clips : (speaker, audio) in order; pauses : seconds from the end of clip i to the start of clip i+1
    (negative overlaps them). Returns (audio, shape = (n, 2), and each clip's spoken part as a Turn).
    """
    starts, position = [], 1.0
    for i, (_, audio) in enumerate(clips):
        starts.append(position)
        position += len(audio) / RATE + (pauses[i] if i < len(pauses) else 0.0)
    total = max(s + len(a) / RATE for s, (_, a) in zip(starts, clips, strict=True)) + 1.5
    call = np.stack([room_noise(total, seed), room_noise(total, seed + 1)], axis=1)
    turns = []
    for start, (speaker, audio) in zip(starts, clips, strict=True):
        first = int(start * RATE)
        call[first : first + len(audio), speaker] += audio
        # What is clearly speech over this call's background (a clip's own faint edges may drown in it).
        spoken_start, spoken_end = speech_bounds(call[first : first + len(audio), speaker])
        turns.append(Turn(speaker, start + spoken_start, start + spoken_end))
    return call, turns


def meeting_and_call(folder: Path, face_video: Path, librivox: list[Path], shared_data: Path) -> dict[str, Path]:
    """The live tests' media: an audio+video meeting (the face video over one read sentence) and a stereo call
    (an angry customer on channel 0, then, 1.5 s later, a calm agent on channel 1)."""
    from emostream.media.synthetic import mux_files, speech_track

    meeting = mux_files(face_video, speech_track(librivox[:1], folder / "speech.wav"), folder / "meeting.mp4")
    ravdess = shared_data / "ravdess-speech-16k"
    customer, _ = sf.read(ravdess / "Actor_03" / "03-01-05-02-01-01-03.flac", dtype="float32")  # angry
    agent, rate = sf.read(ravdess / "Actor_08" / "03-01-02-01-02-01-08.flac", dtype="float32")  # calm
    gap = int(1.5 * rate)
    call = np.zeros((len(customer) + gap + len(agent), 2), np.float32)
    call[: len(customer), 0] = customer
    call[len(customer) + gap :, 1] = agent
    sf.write(folder / "call.wav", call, rate, subtype="PCM_16")
    return {"meeting": meeting, "call": folder / "call.wav"}
