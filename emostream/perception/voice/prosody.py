"""Prosody for the emotion model: per-frame pitch/energy per segment, per-utterance statistics, per-speaker z-scores.

Why it is split in three:

- `prosody_frames` runs once per decoded segment (~2 s of one channel) as audio arrives. Every 10 ms it
  measures f0 (our own vectorised YIN), how periodic the frame is, and its energy. Frame centres sit on a
  fixed 10 ms grid of the *stream* clock, so frames of consecutive segments join without gaps or overlaps
  whatever the segment boundaries are; only frames within a few tens of ms of a cut see less context.
- `utterance_prosody` turns the frames of one utterance (sliced out of several segments' frames with
  `ProsodyFrames.concat(...).slice(start, end)`) into eleven numbers: pitch level, range and slope,
  loudness level and range, a speaking-rate proxy, pauses, voicing, and jitter/shimmer proxies.
- `SpeakerProsodyStats` expresses those numbers relative to the same speaker's earlier utterances: emotion
  shows as a change from a person's habit (a high voice is not an excited voice), so the model gets z-scores.

YIN (de Cheveigné & Kawahara 2002), steps 1–5, for all frames of a segment at once: the difference function
comes from an FFT cross-correlation plus running sums of squares (no per-lag loop), then the cumulative-mean
normalised difference d', the absolute threshold with the "first dip below the threshold, then down to its
local minimum" rule, and parabolic interpolation of the raw difference around that lag. Unlike the paper we do
not fall back to the global minimum when nothing dips below the threshold: such a frame is unvoiced. YIN runs on
the audio low-passed at 1 kHz (energy does not): the upper harmonics of real voices are the least periodic
(aspiration noise, jitter, codec artefacts), and on the LibriVox and RAVDESS recordings this filter raised the
share of loud frames whose d' dips below 0.15 from ~0.40–0.57 to ~0.57–0.72 without voicing any noise. This is
pure numpy/scipy on purpose (librosa's numba JIT costs ~15 s on first use); it takes ~2 ms of one core per
second of audio.

The utterance statistics are deliberately simple, robust proxies rather than clinical measures: jitter and
shimmer are computed from 10 ms frame-level periods and amplitudes, not cycle by cycle, and the speaking rate
counts energy peaks in voiced regions, not linguistic syllables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields

import numpy as np
from scipy import fft as sp_fft
from scipy.signal import butter, find_peaks, sosfilt

from emostream.media.decode import SAMPLE_RATE

FRAME_HOP = 0.01  # s between frame centres
WINDOW_SECONDS = 0.025  # s, YIN integration window and energy window: >= 1.5 periods of the lowest f0 (60 Hz)
YIN_THRESHOLD = 0.15  # d' must dip below this for a frame to be voiced (paper: 0.1–0.15)
VOICING_FLOOR_DB = -50.0  # dBFS; quieter frames are never voiced (YIN finds "periods" in faint hum and dither)
ENERGY_FLOOR_DB = -100.0  # dBFS reported for digital silence (keeps log() finite)
LOWPASS_HZ = 1000.0  # Hz, YIN sees the voice below this: high harmonics of real voices are the least periodic
_LOWPASS = butter(4, LOWPASS_HZ, fs=SAMPLE_RATE, output="sos")
_CHUNK_FRAMES = 512  # frames analysed per vectorised batch: bounds working memory (~15 MB) for long inputs

# Utterance statistics.
LOUD_PERCENTILE = 95.0  # percentile of frame energy that stands for the utterance's loud level (vowels)
QUIET_PERCENTILE = 5.0  # percentile of frame energy that stands for its background (if it has any silence)
SPEECH_RANGE_DB = 35.0  # dB; unvoiced frames further below the loud level are silence, whatever the background
NOISE_MARGIN_DB = 10.0  # dB; unvoiced frames less than this above the background are silence (room noise, hiss)
MIN_PAUSE_SECONDS = 0.15  # s; shorter silences are stop closures and breaths inside speech, not pauses
NUCLEUS_PROMINENCE_DB = 2.0  # dB an energy peak must stand above the dips beside it to count as a syllable nucleus
NUCLEUS_MIN_SECONDS = 0.1  # s between nuclei: faster than 10 syllables/s does not occur in speech
NUCLEUS_VOICED_SECONDS = 0.03  # s; a nucleus needs a voiced frame this close (YIN misses some frames of real vowels)
ENVELOPE_SMOOTH_SECONDS = 0.05  # s, Hann smoothing of the dB envelope: removes frame-to-frame jitter, keeps syllables
_SMALL = 1e-12


@dataclass(frozen=True)
class ProsodyFrames:
    """Frame-level prosody of a stretch of one channel, every FRAME_HOP seconds, on the stream clock."""

    times: np.ndarray  # shape = (n,), float64 stream seconds of each frame centre, increasing
    f0: np.ndarray  # shape = (n,), float32 Hz, NaN where unvoiced
    periodicity: np.ndarray  # shape = (n,), float32 in [0, 1]: 1 - YIN d' at the chosen lag; 0 where unvoiced
    energy_db: np.ndarray  # shape = (n,), float32 Hann-weighted RMS in dBFS (full-scale sine = -3 dB), >= ENERGY_FLOOR_DB

    def __post_init__(self) -> None:
        n = len(self.times)
        if not all(a.shape == (n,) for a in (self.f0, self.periodicity, self.energy_db)):
            raise ValueError("ProsodyFrames arrays must all have shape (n,)")

    def __len__(self) -> int:
        return len(self.times)

    @property
    def voiced(self) -> np.ndarray:
        """shape = (n,), bool."""
        return np.isfinite(self.f0)

    @classmethod
    def empty(cls) -> ProsodyFrames:
        return cls(np.zeros(0), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))

    @classmethod
    def concat(cls, parts: Sequence[ProsodyFrames]) -> ProsodyFrames:
        """Join frames of consecutive segments (given in stream order) into one ProsodyFrames."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.times for p in parts]),
            np.concatenate([p.f0 for p in parts]),
            np.concatenate([p.periodicity for p in parts]),
            np.concatenate([p.energy_db for p in parts]),
        )

    def slice(self, start: float, end: float) -> ProsodyFrames:
        """The frames whose centre lies in [start, end) stream seconds."""
        keep = (self.times >= start) & (self.times < end)
        return ProsodyFrames(self.times[keep], self.f0[keep], self.periodicity[keep], self.energy_db[keep])


def _frame_grid(start: float, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame centres of the stream-wide 10 ms grid that fall inside this audio.

    Returns (times, shape = (m,) float64 stream seconds; centres, shape = (m,) int64 sample index in the audio).
    Centres are at (k + 0.5) * FRAME_HOP for integer k, so any cut of the stream gives the same grid.
    """
    end = start + n_samples / SAMPLE_RATE
    eps = 1e-6  # in hops: absorbs float error in start times such as 2.0000000001
    first = math.ceil((start / FRAME_HOP) - 0.5 - eps)
    stop = math.ceil((end / FRAME_HOP) - 0.5 - eps)
    k = np.arange(first, max(first, stop), dtype=np.int64)
    times = (k + 0.5) * FRAME_HOP
    centres = np.clip(np.rint((times - start) * SAMPLE_RATE).astype(np.int64), 0, max(n_samples - 1, 0))
    return times, centres


def _window_starts(centres: np.ndarray, length: int, n_samples: int) -> np.ndarray:
    """First sample of a `length`-sample window centred on each frame, moved inside the audio at its edges.

    Shifting the window (rather than zero-padding) keeps edge frames measured on real signal: a frame a few ms
    from a segment cut gets a window up to ~21 ms off-centre instead of one half full of zeros.
    """
    return np.clip(centres - length // 2, 0, max(n_samples - length, 0))


def prosody_frames(audio: np.ndarray, start: float, fmin: float = 60.0, fmax: float = 400.0) -> ProsodyFrames:
    """f0, periodicity and energy every FRAME_HOP seconds of one channel's audio.

    audio : shape = (n_samples,), float mono at SAMPLE_RATE, in [-1, 1];
    start : stream seconds of audio[0];
    fmin, fmax : Hz, the f0 search range (lags SAMPLE_RATE/fmax .. SAMPLE_RATE/fmin).
    A frame is voiced when YIN's d' dips below YIN_THRESHOLD within the lag range and its energy is above
    VOICING_FLOOR_DB. Each frame analyses WINDOW_SECONDS plus the largest lag (~42 ms at fmin = 60 Hz) around
    its centre.
    """
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono, shape (n_samples,), got {audio.shape}")
    if not 0 < fmin < fmax <= LOWPASS_HZ:  # YIN sees the audio low-passed at LOWPASS_HZ
        raise ValueError(f"need 0 < fmin < fmax <= {LOWPASS_HZ} Hz, got {fmin}, {fmax}")
    times, centres = _frame_grid(start, len(audio))
    if len(times) == 0:
        return ProsodyFrames.empty()

    width = int(round(WINDOW_SECONDS * SAMPLE_RATE))  # samples in the integration window
    tau_min = max(2, int(SAMPLE_RATE / fmax))
    tau_max = int(math.ceil(SAMPLE_RATE / fmin))
    n_lags = tau_max + 2  # lags 0 .. tau_max + 1: the right neighbour of tau_max for interpolation
    length = width + n_lags - 1  # samples each frame needs: window plus largest lag
    x = audio.astype(np.float64)  # float64: d = e0 + e_tau - 2 r cancels to ~0 at the period
    if len(x) < length:  # shorter than one analysis window: pad with silence
        x = np.concatenate([x, np.zeros(length - len(x))])
    low = sosfilt(_LOWPASS, x)

    yin_starts = _window_starts(centres, length, len(audio))
    energy_starts = _window_starts(centres, width, len(audio))
    hann = np.hanning(width + 2)[1:-1]
    hann /= hann.sum()  # weights summing to 1: a weighted mean square, so a full-scale sine gives -3 dBFS
    n_fft = sp_fft.next_fast_len(length, real=True)  # >= length: the circular correlation never wraps for lags < n_lags

    f0 = np.full(len(times), np.nan, np.float32)
    periodicity = np.zeros(len(times), np.float32)
    energy_db = np.empty(len(times), np.float32)
    lag_index = np.arange(n_lags)
    span = np.arange(length)
    for lo in range(0, len(times), _CHUNK_FRAMES):
        hi = min(lo + _CHUNK_FRAMES, len(times))
        seg = low[yin_starts[lo:hi, None] + span]  # (m, length)

        power = x[energy_starts[lo:hi, None] + span[:width]] ** 2 @ hann  # (m,)
        energy = np.maximum(10.0 * np.log10(np.maximum(power, _SMALL)), ENERGY_FLOOR_DB)
        energy_db[lo:hi] = energy

        # YIN step 2, the difference function d(tau) = sum_{j<W} (x_j - x_{j+tau})^2 = e(0) + e(tau) - 2 r(tau),
        # with r(tau) = sum_{j<W} x_j x_{j+tau} by FFT and e(tau) = sum_{j<W} x_{j+tau}^2 by a running sum.
        head = sp_fft.rfft(seg[:, :width], n_fft, axis=1)
        whole = sp_fft.rfft(seg, n_fft, axis=1)
        r = sp_fft.irfft(np.conj(head) * whole, n_fft, axis=1)[:, :n_lags]
        sums = np.zeros((hi - lo, length + 1))
        np.cumsum(seg * seg, axis=1, out=sums[:, 1:])
        e = sums[:, lag_index + width] - sums[:, lag_index]
        d = np.maximum(e[:, :1] + e - 2.0 * r, 0.0)
        d[:, 0] = 0.0

        # Step 3, cumulative-mean normalised difference: d'(tau) = d(tau) * tau / sum_{j=1..tau} d(j), d'(0) = 1.
        running = np.cumsum(d[:, 1:], axis=1)
        dn = np.ones_like(d)
        np.divide(d[:, 1:] * lag_index[1:], running, out=dn[:, 1:], where=running > _SMALL)

        # Step 4, absolute threshold: the first lag in range with d' < threshold, then on down to its local minimum.
        window = dn[:, tau_min : tau_max + 1]  # (m, k) lags tau_min .. tau_max
        below = window < YIN_THRESHOLD
        found = below.any(axis=1)
        first = np.argmax(below, axis=1)
        stops = dn[:, tau_min + 1 : tau_max + 2] >= window  # d' stops falling after this lag
        stops &= np.arange(window.shape[1]) >= first[:, None]
        best = tau_min + np.where(stops.any(axis=1), np.argmax(stops, axis=1), window.shape[1] - 1)

        # Step 5, parabolic interpolation of d (not d': d is near-quadratic about the true period).
        rows = np.arange(hi - lo)
        left, mid, right = d[rows, best - 1], d[rows, best], d[rows, best + 1]
        curve = left - 2.0 * mid + right
        shift = np.zeros(hi - lo)
        np.divide(0.5 * (left - right), curve, out=shift, where=curve > _SMALL)
        shift = np.clip(shift, -1.0, 1.0)

        voiced = found & (energy > VOICING_FLOOR_DB)
        f0[lo:hi][voiced] = SAMPLE_RATE / (best[voiced] + shift[voiced])
        periodicity[lo:hi][voiced] = np.clip(1.0 - dn[rows, best][voiced], 0.0, 1.0)
    return ProsodyFrames(times, f0, periodicity, energy_db)


@dataclass(frozen=True)
class Prosody:
    """Prosodic statistics of one utterance. NaN where there is nothing to measure (e.g. no voiced frame).

    "Speech" below is the utterance's active span — from its first to its last speech frame (voiced, or within
    SPEECH_RANGE_DB of the loud level) — minus its pauses, so VAD padding at the edges changes nothing.
    """

    f0_mean: float  # Hz, mean f0 of voiced frames
    f0_range: float  # semitones between the 10th and 90th percentile of voiced f0
    f0_slope: float  # semitones per second, least-squares line through voiced frames' f0
    energy_mean: float  # dBFS, mean frame energy of speech frames
    energy_range: float  # dB between the 10th and 90th percentile of speech frames' energy
    speaking_rate: float  # syllable-like nuclei per second of speech (proxy: voiced energy peaks, not real syllables)
    pause_count: int  # silences longer than MIN_PAUSE_SECONDS inside the active span (edges excluded)
    pause_seconds: float  # s, their total duration
    voiced_fraction: float  # voiced frames / frames of the active span
    jitter: float  # proxy: mean |T_i+1 - T_i| / mean T over adjacent voiced frames, T = 1/f0 (frame level, not cycles)
    shimmer: float  # proxy: the same on voiced frames' linear RMS amplitudes

    def as_array(self) -> np.ndarray:
        """shape = (len(PROSODY_NAMES),), float64 in PROSODY_NAMES order."""
        return np.array(astuple(self), dtype=np.float64)


PROSODY_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Prosody))


def _speech_mask(energy_db: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """shape = (n,) bool: voiced, or loud enough for unvoiced speech (s, f, t): above the absolute floor, within
    SPEECH_RANGE_DB of the utterance's loud level and NOISE_MARGIN_DB above its background. The background term
    matters on real recordings: read speech with hiss at -50 dBFS and vowels at -20 dBFS would otherwise have
    no silence at all. Stationary unvoiced noise alone has loud ≈ background, so it is never speech."""
    loud, quiet = np.percentile(energy_db, [LOUD_PERCENTILE, QUIET_PERCENTILE])
    return voiced | (energy_db > max(VOICING_FLOOR_DB, loud - SPEECH_RANGE_DB, quiet + NOISE_MARGIN_DB))


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (exclusive) indices of the runs of True in a 1-d bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _adjacent_variation(values: np.ndarray, times: np.ndarray, voiced: np.ndarray) -> float:
    """Mean |v_i+1 - v_i| over pairs of voiced frames adjacent in time, divided by the mean over voiced frames."""
    pairs = voiced[:-1] & voiced[1:] & (np.diff(times) < 1.5 * FRAME_HOP)  # adjacent: no gap between segments
    if not pairs.any():
        return math.nan
    return float(np.mean(np.abs(np.diff(values)[pairs])) / np.mean(values[voiced]))


def utterance_prosody(frames: ProsodyFrames) -> Prosody:
    """Prosodic statistics of one utterance's frames (see Prosody for each field's definition).

    frames : the utterance's frames, in time order, typically `ProsodyFrames.concat(parts).slice(start, end)`.
    Durations count frames × FRAME_HOP, so a gap in the stream inside the utterance is simply not counted.
    """
    nan = math.nan
    n = len(frames)
    voiced = frames.voiced
    if n == 0:
        return Prosody(nan, nan, nan, nan, nan, nan, 0, 0.0, nan, nan, nan)
    energy = frames.energy_db.astype(np.float64)
    speech = _speech_mask(energy, voiced)
    speech_idx = np.flatnonzero(speech)
    if speech_idx.size == 0:
        return Prosody(nan, nan, nan, nan, nan, nan, 0, 0.0, nan, nan, nan)

    # Pauses: silent runs strictly inside the active span (the span starts and ends with speech, so every
    # silent run in it is bounded by speech on both sides).
    first, last = int(speech_idx[0]), int(speech_idx[-1]) + 1
    starts, stops = _runs(~speech[first:last])
    lengths = stops - starts
    min_pause_frames = int(round(MIN_PAUSE_SECONDS / FRAME_HOP))
    pauses = lengths[lengths > min_pause_frames]
    pause_seconds = float(pauses.sum() * FRAME_HOP)
    span_seconds = (last - first) * FRAME_HOP
    speech_seconds = span_seconds - pause_seconds

    energy_mean = float(np.mean(energy[speech]))
    p10, p90 = np.percentile(energy[speech], [10, 90])
    energy_range = float(p90 - p10)
    voiced_fraction = float(voiced[first:last].mean())
    if not voiced.any():
        return Prosody(nan, nan, nan, energy_mean, energy_range, nan, len(pauses), pause_seconds, voiced_fraction, nan, nan)

    f0 = frames.f0.astype(np.float64)
    f0_voiced = f0[voiced]
    semitones = 12.0 * np.log2(f0_voiced / 100.0)  # the reference cancels in ranges and slopes
    p10, p90 = np.percentile(semitones, [10, 90])
    t = frames.times[voiced]
    f0_slope = nan
    if len(t) >= 2 and np.ptp(t) > 0:
        tc = t - t.mean()
        f0_slope = float(np.dot(tc, semitones - semitones.mean()) / np.dot(tc, tc))

    # Speaking rate: peaks of the smoothed dB envelope at voiced frames, at least NUCLEUS_MIN_SECONDS apart.
    taps = max(3, int(round(ENVELOPE_SMOOTH_SECONDS / FRAME_HOP)) | 1)
    kernel = np.hanning(taps + 2)[1:-1]
    kernel /= kernel.sum()
    padded = np.pad(energy, taps // 2, mode="edge")
    envelope = np.convolve(padded, kernel, mode="valid")
    peaks, _ = find_peaks(envelope, prominence=NUCLEUS_PROMINENCE_DB, distance=max(1, int(round(NUCLEUS_MIN_SECONDS / FRAME_HOP))))
    reach = int(round(NUCLEUS_VOICED_SECONDS / FRAME_HOP))
    near_voiced = np.convolve(voiced.astype(np.float64), np.ones(2 * reach + 1), mode="same") > 0
    nuclei = int(np.count_nonzero(near_voiced[peaks]))
    speaking_rate = nuclei / speech_seconds if speech_seconds > 0 else nan

    periods = np.where(voiced, 1.0 / np.where(voiced, f0, 1.0), 0.0)
    amplitudes = 10.0 ** (energy / 20.0)
    return Prosody(
        f0_mean=float(f0_voiced.mean()),
        f0_range=float(p90 - p10),
        f0_slope=f0_slope,
        energy_mean=energy_mean,
        energy_range=energy_range,
        speaking_rate=float(speaking_rate),
        pause_count=len(pauses),
        pause_seconds=pause_seconds,
        voiced_fraction=voiced_fraction,
        jitter=_adjacent_variation(periods, frames.times, voiced),
        shimmer=_adjacent_variation(amplitudes, frames.times, voiced),
    )


# Smallest standard deviation used for z-scores, per field (in the field's unit). A speaker whose first
# utterances happen to agree closely (or a field that is constant, like pause_count = 0) would otherwise give
# a near-zero std and z-scores in the hundreds for an ordinary next utterance; these floors are roughly the
# smallest differences that are perceptible / meaningful for each measure.
STD_FLOORS: dict[str, float] = {
    "f0_mean": 3.0,  # Hz
    "f0_range": 0.5,  # semitones
    "f0_slope": 0.5,  # semitones/s
    "energy_mean": 1.0,  # dB
    "energy_range": 1.0,  # dB
    "speaking_rate": 0.2,  # nuclei/s
    "pause_count": 0.5,  # pauses
    "pause_seconds": 0.1,  # s
    "voiced_fraction": 0.03,  # fraction
    "jitter": 0.002,  # fraction
    "shimmer": 0.01,  # fraction
}
MIN_UTTERANCES_FOR_Z = 2  # a std needs at least two values


class SpeakerProsodyStats:
    """Running mean and std (Welford) of one speaker's utterance prosody, per field, ignoring NaN per field.

    Keep one per speaker. For each utterance call `z(p)` first (z-scores against the speaker's *earlier*
    utterances, so an utterance is not compared with itself), then `add(p)`; `observe(p)` does both.
    The std is the sample std (ddof = 1), floored at STD_FLOORS.
    """

    def __init__(self) -> None:
        size = len(PROSODY_NAMES)
        self.count = np.zeros(size, np.int64)  # (fields,) non-NaN values seen per field
        self.mean = np.zeros(size)  # (fields,)
        self._m2 = np.zeros(size)  # (fields,) sum of squared deviations from the mean
        self._floors = np.array([STD_FLOORS[name] for name in PROSODY_NAMES])

    @property
    def std(self) -> np.ndarray:
        """shape = (fields,), sample std per field (unfloored); NaN where fewer than two values."""
        out = np.full(len(PROSODY_NAMES), np.nan)
        enough = self.count >= MIN_UTTERANCES_FOR_Z
        out[enough] = np.sqrt(self._m2[enough] / (self.count[enough] - 1))
        return out

    def z(self, prosody: Prosody) -> dict[str, float]:
        """z-score of each field against this speaker's statistics so far; NaN until two values of that field."""
        x = prosody.as_array()
        scale = np.maximum(self.std, self._floors)  # NaN std stays NaN
        zs = (x - self.mean) / scale
        zs[self.count < MIN_UTTERANCES_FOR_Z] = np.nan
        return {name: float(v) for name, v in zip(PROSODY_NAMES, zs, strict=True)}

    def add(self, prosody: Prosody) -> None:
        """Fold one utterance into the running statistics (NaN fields are skipped)."""
        x = prosody.as_array()
        ok = np.isfinite(x)
        self.count[ok] += 1
        delta = x[ok] - self.mean[ok]
        self.mean[ok] += delta / self.count[ok]
        self._m2[ok] += delta * (x[ok] - self.mean[ok])

    def observe(self, prosody: Prosody) -> dict[str, float]:
        """z(prosody), then add(prosody)."""
        zs = self.z(prosody)
        self.add(prosody)
        return zs
