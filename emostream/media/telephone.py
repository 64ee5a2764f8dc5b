"""A phone line's copy of 16 kHz audio: line noise, 8 kHz sampling and G.711 mu-law, back at 16 kHz.

One implementation for the two places that need it: training's telephone-band copies
(`training.features`, `Augment.telephone_copies`) and the call-level evaluation's `--telephone` calls
(bench/calls.py). A telephone line carries 300–3,400 Hz; resampling to 8 kHz (anti-aliased) keeps
nothing above 4 kHz, and 8-bit mu-law adds the codec's quantisation noise, loudest on loud speech.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import resample_poly

from emostream.media.decode import SAMPLE_RATE

TELEPHONE_RATE = 8000  # Hz: G.711's sampling rate
MU = 255.0  # G.711 mu-law's compression constant
LEVELS = 127  # 8 bits per sample: a sign and 127 magnitudes


def mu_law(audio: np.ndarray) -> np.ndarray:
    """G.711 mu-law round trip: compressed, quantised to 8 bits, expanded (values in [-1, 1])."""
    coded = np.sign(audio) * np.log1p(MU * np.minimum(np.abs(audio), 1.0)) / np.log1p(MU)
    coded = np.round(coded * LEVELS) / LEVELS
    return np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(MU)) / MU


def telephone_band(audio: np.ndarray) -> np.ndarray:
    """16 kHz audio as a phone line carries it: 8 kHz sampling (anti-aliased) through mu-law, back to 16 kHz.

    audio : shape = (..., samples) at 16 kHz; returns float32 of the same shape (the resampling's last
    sample or so is trimmed or zero-padded to keep the length).
    """
    down = SAMPLE_RATE // TELEPHONE_RATE
    narrow = resample_poly(audio, 1, down, axis=-1)
    wide = resample_poly(mu_law(narrow), down, 1, axis=-1)
    samples = audio.shape[-1]
    if wide.shape[-1] < samples:
        wide = np.pad(wide, [(0, 0)] * (wide.ndim - 1) + [(0, samples - wide.shape[-1])])
    return wide[..., :samples].astype(np.float32)


def with_noise(audio: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """`audio` plus white noise `snr_db` (drawn uniformly) below its RMS level, clipped to [-1, 1]."""
    level = np.sqrt(np.mean(audio**2)) + 1e-9
    return np.clip(audio + rng.normal(0, level * 10 ** (-rng.uniform(*snr_db) / 20), audio.shape), -1, 1)


def telephone_copy(audio: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """A noisy phone line's copy: `with_noise`, then `telephone_band` (the noise is band-limited with the speech,
    as line noise is).

    audio : shape = (..., samples) at 16 kHz; returns float32 of the same shape.
    """
    return telephone_band(with_noise(audio, rng, snr_db))
