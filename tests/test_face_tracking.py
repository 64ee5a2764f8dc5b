"""Stream-level face tracking, dynamics, geometry and alignment on constructed inputs with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from emostream.perception.faces.align import (
    MAX_OVERSAMPLING,
    TEMPLATE_112,
    align_faces,
    grey_faces,
    oversampling,
    similarity_transform,
    template,
)
from emostream.perception.faces.dynamics import find_micro_expressions, local_baseline, track_series
from emostream.perception.faces.geometry import GEOMETRY_NAMES, face_geometry, rigid_shape
from emostream.perception.faces.tracking import FaceTracks
from emostream.perception.faces.types import AnalysedFrame, FaceMeasurement, Landmarks, SegmentFaces
from emostream.perception.running_stats import RunningStats
from emostream.settings import FaceSettings

RNG = np.random.default_rng(7)
SHAPES = [RNG.uniform(0, 1, (468, 3)).astype(np.float32) for _ in range(3)]  # a different "face" each


def face_at(x: float, y: float, who: int = 0, size: float = 100.0, embedding: np.ndarray | None = None) -> FaceMeasurement:
    points = SHAPES[who] * np.array([size, size, 1.0], np.float32) + np.array([x, y, 0.0], np.float32)
    landmarks = Landmarks(points=points, scheme="mesh468", keypoints=points[[33, 263, 1, 61, 291], :2])
    return FaceMeasurement(
        box=landmarks.box,
        score=0.9,
        shape=rigid_shape(points, "mesh468"),
        expression=np.full(7, 1 / 7, np.float32),
        features=np.zeros(128, np.float32),
        geometry=np.zeros(len(GEOMETRY_NAMES), np.float32),
        embedding=embedding,
    )


def segment(seq: int, frames: list[tuple[float, list[FaceMeasurement]]]) -> SegmentFaces:
    analysed = tuple(AnalysedFrame(t, i, i == 0, tuple(faces)) for i, (t, faces) in enumerate(frames))
    return SegmentFaces("s", seq, (720, 1280), len(frames), analysed)


def ids_by_frame(tracks: FaceTracks, segments: list[SegmentFaces]) -> dict[float, list[int]]:
    by_time: dict[float, list[int]] = {}
    for seg in segments:
        for observation in tracks.update(seg).observations:
            by_time.setdefault(observation.time, []).append(observation.track_id)
    return by_time


def test_two_faces_crossing_keep_their_ids() -> None:
    tracks = FaceTracks(FaceSettings())
    # Face 0 moves right, face 1 moves left; they pass each other (overlapping) around t = 1 s.
    frames = [(t, [face_at(100 + 400 * t, 200, who=0), face_at(900 - 400 * t, 230, who=1)]) for t in np.arange(0, 2, 1 / 15)]
    seen = {}
    for observation in tracks.update(segment(0, frames)).observations:
        seen.setdefault(observation.track_id, []).append(observation.face.box[0])
    assert len(seen) == 2
    for xs in seen.values():
        steps = np.diff(xs)
        assert (steps > 0).all() or (steps < 0).all()  # each id keeps moving one way: no swap at the crossing


def test_blips_are_dropped_and_new_tracks_released_whole() -> None:
    tracks = FaceTracks(FaceSettings(track_confirm_frames=3))
    blip = segment(0, [(0.0, []), (0.1, [face_at(50, 50)]), (0.2, [])])
    assert tracks.update(blip).observations == ()
    # A face appearing in the last two frames of a segment is confirmed in the next one,
    # and its first two observations come out then, not lost.
    first = tracks.update(segment(1, [(1.0, []), (1.1, [face_at(300, 300)]), (1.2, [face_at(302, 300)])]))
    assert first.observations == ()
    second = tracks.update(segment(2, [(1.3, [face_at(304, 300)]), (1.4, [face_at(306, 300)])]))
    assert [o.time for o in second.observations] == [1.1, 1.2, 1.3, 1.4]
    assert len({o.track_id for o in second.observations}) == 1


def test_brief_occlusion_keeps_the_id_and_long_absence_ends_the_track() -> None:
    tracks = FaceTracks(FaceSettings(track_max_missing_seconds=1.0))
    visible = [(t, [face_at(200 + 20 * t, 200)]) for t in np.arange(0, 1, 0.1)]
    hidden = [(t, []) for t in np.arange(1, 1.6, 0.1)]
    back = [(t, [face_at(200 + 20 * t, 200)]) for t in np.arange(1.6, 2.5, 0.1)]
    by_time = ids_by_frame(tracks, [segment(0, visible), segment(1, hidden), segment(2, back)])
    assert len({i for ids in by_time.values() for i in ids}) == 1
    update = tracks.update(segment(3, [(t, []) for t in np.arange(2.5, 4.0, 0.1)]))
    assert len(update.ended) == 1 and tracks.tracks == {}


def test_identity_embedding_reidentifies_a_face_that_moved_while_hidden() -> None:
    alice, bob = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    tracks = FaceTracks(FaceSettings())
    first = [(t, [face_at(100, 100, 0, embedding=alice), face_at(240, 100, 1, embedding=bob)]) for t in np.arange(0, 0.5, 0.1)]
    # Both hide for 0.3 s and come back having swapped places: embeddings, not boxes, decide.
    swapped = [(t, [face_at(240, 110, 0, embedding=alice), face_at(100, 110, 1, embedding=bob)]) for t in np.arange(0.8, 1.2, 0.1)]
    observations = tracks.update(segment(0, first)).observations + tracks.update(segment(1, swapped)).observations
    id_of = {}
    for o in observations:
        id_of.setdefault(int(np.argmax(o.face.embedding)), set()).add(o.track_id)
    assert id_of[0] != id_of[1] and all(len(ids) == 1 for ids in id_of.values())


def test_history_is_bounded() -> None:
    tracks = FaceTracks(FaceSettings(track_history_seconds=2.0))
    tracks.update(segment(0, [(t, [face_at(100, 100)]) for t in np.arange(0, 10, 0.1)]))
    (track,) = tracks.tracks.values()
    history = tracks.history(track.track_id)
    assert history[-1].time - history[0].time <= 2.0 and len(history) <= 21


def test_micro_expression_is_found_and_macro_and_noise_are_not() -> None:
    times = np.arange(0, 6, 1 / 15)
    noise = RNG.normal(0, 0.2, times.shape)
    brief = noise + 3.0 * np.exp(-(((times - 2.0) / 0.1) ** 2))  # ~0.3 s bump, 3 sigma
    sustained = noise + 3.0 * ((times > 3.0) & (times < 5.0))  # a 2 s expression: not micro
    huge = noise + 12.0 * np.exp(-(((times - 2.0) / 0.1) ** 2))  # too large to be micro
    values = np.stack([brief, sustained, huge, noise], axis=1)
    events = find_micro_expressions(1, times, values, ("brief", "sustained", "huge", "noise"), 0.5, 2.0, 6.0)
    assert [e.measure for e in events] == ["brief"]
    (event,) = events
    assert event.onset < event.apex < event.offset and event.apex == pytest.approx(2.0, abs=0.07)
    assert event.offset - event.onset <= 0.5 and 2.0 < event.amplitude <= 3.2


def test_tracks_report_each_micro_expression_once() -> None:
    settings = FaceSettings()
    tracks = FaceTracks(settings)
    reported = []
    for seq, start in enumerate(np.arange(0, 6, 2.0)):
        frames = []
        for t in np.arange(start, start + 2, 1 / 15):
            face = face_at(300, 300)
            geometry = RNG.normal(0, 0.01, len(GEOMETRY_NAMES)).astype(np.float32)
            geometry[GEOMETRY_NAMES.index("brow_raise")] += 0.06 * np.exp(-(((t - 3.5) / 0.1) ** 2))
            frames.append((float(t), [FaceMeasurement(**{**face.__dict__, "geometry": geometry})]))
        reported.extend(tracks.update(segment(seq, frames)).micro_expressions)
    reported.extend(tracks.flush().micro_expressions)
    brow = [e for e in reported if e.measure == "brow_raise"]
    assert len(brow) == 1 and brow[0].apex == pytest.approx(3.5, abs=0.1)


def test_local_baseline_is_the_median_of_each_window() -> None:
    """Exactly np.median over each time's window: even and jittered frame times, windows from one frame to all of
    them, more rows than are sorted at once, and a NaN (which np.median passes on)."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 31, 33, 100):
        for times in (np.arange(n) / 15, np.sort(rng.uniform(0, n / 15, n))):
            values = rng.normal(size=(n, 9))
            values[n // 2, 4] = np.nan if n == 100 else values[n // 2, 4]
            for span in (0.01, 0.5, 2.0, 100.0):
                low = np.searchsorted(times, times - span / 2, side="left")
                high = np.searchsorted(times, times + span / 2, side="right")
                expected = np.array([np.median(values[low[i] : high[i]], axis=0) for i in range(n)])
                np.testing.assert_array_equal(local_baseline(times, values, span), expected)


def test_track_series_differences() -> None:
    tracks = FaceTracks(FaceSettings())
    observations = tracks.update(segment(0, [(t, [face_at(100, 100)]) for t in (0.0, 0.1, 0.2, 0.3)])).observations
    series = track_series(list(observations))
    assert series.times.tolist() == [0.0, 0.1, 0.2, 0.3]
    assert series.geometry_velocity.shape == (4, len(GEOMETRY_NAMES)) and series.feature_velocity.shape == (4,)
    assert series.feature_velocity[0] == 0


def test_running_stats_match_numpy() -> None:
    data = RNG.normal(3, 2, (200, 4))
    stats = RunningStats(4, floor=0.0)
    for row in data:
        stats.add(row)
    np.testing.assert_allclose(stats.mean, data.mean(axis=0))
    np.testing.assert_allclose(stats.std, data.std(axis=0, ddof=1))


def test_geometry_ignores_where_the_face_is_and_how_big() -> None:
    points = SHAPES[0] * 100
    moved = points.copy()
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved[:, :2] = points[:, :2] @ rotation.T * 1.7 + [250, 80]
    before, after = face_geometry(points, "mesh468", (720, 1280)), face_geometry(moved, "mesh468", (720, 1280))
    action_units = slice(0, len(GEOMETRY_NAMES) - 3)
    np.testing.assert_allclose(before[action_units], after[action_units], atol=1e-4)
    assert after[GEOMETRY_NAMES.index("roll")] - before[GEOMETRY_NAMES.index("roll")] == pytest.approx(20, abs=0.01)


def test_similarity_transform_recovers_a_known_one() -> None:
    angle, scale, shift = np.radians(-15), 2.5, np.array([30.0, -12.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = TEMPLATE_112.astype(np.float64)
    matrix = similarity_transform(source, source @ rotation.T * scale + shift)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-4)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-3)


def test_alignment_puts_the_keypoints_on_the_template() -> None:
    frame = np.zeros((300, 300, 3), np.uint8)
    keypoints = TEMPLATE_112 * 2 + 20
    for x, y in keypoints.astype(int):
        frame[y - 1 : y + 2, x - 1 : x + 2] = 255
    crop = align_faces(frame, [keypoints])[0]
    bright = np.argwhere(crop[:, :, 0] > 100)
    for x, y in TEMPLATE_112:
        assert np.min(np.hypot(bright[:, 1] - x, bright[:, 0] - y)) < 1.5
    assert align_faces(frame, []).shape == (0, 112, 112, 3)


def test_a_face_larger_than_its_grey_crop_is_warped_finer_then_area_averaged() -> None:
    frame = np.zeros((400, 400, 3), np.uint8)
    frame[:, ::2] = 255  # stripes 2 pixels a period: what a straight warp aliases most
    keypoints = template(64) * 3.3 + 40  # a face 3.3 frame pixels per crop pixel
    assert oversampling(keypoints, 64) == 4 and oversampling(template(64) * 20, 64) == MAX_OVERSAMPLING
    straight = cv2.cvtColor(align_faces(frame, [keypoints], size=64)[0], cv2.COLOR_RGB2GRAY)
    fine = cv2.cvtColor(align_faces(frame, [keypoints], size=256)[0], cv2.COLOR_RGB2GRAY)
    averaged = grey_faces(frame, [keypoints], 64)[0]
    np.testing.assert_array_equal(averaged, cv2.resize(fine, (64, 64), interpolation=cv2.INTER_AREA))
    assert np.abs(averaged - 127.5).mean() < np.abs(straight - 127.5).mean() / 2  # nearer the stripes' mean grey
    # a face no larger than the crop is warped as before, once
    small = template(64) * 0.8 + 10
    assert oversampling(small, 64) == 1
    np.testing.assert_array_equal(grey_faces(frame, [small], 64)[0],
                                  cv2.cvtColor(align_faces(frame, [small], size=64)[0], cv2.COLOR_RGB2GRAY))
    assert grey_faces(frame, [], 64).shape == (0, 64, 64)
