"""Facial dynamics per track: running normalisation, time series with first differences, micro-expressions.

A micro-expression is a brief (shorter than `max_seconds`), low-amplitude
movement that rises from the face's local baseline to an apex and returns:
onset, apex, offset. Amplitudes are in the track's own standard deviations,
so the same rule fits a face that moves a lot and one that hardly moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emostream.perception.faces.types import FaceObservation, MicroExpression

ONSET_FRACTION = 0.5  # a movement starts and ends where it crosses this fraction of the minimum apex
BASELINE_SPAN = 4.0  # the local baseline is the median over this many times `max_seconds`, centred
SMOOTHING_FRAMES = 3  # movements are found on a centred moving average: a one-frame landmark glitch is not a movement
BASELINE_ROWS = 32  # local baseline windows sorted at once (bounds the (rows, window, measures) array it sorts)


@dataclass(frozen=True)
class TrackSeries:
    """One track's observations as arrays, with first differences per second."""

    times: np.ndarray  # shape = (n,), stream seconds
    geometry: np.ndarray  # shape = (n, len(GEOMETRY_NAMES)), raw measures
    geometry_z: np.ndarray  # shape = (n, len(GEOMETRY_NAMES)), per-track standard deviations
    expression: np.ndarray  # shape = (n, 7), FER probabilities
    features: np.ndarray  # shape = (n, d), expression features
    geometry_velocity: np.ndarray  # shape = (n, len(GEOMETRY_NAMES)), d(geometry_z)/dt; 0 for the first frame
    feature_velocity: np.ndarray  # shape = (n,), |d(features)/dt|; 0 for the first frame


def track_series(observations: list[FaceObservation]) -> TrackSeries:
    """Stack a track's observations (oldest first) into arrays."""
    times = np.array([o.time for o in observations], dtype=np.float64)
    geometry = np.array([o.face.geometry for o in observations], dtype=np.float32)
    geometry_z = np.array([o.geometry_z for o in observations], dtype=np.float32)
    features = np.array([o.face.features for o in observations], dtype=np.float32)
    steps = np.maximum(np.diff(times), 1e-3)[:, None] if len(times) > 1 else np.zeros((0, 1))
    geometry_velocity = np.vstack([np.zeros((min(len(times), 1), geometry_z.shape[1] if geometry_z.ndim == 2 else 0)),
                                   np.diff(geometry_z, axis=0) / steps])
    feature_velocity = np.concatenate([np.zeros(min(len(times), 1)), np.linalg.norm(np.diff(features, axis=0), axis=1) / steps[:, 0]])
    return TrackSeries(
        times=times,
        geometry=geometry,
        geometry_z=geometry_z,
        expression=np.array([o.face.expression for o in observations], dtype=np.float32),
        features=features,
        geometry_velocity=geometry_velocity.astype(np.float32),
        feature_velocity=feature_velocity.astype(np.float32),
    )


def local_baseline(times: np.ndarray, values: np.ndarray, span: float) -> np.ndarray:
    """The median of `values` within ±span/2 of each time, shape like values (n, m).

    The same numbers as `np.median` over each window, for BASELINE_ROWS windows at a time: each row's window is
    the values with those outside it set to NaN (which sorts last), and the middle one or two are taken after a
    sort. A median per time was a third of a stream session's work on faces (it runs at every segment)."""
    baseline = np.empty_like(values)
    low = np.searchsorted(times, times - span / 2, side="left")
    high = np.searchsorted(times, times + span / 2, side="right")
    if np.isnan(values).any():  # np.median's answer for a window holding NaN is NaN; keep it
        for i in range(len(times)):
            baseline[i] = np.median(values[low[i] : high[i]], axis=0)
        return baseline
    for first in range(0, len(times), BASELINE_ROWS):
        rows = np.arange(first, min(first + BASELINE_ROWS, len(times)))
        start, stop = low[rows[0]], high[rows[-1]]  # the windows of these rows lie within (both ends only grow)
        columns = np.arange(start, stop)
        inside = (columns >= low[rows, None]) & (columns < high[rows, None])
        windows = np.sort(np.where(inside[:, :, None], values[None, start:stop], np.nan), axis=1)
        count, at = high[rows] - low[rows], np.arange(len(rows))
        baseline[rows] = (windows[at, (count - 1) // 2] + windows[at, count // 2]) / 2
    return baseline


def find_micro_expressions(
    track_id: int,
    times: np.ndarray,
    values: np.ndarray,
    names: tuple[str, ...],
    max_seconds: float,
    min_sigma: float,
    max_sigma: float,
) -> list[MicroExpression]:
    """Brief onset-apex-offset movements in each column of `values`.

    times : shape = (n,) increasing stream seconds; values : shape = (n, m) in standard deviations.
    A movement counts when it leaves the local baseline, peaks between min_sigma and max_sigma
    away from it, and is back within max_seconds; movements still under way at either end are skipped.
    """
    if len(times) < 3:
        return []
    kernel = np.ones(SMOOTHING_FRAMES) / SMOOTHING_FRAMES
    padded = np.pad(values, ((SMOOTHING_FRAMES // 2, SMOOTHING_FRAMES // 2), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(values.shape[1])], axis=1)
    deviation = smooth - local_baseline(times, smooth, BASELINE_SPAN * max_seconds)
    level = ONSET_FRACTION * min_sigma
    events = []
    for k, name in enumerate(names):
        d = deviation[:, k]
        i = 1
        while i < len(d):
            if abs(d[i]) < level or abs(d[i - 1]) >= level:
                i += 1
                continue
            sign = np.sign(d[i])
            end = i
            while end < len(d) and d[end] * sign >= level:
                end += 1
            if end == len(d):
                break  # still under way at the end of what we have
            onset, offset = times[i - 1], times[end]
            apex_index = i + int(np.argmax(d[i:end] * sign))
            peak = float(d[apex_index])
            if offset - onset <= max_seconds and min_sigma <= abs(peak) <= max_sigma:
                events.append(MicroExpression(track_id, name, float(onset), float(times[apex_index]), float(offset), peak))
            i = end
    return sorted(events, key=lambda e: e.apex)
