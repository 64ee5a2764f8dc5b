"""Utterance bundles with random features of the right shapes, for model tests that need no perception."""

from __future__ import annotations

import numpy as np

from emostream.contracts import utterance_id
from emostream.perception.faces.geometry import GEOMETRY_NAMES
from emostream.perception.utterance import FaceSlice, Thumbnail, UtteranceBundle
from emostream.perception.voice.prosody import PROSODY_NAMES, Prosody


def random_bundle(stream: str = "s", start: float = 0.0, seconds: float = 2.0, seed: int = 0, audio: bool = True,
                  face: bool = True, frames: bool = True, text: bool = True, face_frames: int = 20,
                  audio_width: int = 768) -> UtteranceBundle:
    rng = np.random.default_rng(seed)
    prosody = Prosody(*[float(v) for v in rng.uniform(0.5, 2.0, len(PROSODY_NAMES))])
    prosody = Prosody(**{**prosody.__dict__, "f0_mean": 120.0 + 80 * rng.random(), "pause_count": int(rng.integers(0, 3))})
    slice_ = None
    if face:
        expression = rng.dirichlet(np.ones(7), face_frames).astype(np.float32)
        slice_ = FaceSlice(
            track_id=1, active_speaker_score=0.5, times=start + np.linspace(0, seconds, face_frames),
            expression=expression, features=rng.normal(0, 1, (face_frames, 128)).astype(np.float32),
            geometry=rng.normal(0, 1, (face_frames, len(GEOMETRY_NAMES))).astype(np.float32),
            geometry_z=rng.normal(0, 1, (face_frames, len(GEOMETRY_NAMES))).astype(np.float32),
        )
    thumbnails = tuple(
        Thumbnail(start + k * seconds / 3, rng.integers(0, 255, (72, 128, 3), dtype=np.uint8)) for k in range(3)
    ) if frames else ()
    samples = rng.normal(0, 0.1, int(seconds * 16000)).astype(np.float32) if audio else np.zeros(0, np.float32)
    return UtteranceBundle(
        stream_id=stream, utterance_id=utterance_id(stream, "speaker-1", start), speaker_id="speaker-1", role=None, channel=0,
        start=start, end=start + seconds, audio=samples, audio_start=start, prosody=prosody,
        prosody_z={name: float(rng.normal()) for name in PROSODY_NAMES},
        speaker_embedding=rng.normal(0, 0.06, 256).astype(np.float32) if audio else None, speaker_similarity=0.0,
        face=slice_, listeners=(), frames=thumbnails, has_video=face or frames,
        transcript="I can't believe you did that" if text else None,
        audio_embedding=rng.normal(0, 1, audio_width).astype(np.float32) if audio else None,
        text_embedding=rng.normal(0, 0.05, 384).astype(np.float32) if text else None,
    )
