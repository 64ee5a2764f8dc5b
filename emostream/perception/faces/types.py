"""What face analysis produces: detections, landmarks, per-frame and per-track records.

Coordinates are pixels of the decoded frame, x to the right and y down.
Keypoints always come in one order, whatever the backend:
KEYPOINT_NAMES (the eye and mouth corner on the image's left first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

KEYPOINT_NAMES = ("eye_image_left", "eye_image_right", "nose_tip", "mouth_image_left", "mouth_image_right")
LandmarkScheme = Literal["mesh468"]  # the only layout today; geometry.SCHEMES maps each to landmark roles


def short_side(box: np.ndarray) -> float:
    """A face box's (x0, y0, x1, y1) shorter side in pixels: how large the face is (`faces.min_face_pixels`)."""
    return float(min(box[2] - box[0], box[3] - box[1]))


@dataclass(frozen=True)
class Detection:
    """One face found by a detector in one frame."""

    box: np.ndarray  # shape = (4,), float32 x0, y0, x1, y1 in pixels
    score: float  # detector confidence in [0, 1]
    keypoints: np.ndarray  # shape = (5, 2), float32 pixels, in KEYPOINT_NAMES order
    embedding: np.ndarray | None = None  # shape = (d,), L2-normalised identity embedding when the backend has one


@dataclass(frozen=True)
class Landmarks:
    """A dense landmark set for one face in one frame."""

    points: np.ndarray  # shape = (n_points, 3), float32: x, y in pixels, z in the same scale (depth, relative)
    scheme: LandmarkScheme  # which index layout `points` follows
    keypoints: np.ndarray  # shape = (5, 2), float32 pixels, KEYPOINT_NAMES order, derived from `points`

    @property
    def box(self) -> np.ndarray:
        """The tight box around the points, shape = (4,)."""
        xy = self.points[:, :2]
        return np.concatenate([xy.min(axis=0), xy.max(axis=0)]).astype(np.float32)


class FaceBackend(Protocol):
    """A face detector with a landmark model; one instance serves one thread at a time."""

    name: str

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Find faces in an RGB frame, shape = (height, width, 3) uint8; best first."""
        ...

    def landmarks(self, frame: np.ndarray, faces: list[Detection | Landmarks]) -> list[Landmarks | None]:
        """Dense landmarks for each face, located by its box and keypoints (a detection, or the
        same face's landmarks on an earlier frame); None where there is no face any more."""
        ...


@dataclass(frozen=True)
class FaceMeasurement:
    """One face in one analysed frame, before tracking."""

    box: np.ndarray  # shape = (4,), pixels
    score: float  # detector score of the detection this face came from
    shape: np.ndarray  # shape = (14,), float32: the rigid landmarks in the face's own frame (geometry.rigid_shape)
    expression: np.ndarray  # shape = (7,), FER class probabilities (emostream.labels.FER7 order)
    features: np.ndarray  # shape = (d,), the expression network's penultimate features
    geometry: np.ndarray  # shape = (len(GEOMETRY_NAMES),), action-unit-like measures and head pose
    embedding: np.ndarray | None = None  # identity embedding, when the backend has a recognition model
    flow: float | None = None  # mean optical-flow magnitude inside the aligned face since the last analysed frame (pixels of a 64x64 crop)
    crop: np.ndarray | None = None  # shape = (112, 112, 3) uint8 aligned face, only when crops are asked for
    # The whole landmark set, only when `faces.landmarks` asks for it: nothing downstream reads it (box, shape and
    # geometry are measured from it here), and a 468-point mesh per face and frame was ~40% of an AV segment's bytes.
    landmarks: Landmarks | None = None


@dataclass(frozen=True)
class AnalysedFrame:
    """The faces in one analysed frame of a segment."""

    time: float  # stream seconds
    index: int  # frame index within its segment
    detected: bool  # a full detection ran on this frame (otherwise faces were followed from the previous one)
    faces: tuple[FaceMeasurement, ...] = field(default=())


@dataclass(frozen=True)
class SegmentFaces:
    """Face analysis of one segment: the per-segment output, before stream-level tracking."""

    stream_id: str
    seq: int
    frame_size: tuple[int, int]  # (height, width) of the analysed frames
    frame_count: int  # frames in the segment
    analysed: tuple[AnalysedFrame, ...]  # the frames that were analysed, in time order


@dataclass(frozen=True)
class FaceObservation:
    """One tracked face in one analysed frame."""

    track_id: int  # stable for the stream
    time: float  # stream seconds
    face: FaceMeasurement
    geometry_z: np.ndarray  # shape = (len(GEOMETRY_NAMES),), geometry in this track's standard deviations from its running mean
    expression_z: float  # how far from neutral (1 - P(neutral)), in this track's standard deviations


@dataclass(frozen=True)
class MicroExpression:
    """A brief, low-amplitude onset-apex-offset movement on one track."""

    track_id: int
    measure: str  # the geometry measure that moved, or "expression" for the expression probabilities
    onset: float  # stream seconds
    apex: float
    offset: float
    amplitude: float  # signed peak, in the track's standard deviations


@dataclass(frozen=True)
class TrackUpdate:
    """What one segment added to a stream's face tracks."""

    observations: tuple[FaceObservation, ...]  # newly released, in time order (a new track's first frames come once it is confirmed)
    micro_expressions: tuple[MicroExpression, ...]
    ended: tuple[int, ...]  # tracks that ended (left, or unseen for too long)
