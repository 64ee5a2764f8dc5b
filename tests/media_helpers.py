"""Reference measurements taken straight from a media file, to compare what comes back against."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np


def source_frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


def source_audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        return sum(frame.samples / frame.sample_rate for frame in container.decode(audio=0))


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Samples shaped (channels, n) as float32, and the rate."""
    with wave.open(str(path)) as wav:
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return data.reshape(-1, wav.getnchannels()).T.astype(np.float32) / 32768.0, wav.getframerate()


def write_stereo_call(left: Path, right: Path, out: Path) -> Path:
    """A two-channel call recording from two mono recordings (channel 0 = left)."""
    (a, rate_a), (b, rate_b) = read_wav(left), read_wav(right)
    assert rate_a == rate_b
    n = max(a.shape[1], b.shape[1])
    stereo = np.zeros((n, 2), dtype=np.int16)
    stereo[: a.shape[1], 0] = (a[0] * 32767).astype(np.int16)
    stereo[: b.shape[1], 1] = (b[0] * 32767).astype(np.int16)
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate_a)
        wav.writeframes(stereo.tobytes())
    return out


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    n = min(len(x), len(y))
    return float(np.corrcoef(x[:n], y[:n])[0, 1])
