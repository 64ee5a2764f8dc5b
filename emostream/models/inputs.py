"""Model inputs: a batch of utterance bundles as padded tensors with modality masks.

Every modality may be missing for any utterance (audio-only calls, silent video,
no transcript): its mask is False and the model leaves its tokens out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import cv2
import numpy as np
import torch

from emostream.models.config import (
    FACE_FEATURES,
    PROSODY_FEATURES,
    SPEAKER_EMBEDDING,
    TEXT_EMBEDDING,
    EmotionConfig,
)
from emostream.perception.utterance import UtteranceBundle
from emostream.perception.voice.prosody import PROSODY_NAMES, Prosody

# Prosody statistics on comparable scales (about -1..1 for typical speech): (offset, scale) per field;
# f0_mean is taken in octaves from 150 Hz first.
PROSODY_SCALING = {
    "f0_mean": (0.0, 1.0),
    "f0_range": (6.0, 6.0),
    "f0_slope": (0.0, 6.0),
    "energy_mean": (-30.0, 10.0),
    "energy_range": (15.0, 10.0),
    "speaking_rate": (4.0, 2.0),
    "pause_count": (1.0, 2.0),
    "pause_seconds": (0.3, 0.5),
    "voiced_fraction": (0.5, 0.25),
    "jitter": (0.02, 0.02),
    "shimmer": (0.1, 0.1),
}
Z_CLIP = 5.0  # per-speaker z-scores beyond this are clipped


def prosody_vector(prosody: Prosody, z: dict[str, float]) -> np.ndarray:
    """Scaled prosody statistics and clipped per-speaker z-scores, shape = (PROSODY_FEATURES,); NaN becomes 0."""
    raw = []
    for name, value in zip(PROSODY_NAMES, prosody.as_array(), strict=True):
        if name == "f0_mean":
            value = math.log2(value / 150.0) if value > 0 else float("nan")
        offset, scale = PROSODY_SCALING[name]
        raw.append((value - offset) / scale)
    zs = [np.clip(z.get(name, float("nan")), -Z_CLIP, Z_CLIP) / 2 for name in PROSODY_NAMES]
    return np.nan_to_num(np.array(raw + zs, dtype=np.float32), nan=0.0)


def voice_vector(bundle: UtteranceBundle) -> np.ndarray | None:
    """Whisper embedding and voice embedding side by side, shape = (audio embedding + SPEAKER_EMBEDDING,); None without audio."""
    if bundle.audio_embedding is None:
        return None
    speaker = bundle.speaker_embedding if bundle.speaker_embedding is not None else np.zeros(SPEAKER_EMBEDDING, np.float32)
    return np.concatenate([bundle.audio_embedding, speaker]).astype(np.float32)


@dataclass
class ModelInputs:
    """A padded batch. B = utterances, T = face frames, F = thumbnails."""

    voice: torch.Tensor  # shape = (B, config.voice_features): Whisper embedding + voice embedding (voice_vector)
    voice_z: torch.Tensor  # shape = (B, config.voice_features): the same in the speaker's standard deviations (0 if unknown)
    voice_z_known: torch.Tensor  # shape = (B,) bool: the speaker's statistics were known
    prosody: torch.Tensor  # shape = (B, PROSODY_FEATURES): prosody_vector
    has_audio: torch.Tensor  # shape = (B,) bool
    face: torch.Tensor  # shape = (B, T, FACE_FEATURES), the speaking face per analysed frame
    face_times: torch.Tensor  # shape = (B, T), seconds from the utterance start
    face_mask: torch.Tensor  # shape = (B, T) bool, True where a frame is present
    frames: torch.Tensor  # shape = (B, F, 3, S, S) float in [0, 1], whole-frame thumbnails
    frame_times: torch.Tensor  # shape = (B, F), seconds from the utterance start
    frame_mask: torch.Tensor  # shape = (B, F) bool
    text: torch.Tensor  # shape = (B, TEXT_EMBEDDING), sentence embedding of the transcript
    has_text: torch.Tensor  # shape = (B,) bool
    expression: torch.Tensor  # shape = (B, 7), the face expert's answer: face_evidence's FER7 probabilities (zeros if none)
    raw_audio: torch.Tensor | None = None  # shape = (B, N) at 16 kHz, only for presets with an audio encoder
    raw_audio_mask: torch.Tensor | None = None  # shape = (B, N) bool

    def to(self, device: torch.device | str) -> ModelInputs:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return ModelInputs(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})

    def __len__(self) -> int:
        return self.voice.shape[0]

    @staticmethod
    def concat(parts: list[ModelInputs]) -> ModelInputs:
        """Batches padded alike (the same T, F and N), one after the other: one forward pass for all."""
        def joined(name: str) -> torch.Tensor | None:
            values = [getattr(part, name) for part in parts]
            return None if values[0] is None else torch.cat(values)

        return ModelInputs(**{f.name: joined(f.name) for f in fields(ModelInputs)})


def check_audio_width(bundle: UtteranceBundle, config: EmotionConfig) -> None:
    """A bundle's Whisper embedding (if any) must have the width the model reads; the error names the setting."""
    width = len(bundle.audio_embedding) if bundle.audio_embedding is not None else config.audio_embedding
    if width != config.audio_embedding:
        raise ValueError(
            f"utterance {bundle.utterance_id!r}: its Whisper embedding has {width} values, the model reads {config.audio_embedding} "
            f"(768: voice.audio_features last_layer, tiny.en; 3,840: every_layer; 7,168: every_layer with voice.feature_model_dir "
            "Whisper base); set voice.audio_features (and feature_model_dir) to what the model was trained on, or extract the "
            "features again with them"
        )


def _evenly(count: int, limit: int) -> np.ndarray:
    return np.linspace(0, count - 1, limit).round().astype(int) if count > limit else np.arange(count)


def collate(
    bundles: list[UtteranceBundle],
    config: EmotionConfig,
    raw_audio: bool = False,
    speaker_z: list[np.ndarray | None] | None = None,
) -> ModelInputs:
    """Stack bundles into padded tensors (any mix of present and missing modalities).

    speaker_z : per bundle, its voice_vector in its speaker's standard deviations, or None when the
    speaker's statistics are not known yet (the scorer's stream context keeps them).
    """
    batch = len(bundles)
    face_lengths = [min(len(b.face.times), config.max_face_frames) if b.face is not None else 0 for b in bundles]
    frame_lengths = [min(len(b.frames), config.max_frames) for b in bundles]
    t, f, size = max(face_lengths + [1]), max(frame_lengths + [1]), config.frame_size
    voice = np.zeros((batch, config.voice_features), np.float32)
    voice_z = np.zeros((batch, config.voice_features), np.float32)
    voice_z_known = np.zeros(batch, bool)
    prosody = np.zeros((batch, PROSODY_FEATURES), np.float32)
    face = np.zeros((batch, t, FACE_FEATURES), np.float32)
    face_times = np.zeros((batch, t), np.float32)
    face_mask = np.zeros((batch, t), bool)
    frames = np.zeros((batch, f, 3, size, size), np.float32)
    frame_times = np.zeros((batch, f), np.float32)
    frame_mask = np.zeros((batch, f), bool)
    text = np.zeros((batch, TEXT_EMBEDDING), np.float32)
    expression = np.zeros((batch, 7), np.float32)
    has_audio = np.zeros(batch, bool)
    has_text = np.zeros(batch, bool)
    for i, bundle in enumerate(bundles):
        if len(bundle.audio) or bundle.audio_embedding is not None:  # cached features carry no raw audio
            has_audio[i] = True
            vector = voice_vector(bundle)
            if vector is not None:
                check_audio_width(bundle, config)
                voice[i] = vector
            z = speaker_z[i] if speaker_z is not None else None
            if z is not None:
                voice_z[i] = np.clip(z, -Z_CLIP, Z_CLIP)
                voice_z_known[i] = True
            prosody[i] = prosody_vector(bundle.prosody, bundle.prosody_z)
        if bundle.face is not None and face_lengths[i]:
            keep = _evenly(len(bundle.face.times), config.max_face_frames)
            slice_ = bundle.face
            face[i, : len(keep)] = np.concatenate(
                [slice_.features[keep], slice_.expression[keep], np.clip(slice_.geometry_z[keep], -Z_CLIP, Z_CLIP) / 2], axis=1
            )
            face_times[i, : len(keep)] = slice_.times[keep] - bundle.start
            face_mask[i, : len(keep)] = True
        if (evidence := bundle.face_evidence) is not None:
            expression[i] = evidence.probabilities
        for j, k in enumerate(_evenly(len(bundle.frames), config.max_frames)):
            thumbnail = bundle.frames[k]
            image = cv2.resize(thumbnail.image, (size, size), interpolation=cv2.INTER_AREA)
            frames[i, j] = image.transpose(2, 0, 1) / 255.0
            frame_times[i, j] = thumbnail.time - bundle.start
            frame_mask[i, j] = True
        if bundle.text_embedding is not None and bundle.transcript:
            text[i] = bundle.text_embedding
            has_text[i] = True
    inputs = ModelInputs(
        voice=torch.from_numpy(voice),
        voice_z=torch.from_numpy(voice_z),
        voice_z_known=torch.from_numpy(voice_z_known),
        prosody=torch.from_numpy(prosody),
        has_audio=torch.from_numpy(has_audio),
        face=torch.from_numpy(face),
        face_times=torch.from_numpy(face_times),
        face_mask=torch.from_numpy(face_mask),
        frames=torch.from_numpy(frames),
        frame_times=torch.from_numpy(frame_times),
        frame_mask=torch.from_numpy(frame_mask),
        text=torch.from_numpy(text),
        has_text=torch.from_numpy(has_text),
        expression=torch.from_numpy(expression),
    )
    if raw_audio:
        longest = max([len(b.audio) for b in bundles] + [1])
        samples = np.zeros((batch, longest), np.float32)
        mask = np.zeros((batch, longest), bool)
        for i, bundle in enumerate(bundles):
            samples[i, : len(bundle.audio)] = bundle.audio
            mask[i, : len(bundle.audio)] = True
        inputs.raw_audio, inputs.raw_audio_mask = torch.from_numpy(samples), torch.from_numpy(mask)
    return inputs
