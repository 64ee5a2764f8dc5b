"""Per-stream face tracks: stable ids across frames and segments, per-track normalisation and dynamics.

This is the stateful, per-stream half of face perception. Each analysed frame's
faces are matched to the stream's tracks by overlap with where each track is
expected to be (constant-velocity prediction) and by appearance (identity
embedding when the backend has one, else the face's landmark shape), so faces
that cross or hide for a moment keep their ids. A new track is only confirmed
after `track_confirm_frames` analysed frames in a row: a detector firing on a
single frame never becomes a track. Observations of a new track are held back
until it is confirmed and then released with it, so nothing is lost.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from emostream.labels import FER7
from emostream.perception.faces.analyze import box_iou
from emostream.perception.faces.dynamics import find_micro_expressions
from emostream.perception.faces.geometry import GEOMETRY_NAMES
from emostream.perception.faces.types import FaceMeasurement, FaceObservation, MicroExpression, SegmentFaces, TrackUpdate
from emostream.perception.running_stats import RunningStats
from emostream.settings import FaceSettings

NEUTRAL = FER7.index("neutral")
MIN_IDENTITY = 0.3  # identity-embedding similarity below this never matches, however well the boxes overlap
REIDENTIFY_APPEARANCE = 0.6  # without overlap, a face this similar to a recently lost track continues it
REIDENTIFY_DISTANCE = 1.5  # ... when it is within this many face widths of where the track was expected
SHAPE_SCALE = 0.05  # landmark-shape distance (eye-distance units) that counts as "quite different"
# Smallest standard deviations used for z-scores: landmark noise (eye-distance units), pose (degrees), expression.
STAT_FLOORS = np.array([0.01] * (len(GEOMETRY_NAMES) - 3) + [1.0] * 3 + [0.02])
WARM_UP_FRAMES = 15  # analysed frames before a track's normalisation is trusted for micro-expressions
MICRO_MEASURES = (*GEOMETRY_NAMES[:-3], "expression")  # pose is not an expression


def appearance_similarity(track: Track, face: FaceMeasurement) -> float:
    """In [0, 1]: cosine of identity embeddings when both have one, else landmark-shape closeness."""
    if track.embedding is not None and face.embedding is not None:
        return float(max(np.dot(track.embedding, face.embedding), 0.0))
    distance = float(np.sqrt(np.mean((track.shape - face.shape) ** 2)))
    return float(np.exp(-distance / SHAPE_SCALE))


@dataclass
class Track:
    """One face on one stream."""

    track_id: int
    box: np.ndarray  # last seen box
    last_time: float
    shape: np.ndarray  # running landmark-shape descriptor
    embedding: np.ndarray | None
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # box change per second
    hits: int = 1  # analysed frames with this face, in a row while unconfirmed
    confirmed: bool = False
    pending: list[FaceObservation] = field(default_factory=list)  # held until confirmed
    stats: RunningStats = field(default_factory=lambda: RunningStats(len(GEOMETRY_NAMES) + 1, STAT_FLOORS))
    history: deque[FaceObservation] = field(default_factory=deque)
    checked_until: float = float("-inf")  # micro-expressions are searched after this time

    def predicted_box(self, at: float) -> np.ndarray:
        return self.box + self.velocity * (at - self.last_time)


class FaceTracks:
    """The face tracks of one stream; feed it each segment's analysis in stream order."""

    def __init__(self, settings: FaceSettings) -> None:
        self.settings = settings
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def update(self, segment: SegmentFaces) -> TrackUpdate:
        released: list[FaceObservation] = []
        ended: list[int] = []
        for frame in segment.analysed:
            ended.extend(self._end_missing(frame.time))
            for track, face in self._match(frame.time, list(frame.faces)):
                released.extend(self._observe(track, frame.time, face))
            # An unconfirmed track must be seen on every analysed frame until it is confirmed.
            for track in list(self.tracks.values()):
                if not track.confirmed and track.last_time < frame.time:
                    del self.tracks[track.track_id]
        micro = [event for track in self.tracks.values() if track.confirmed for event in self._micro(track, final=False)]
        return TrackUpdate(tuple(sorted(released, key=lambda o: o.time)), tuple(micro), tuple(ended))

    def flush(self) -> TrackUpdate:
        """End every track (end of stream or idle timeout)."""
        micro = [event for track in self.tracks.values() if track.confirmed for event in self._micro(track, final=True)]
        ended = tuple(t.track_id for t in self.tracks.values() if t.confirmed)
        self.tracks.clear()
        return TrackUpdate((), tuple(micro), ended)

    def history(self, track_id: int) -> list[FaceObservation]:
        """The kept observations of a live track (the last `track_history_seconds`), oldest first."""
        track = self.tracks.get(track_id)
        return list(track.history) if track else []

    def _end_missing(self, now: float) -> list[int]:
        gone = [t for t in self.tracks.values() if now - t.last_time > self.settings.track_max_missing_seconds]
        for track in gone:
            del self.tracks[track.track_id]
        return [t.track_id for t in gone if t.confirmed]

    def _match(self, now: float, faces: list[FaceMeasurement]) -> list[tuple[Track, FaceMeasurement]]:
        """Pair faces with tracks, best pairs first; unpaired faces start new tracks."""
        candidates = []
        for track in self.tracks.values():
            expected = track.predicted_box(now)
            for j, face in enumerate(faces):
                overlap = box_iou(expected, face.box)
                appearance = appearance_similarity(track, face)
                if track.embedding is not None and face.embedding is not None and appearance < MIN_IDENTITY:
                    continue
                if overlap >= self.settings.track_min_iou:
                    candidates.append((overlap + appearance, track, j))
                elif appearance >= REIDENTIFY_APPEARANCE and self._near(expected, face.box):
                    candidates.append((appearance, track, j))
        pairs, used_tracks, used_faces = [], set(), set()
        for _, track, j in sorted(candidates, key=lambda c: -c[0]):
            if track.track_id in used_tracks or j in used_faces:
                continue
            pairs.append((track, faces[j]))
            used_tracks.add(track.track_id)
            used_faces.add(j)
        for j, face in enumerate(faces):
            if j not in used_faces:
                pairs.append((self._start(now, face), face))
        return pairs

    @staticmethod
    def _near(expected: np.ndarray, box: np.ndarray) -> bool:
        width = max(expected[2] - expected[0], 1.0)
        offset = np.hypot((box[0] + box[2] - expected[0] - expected[2]) / 2, (box[1] + box[3] - expected[1] - expected[3]) / 2)
        return bool(offset <= REIDENTIFY_DISTANCE * width)

    def _start(self, now: float, face: FaceMeasurement) -> Track:
        track = Track(self._next_id, face.box, now, face.shape, face.embedding, hits=0)
        self._next_id += 1
        self.tracks[track.track_id] = track
        return track

    def _observe(self, track: Track, now: float, face: FaceMeasurement) -> list[FaceObservation]:
        if track.hits and now > track.last_time:
            step = (face.box - track.box) / (now - track.last_time)
            track.velocity = 0.5 * track.velocity + 0.5 * step
        track.box, track.last_time = face.box, now
        track.hits += 1
        track.shape = 0.9 * track.shape + 0.1 * face.shape if track.hits > 1 else track.shape
        if face.embedding is not None:
            mixed = face.embedding if track.embedding is None else 0.9 * track.embedding + 0.1 * face.embedding
            track.embedding = mixed / (np.linalg.norm(mixed) or 1.0)
        # "expression": how far from neutral the face is (1 - P(neutral)).
        values = np.append(face.geometry, 1.0 - face.expression[NEUTRAL])
        track.stats.add(values)
        z = track.stats.z(values)
        observation = FaceObservation(track.track_id, now, face, z[: len(GEOMETRY_NAMES)], float(z[-1]))
        self._remember(track, observation)
        if track.confirmed:
            return [observation]
        track.pending.append(observation)
        if track.hits >= self.settings.track_confirm_frames:
            track.confirmed = True
            released, track.pending = track.pending, []
            return released
        return []

    def _remember(self, track: Track, observation: FaceObservation) -> None:
        track.history.append(observation)
        while track.history and observation.time - track.history[0].time > self.settings.track_history_seconds:
            track.history.popleft()

    def _micro(self, track: Track, final: bool) -> list[MicroExpression]:
        settings = self.settings
        if track.stats.count < WARM_UP_FRAMES:
            return []  # the track's own standard deviations are not known yet
        observations = [o for o in track.history if o.time > track.checked_until - 2 * settings.micro_max_seconds]
        if len(observations) < 3:
            return []
        times = np.array([o.time for o in observations])
        values = np.array([[*o.geometry_z[: len(MICRO_MEASURES) - 1], o.expression_z] for o in observations])
        events = find_micro_expressions(
            track.track_id, times, values, MICRO_MEASURES,
            settings.micro_max_seconds, settings.micro_min_sigma, settings.micro_max_sigma,
        )
        # Report each event once: only those whose offset is past what was checked before, and,
        # unless the track is over, not so close to the end that it may still be growing.
        horizon = times[-1] if final else times[-1] - settings.micro_max_seconds
        fresh = [e for e in events if track.checked_until < e.offset <= horizon]
        track.checked_until = max(track.checked_until, horizon)
        return fresh
