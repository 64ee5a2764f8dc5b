"""Prosody: YIN f0 on synthetic tones, utterance statistics on constructed signals, real speech, speaker z-scores."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emostream.media.decode import SAMPLE_RATE
from emostream.perception.voice.prosody import (
    FRAME_HOP,
    PROSODY_NAMES,
    STD_FLOORS,
    Prosody,
    ProsodyFrames,
    SpeakerProsodyStats,
    prosody_frames,
    utterance_prosody,
)

SR = SAMPLE_RATE


def seconds(duration: float) -> np.ndarray:
    return np.arange(int(round(duration * SR))) / SR


def tone(f0: float, duration: float, amplitude: float = 0.5, harmonics: tuple[float, ...] = (1.0,), seed: int = 0) -> np.ndarray:
    """A periodic signal at f0 Hz with the given harmonic amplitudes (random phases), peak-normalised."""
    rng = np.random.default_rng(seed)
    t = seconds(duration)
    x = sum(a * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) for k, a in enumerate(harmonics, 1))
    return (amplitude * x / np.max(np.abs(x))).astype(np.float32)


def silence(duration: float, level: float = 1e-4, seed: int = 1) -> np.ndarray:
    """Quiet background noise (about -80 dBFS), not digital zero."""
    return (level * np.random.default_rng(seed).standard_normal(len(seconds(duration)))).astype(np.float32)


def from_frequency(freq: np.ndarray, amplitude: np.ndarray | float = 0.5) -> np.ndarray:
    """A sine whose instantaneous frequency (Hz, per sample) is `freq`."""
    return (amplitude * np.sin(2 * np.pi * np.cumsum(freq) / SR)).astype(np.float32)


VOICE = (1.0, 0.6, 0.5, 0.3, 0.2)  # harmonic amplitudes of a crude vowel-like source


@pytest.mark.parametrize("f0", [100.0, 150.0, 220.0, 300.0])
@pytest.mark.parametrize("kind", ["sine", "harmonics", "harmonics+noise"])
def test_f0_of_tones_within_one_percent_and_no_octave_errors(f0: float, kind: str) -> None:
    x = tone(f0, 1.0, harmonics=(1.0,) if kind == "sine" else VOICE)
    if kind.endswith("noise"):
        x = x + 0.01 * np.random.default_rng(2).standard_normal(len(x)).astype(np.float32)  # ~26 dB SNR
    frames = prosody_frames(x, 0.0)
    assert frames.voiced.mean() > 0.95
    error = np.abs(frames.f0[frames.voiced] / f0 - 1.0)
    assert error.max() < 0.01, f"worst f0 error {error.max():.2%}"
    assert np.median(frames.periodicity[frames.voiced]) > 0.9


def test_f0_with_weak_fundamental_has_no_octave_error() -> None:
    x = tone(130.0, 1.0, harmonics=(0.2, 1.0, 0.8, 0.5, 0.3))  # most energy at 2 f0
    frames = prosody_frames(x, 0.0)
    assert frames.voiced.mean() > 0.95
    assert np.abs(frames.f0[frames.voiced] / 130.0 - 1.0).max() < 0.01


def test_silence_and_white_noise_are_unvoiced() -> None:
    rng = np.random.default_rng(3)
    for x in (np.zeros(SR, np.float32), silence(1.0), (0.1 * rng.standard_normal(SR)).astype(np.float32)):
        frames = prosody_frames(x, 0.0)
        assert frames.voiced.mean() < 0.05
        assert np.all(frames.periodicity[~frames.voiced] == 0.0)
    assert np.all(prosody_frames(np.zeros(SR, np.float32), 0.0).energy_db == -100.0)


def test_frames_shapes_dtypes_and_times() -> None:
    frames = prosody_frames(tone(150.0, 2.0), 10.0)
    assert len(frames) == 200
    assert frames.times.dtype == np.float64 and frames.f0.dtype == np.float32
    assert frames.periodicity.dtype == np.float32 and frames.energy_db.dtype == np.float32
    np.testing.assert_allclose(frames.times[[0, -1]], [10.005, 11.995])
    np.testing.assert_allclose(np.diff(frames.times), FRAME_HOP)
    assert len(prosody_frames(np.zeros(0, np.float32), 0.0)) == 0
    assert len(prosody_frames(tone(150.0, 0.02), 0.0)) == 2  # shorter than one analysis window still works


def test_energy_of_full_scale_sine_is_minus_3_dbfs() -> None:
    frames = prosody_frames(tone(200.0, 1.0, amplitude=1.0), 0.0)
    np.testing.assert_allclose(frames.energy_db, -3.01, atol=0.05)
    assert abs(float(np.median(prosody_frames(tone(200.0, 1.0, amplitude=0.1), 0.0).energy_db)) + 23.01) < 0.05


def test_glide_gives_slope_and_range_in_semitones() -> None:
    # 120 -> 240 Hz in 1 s, linear in log frequency: exactly 12 semitones per second.
    t = seconds(1.0)
    true_f0 = 120.0 * 2.0**t
    x = np.concatenate([silence(0.2), from_frequency(true_f0), silence(0.2)])
    p = utterance_prosody(prosody_frames(x, 0.0))
    assert p.f0_slope == pytest.approx(12.0, abs=0.3)
    semitones = 12 * np.log2(true_f0)
    true_range = np.percentile(semitones, 90) - np.percentile(semitones, 10)  # 9.6 st
    assert p.f0_range == pytest.approx(true_range, abs=0.4)
    assert p.f0_mean == pytest.approx(true_f0.mean(), rel=0.02)
    assert p.pause_count == 0 and p.voiced_fraction > 0.9


def test_pause_between_bursts_and_short_gap_is_no_pause() -> None:
    burst = tone(150.0, 0.5, harmonics=VOICE)
    x = np.concatenate([silence(0.3), burst, silence(0.4, seed=4), burst, silence(0.3, seed=5)])
    p = utterance_prosody(prosody_frames(x, 0.0))
    assert p.pause_count == 1
    assert p.pause_seconds == pytest.approx(0.4, abs=0.05)
    assert p.voiced_fraction == pytest.approx(1.0 / 1.4, abs=0.07)  # 1.0 s voiced of a 1.4 s span (edges excluded)

    x = np.concatenate([silence(0.3), burst, silence(0.1, seed=4), burst, silence(0.3, seed=5)])
    p = utterance_prosody(prosody_frames(x, 0.0))
    assert p.pause_count == 0 and p.pause_seconds == 0.0


def test_speaking_rate_counts_energy_bursts() -> None:
    t = seconds(2.0)
    envelope = 0.05 + 0.95 * (0.5 - 0.5 * np.cos(2 * np.pi * 5.0 * t))  # 5 bursts per second
    carrier = tone(140.0, 2.0, amplitude=1.0, harmonics=VOICE)
    x = np.concatenate([silence(0.2), 0.5 * envelope.astype(np.float32) * carrier, silence(0.2)])
    p = utterance_prosody(prosody_frames(x, 0.0))
    assert p.speaking_rate == pytest.approx(5.0, abs=1.0)


def test_jitter_and_shimmer_grow_with_perturbation() -> None:
    rng = np.random.default_rng(6)
    n_cycles = 150
    t0 = 1.0 / 125.0

    def cycles(periods: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
        """One period after another, each a whole cycle at its own frequency and amplitude."""
        per_sample_f = np.repeat(1.0 / periods, np.rint(periods * SR).astype(int))
        per_sample_a = np.repeat(amplitudes, np.rint(periods * SR).astype(int))
        return from_frequency(per_sample_f, 0.5 * per_sample_a)

    clean = cycles(np.full(n_cycles, t0), np.ones(n_cycles))
    jittery = cycles(t0 * (1 + 0.03 * rng.standard_normal(n_cycles)), np.ones(n_cycles))
    shimmery = cycles(np.full(n_cycles, t0), 1 + 0.15 * rng.standard_normal(n_cycles))
    clean_p, jitter_p, shimmer_p = (utterance_prosody(prosody_frames(x, 0.0)) for x in (clean, jittery, shimmery))
    assert jitter_p.jitter > 3 * clean_p.jitter
    assert shimmer_p.shimmer > 3 * clean_p.shimmer
    assert clean_p.jitter < 0.005 and clean_p.shimmer < 0.01


def test_concatenated_halves_match_the_whole() -> None:
    t = seconds(2.0)
    f0 = 150.0 * 2.0 ** (0.5 * np.sin(2 * np.pi * 1.5 * t))  # slow pitch movement, ±6 semitones
    x = from_frequency(f0) + 0.3 * from_frequency(2 * f0)
    cut = 16_123  # not on the 10 ms grid
    start = 7.3
    whole = prosody_frames(x, start)
    halves = ProsodyFrames.concat([prosody_frames(x[:cut], start), prosody_frames(x[cut:], start + cut / SR)])
    np.testing.assert_array_equal(halves.times, whole.times)
    np.testing.assert_allclose(np.diff(halves.times), FRAME_HOP)
    near = np.abs(whole.times - (start + cut / SR)) < 0.03  # frames whose 42 ms analysis window crosses the cut
    assert near.sum() <= 6
    np.testing.assert_allclose(halves.f0[~near], whole.f0[~near], rtol=1e-5)
    np.testing.assert_allclose(halves.energy_db[~near], whole.energy_db[~near], atol=1e-3)
    # At the cut, windows move up to 21 ms into their own segment, and this pitch moves up to ~5 Hz per 10 ms.
    np.testing.assert_allclose(halves.f0[near], whole.f0[near], rtol=0.1)


def test_slice_and_concat() -> None:
    frames = prosody_frames(tone(150.0, 2.0), 4.0)
    part = frames.slice(4.5, 5.0)
    assert len(part) == 50 and part.times[0] == pytest.approx(4.505) and part.times[-1] < 5.0
    joined = ProsodyFrames.concat([frames.slice(4.0, 5.0), frames.slice(5.0, 6.0)])
    np.testing.assert_array_equal(joined.f0, frames.f0)
    assert len(ProsodyFrames.concat([])) == 0


def test_nothing_to_measure_gives_nan() -> None:
    p = utterance_prosody(prosody_frames(silence(1.0), 0.0))
    assert all(math.isnan(getattr(p, name)) for name in PROSODY_NAMES if name not in ("pause_count", "pause_seconds"))
    assert p.pause_count == 0
    assert np.isnan(utterance_prosody(ProsodyFrames.empty()).as_array()[0])
    assert p.as_array().shape == (len(PROSODY_NAMES),)


def test_fast_enough() -> None:
    """Target < 5 ms of CPU per second of audio; this guard is 4x looser so a busy machine does not fail it."""
    x = tone(150.0, 20.0, harmonics=VOICE) + silence(20.0, level=0.01)
    prosody_frames(x[: 2 * SR], 0.0)  # warm up
    began = time.process_time()
    for i in range(10):
        prosody_frames(x[i * 2 * SR : (i + 1) * 2 * SR], 2.0 * i)
    cpu_ms_per_second = (time.process_time() - began) * 1000 / 20.0
    assert cpu_ms_per_second < 20.0


def streamed(audio: np.ndarray, segment_seconds: float = 2.0) -> ProsodyFrames:
    """Frames of audio fed in segments as the pipeline does, then joined."""
    step = int(segment_seconds * SR)
    return ProsodyFrames.concat([prosody_frames(audio[i : i + step], i / SR) for i in range(0, len(audio), step)])


def test_real_male_reader(librivox: list[Path]) -> None:
    if not librivox:
        pytest.skip("no LibriVox recordings in the shared data")
    for path in librivox:
        audio, rate = sf.read(path, dtype="float32")
        assert rate == SR
        p = utterance_prosody(streamed(audio))
        assert 80.0 < p.f0_mean < 180.0, (path.name, p)
        assert 0.3 < p.voiced_fraction < 0.9, (path.name, p)
        assert 2.0 < p.speaking_rate < 7.0, (path.name, p)
        assert 0.0 < p.jitter < 0.05 and 0.0 < p.shimmer < 0.3, (path.name, p)


def test_female_actor_higher_than_male(shared_data: Path) -> None:
    def mean_f0(actor: str) -> float:
        # Neutral and calm clips only: shouted anger lifts even a male voice to ~350 Hz.
        paths = sorted((shared_data / "ravdess-speech-16k" / actor).glob("03-01-0[12]-*.flac"))
        assert paths, f"no RAVDESS clips for {actor}"
        return float(np.median([utterance_prosody(prosody_frames(sf.read(p, dtype="float32")[0], 0.0)).f0_mean for p in paths]))

    male, female = mean_f0("Actor_01"), mean_f0("Actor_02")
    assert 80.0 < male < 180.0
    assert female > 1.3 * male, (male, female)


def prosody_of(values: list[float]) -> Prosody:
    return Prosody(*values)


def test_speaker_z_scores_match_numpy() -> None:
    rng = np.random.default_rng(7)
    scale = np.array([20.0, 2.0, 3.0, 5.0, 4.0, 1.0, 2.0, 0.5, 0.2, 0.01, 0.05])
    series = rng.normal(size=(8, len(PROSODY_NAMES))) * scale + 10 * scale
    stats = SpeakerProsodyStats()
    for i, row in enumerate(series):
        z = stats.observe(prosody_of(list(row)))
        if i < 2:
            assert all(math.isnan(v) for v in z.values())  # the speaker has fewer than two utterances yet
            continue
        past = series[:i]
        expected = (row - past.mean(axis=0)) / np.maximum(past.std(axis=0, ddof=1), [STD_FLOORS[n] for n in PROSODY_NAMES])
        np.testing.assert_allclose([z[n] for n in PROSODY_NAMES], expected, rtol=1e-9)
    np.testing.assert_allclose(stats.mean, series.mean(axis=0))
    np.testing.assert_allclose(stats.std, series.std(axis=0, ddof=1))


def test_speaker_stats_skip_nan_per_field_and_floor_std() -> None:
    stats = SpeakerProsodyStats()
    jitter = PROSODY_NAMES.index("jitter")
    for value in (100.0, 110.0, 120.0):
        row = [value] * len(PROSODY_NAMES)
        if value != 100.0:
            row[jitter] = math.nan  # only one utterance had a jitter
        stats.add(prosody_of(row))
    assert stats.count[0] == 3 and stats.count[jitter] == 1
    z = stats.z(prosody_of([130.0] * len(PROSODY_NAMES)))
    assert z["f0_mean"] == pytest.approx((130.0 - 110.0) / 10.0)
    assert math.isnan(z["jitter"])  # one value: no std yet
    assert math.isnan(stats.z(prosody_of([math.nan] * len(PROSODY_NAMES)))["f0_mean"])

    same = SpeakerProsodyStats()
    for _ in range(3):
        same.add(prosody_of([0.0] * len(PROSODY_NAMES)))
    z = same.z(prosody_of([1.0] * len(PROSODY_NAMES)))
    assert z["pause_count"] == pytest.approx(1.0 / STD_FLOORS["pause_count"])  # std 0: the floor, not infinity
