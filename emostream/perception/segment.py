"""Per-segment perception: the work that needs nothing but the segment itself.

Faces (detection, mesh, expression, geometry), prosody frames per audio channel
and a few whole-frame thumbnails. It can run on any worker, for segments in any
order (the live job runs it in Ray Data); the per-stream session (session.py)
stitches its output into utterances.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from emostream.media.decode import DecodedSegment, analysed_frame_indices
from emostream.perception.faces.analyze import FaceAnalyzer
from emostream.perception.faces.types import SegmentFaces
from emostream.perception.utterance import Thumbnail
from emostream.perception.voice.prosody import ProsodyFrames, prosody_frames
from emostream.settings import Settings


@dataclass(frozen=True)
class PerceivedSegment:
    """One segment after per-segment perception; the full-size frames are gone."""

    stream_id: str
    seq: int
    start: float  # stream seconds
    end: float
    end_of_stream: bool
    channels: tuple[str, ...]  # role of each audio channel, from the segment headers (may be empty)
    audio: np.ndarray  # shape = (n_channels, n_samples) float32 at 16 kHz
    audio_start: float  # stream seconds of audio[:, 0]
    prosody: tuple[ProsodyFrames, ...]  # one per audio channel
    faces: SegmentFaces | None  # None when the segment has no video
    thumbnails: tuple[Thumbnail, ...]
    timings: dict[str, float]  # seconds per stage

    @property
    def has_video(self) -> bool:
        return self.faces is not None


def thumbnails(segment: DecodedSegment, per_second: float, size: int) -> tuple[Thumbnail, ...]:
    """Whole frames downscaled to `size` on the longer side, `per_second` of them on the stream clock (a slot that
    began in the segment before had its frame there: 0.5 s segments once doubled the thumbnails of a 1/s rate)."""
    if per_second <= 0 or not len(segment.frames):
        return ()
    height, width = segment.frames.shape[1:3]
    scale = size / max(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return tuple(
        Thumbnail(float(segment.frame_times[i]), cv2.resize(segment.frames[i], target, interpolation=cv2.INTER_AREA))
        for i in analysed_frame_indices(segment.frame_times, per_second, segment.frame_step)
    )


class SegmentPerceiver:
    """Runs the per-segment models. Safe to call from several threads (Serve runs a deployment's sync methods
    in a thread pool): the face models, whose TFLite interpreters are not thread-safe, run one segment at a time."""

    def __init__(self, settings: Settings, faces: FaceAnalyzer | None = None) -> None:
        self.settings = settings
        self._faces = faces
        self._faces_ready = faces is not None
        self._faces_lock = threading.Lock()  # one segment in the face models at a time, and one loading them

    @property
    def frame_rates(self) -> tuple[float, ...]:
        """The frame rates it looks at (faces, thumbnails): a decoder needs to convert only those frames
        (`decode_segment`'s frame_rates; 0 is every frame)."""
        thumbnails = self.settings.voice.global_frames_per_second
        return (self.settings.faces.analysis_fps, *((thumbnails,) if thumbnails > 0 else ()))

    @property
    def faces(self) -> FaceAnalyzer:
        with self._faces_lock:
            return self._loaded_faces()

    def _loaded_faces(self) -> FaceAnalyzer:
        if not self._faces_ready:  # loaded on the first video segment: audio-only streams never pay for it
            self._faces, self._faces_ready = FaceAnalyzer(self.settings.faces), True
        assert self._faces is not None
        return self._faces

    def __call__(self, segment: DecodedSegment) -> PerceivedSegment:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        faces = None
        if len(segment.frames):
            with self._faces_lock:
                faces = self._loaded_faces().analyze(segment)
        timings["faces"] = time.perf_counter() - started
        started = time.perf_counter()
        prosody = tuple(prosody_frames(channel, segment.audio_start) for channel in segment.audio)
        timings["prosody"] = time.perf_counter() - started
        voice = self.settings.voice
        return PerceivedSegment(
            stream_id=segment.stream_id,
            seq=segment.seq,
            start=segment.start,
            end=segment.end,
            end_of_stream=segment.end_of_stream,
            channels=tuple(segment.channels),
            audio=segment.audio,
            audio_start=segment.audio_start,
            prosody=prosody,
            faces=faces,
            thumbnails=thumbnails(segment, voice.global_frames_per_second, voice.global_frame_size),
            timings=timings,
        )
