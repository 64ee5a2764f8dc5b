"""Cached feature rows -> model batches, with per-speaker normalisation as the live scorer does it.

The live scorer z-scores each utterance's voice features and prosody against
the running statistics of its speaker in its stream. Training has every
utterance of a speaker at hand and uses all of them (like a completed call in
backfill); `unknown_fraction` of the examples are shown with the statistics
unknown, as a live stream's first utterances are, and `early_fraction` with
statistics from only a few of the speaker's other utterances, as the next ones
are (`SpeakerPools`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostream.labels import expected_valence_arousal
from emostream.models.config import EmotionConfig
from emostream.models.inputs import ModelInputs, collate, voice_vector
from emostream.models.instructions import Answer, labelled_answer
from emostream.perception.utterance import UtteranceBundle, bundle_from_features
from emostream.perception.voice.prosody import PROSODY_NAMES, SpeakerProsodyStats
from emostream.training.datasets.corpora import corpus_classes

STD_FLOOR = 1e-3
EARLY_MOST = 60  # early statistics come from 2 to this many other utterances of the speaker (a RAVDESS actor has 60)


@dataclass(frozen=True)
class Sample:
    """One training or evaluation example: its features and its targets."""

    bundle: UtteranceBundle
    speaker_z: np.ndarray | None  # voice features in the speaker's standard deviations
    label: int  # index in the model's labels, -1 when unlabelled
    valence: float  # NaN when unknown
    arousal: float
    key: str
    variant: int
    target_text: str | None = None  # the LLM's answer in its fixed shape (models/instructions.py), None: nothing to learn
    classes: tuple[bool, ...] | None = None  # per model label, whether the example's corpus has it (None: every one)
    piece: int = 0  # its place among the utterances the live path cut from the variant (features.Augment.live_cut)
    # the earlier utterances of its speaker that speaker_z was taken over, in a call (call_statistics); None: all of the
    # speaker's. Scoring weighs the speaker-normalised view by it (score.speaker_view_weight); training does not.
    speaker_count: int | None = None


def samples_from_rows(rows: list[dict[str, Any]], labels: list[str], label_set: str) -> list[Sample]:
    """Per-speaker normalised samples (statistics over each speaker's rows, original and augmented)."""
    voices: dict[str, list[np.ndarray]] = defaultdict(list)
    prosodies: dict[str, list[np.ndarray]] = defaultdict(list)
    bundles = [bundle_from_features(row) for row in rows]
    for row, bundle in zip(rows, bundles, strict=True):
        vector = voice_vector(bundle)
        if vector is not None:
            voices[row["speaker"]].append(vector)
        prosodies[row["speaker"]].append(bundle.prosody.as_array())
    voice_stats = {s: (np.mean(v, axis=0), np.maximum(np.std(v, axis=0), STD_FLOOR)) for s, v in voices.items() if len(v) >= 2}
    prosody_stats = {s: (np.nanmean(p, axis=0), np.nanstd(p, axis=0)) for s, p in prosodies.items() if len(p) >= 2}
    samples = []
    for row, bundle in zip(rows, bundles, strict=True):
        speaker = row["speaker"]
        z = None
        vector = voice_vector(bundle)
        if vector is not None and speaker in voice_stats:
            mean, std = voice_stats[speaker]
            z = (vector - mean) / std
        if speaker in prosody_stats:
            mean, std = prosody_stats[speaker]
            values = (bundle.prosody.as_array() - mean) / np.where(std > 0, std, np.nan)
            bundle = replace(bundle, prosody_z={n: float(v) for n, v in zip(PROSODY_NAMES, values, strict=True)})
        label = labels.index(row["label"]) if row.get("label") in labels else -1
        valence, arousal = row.get("valence"), row.get("arousal")
        if (valence is None or arousal is None) and label >= 0:  # from the label's place on the circumplex
            one_hot = np.eye(len(labels))[label]
            valence, arousal = (float(v) for v in expected_valence_arousal(one_hot, label_set))
        answer = target_answer(row, labels[label] if label >= 0 else None, label_set, bundle)
        samples.append(Sample(bundle, z, label, float("nan") if valence is None else float(valence),
                              float("nan") if arousal is None else float(arousal), row["key"], int(row["variant"]),
                              answer.text() if answer else None, corpus_classes(row.get("dataset") or "", label_set),
                              int(row.get("piece") or 0)))
    return samples


def target_answer(row: dict[str, Any], label: str | None, label_set: str, bundle: UtteranceBundle) -> Answer | None:
    """What the LLM should answer for a feature row: a caption's own words and explanation (MER-OV, EMER), else a
    labelled clip's lexicon words and its measured cues (`bundle` carries its speaker-normalised prosody); None when
    the row has neither a caption nor a label."""
    from emostream.training.datasets.ravdess import ravdess_intensity  # noqa: PLC0415

    intensity = ravdess_intensity(Path(row["media"])) if row.get("dataset") == "ravdess" else "unknown"
    if row.get("explanation"):
        return Answer(label or "unknown", intensity, tuple(row.get("open_vocabulary") or ()), row["explanation"])
    if label is None:
        return None
    return labelled_answer(label, label_set, intensity, bundle)


class SpeakerPools:
    """Every training speaker's voice features, to z-score an utterance against a few of the others, as a live
    stream's running statistics do early on (noisier than the statistics over a whole call)."""

    def __init__(self, samples: list[Sample], floor: np.ndarray) -> None:
        grouped: dict[str, list[np.ndarray]] = defaultdict(list)
        for sample in samples:
            if (vector := voice_vector(sample.bundle)) is not None:
                grouped[sample.bundle.speaker_id].append(vector)
        self.vectors = {speaker: np.stack(vectors) for speaker, vectors in grouped.items()}
        self.floor = floor  # smallest standard deviation per feature, as the scorer's (score.speaker_floor)

    def early_z(self, sample: Sample, rng: np.random.Generator) -> np.ndarray | None:
        """The sample's voice features in the standard deviations of 2..EARLY_MOST other utterances of its speaker."""
        vector = voice_vector(sample.bundle)
        pool = self.vectors.get(sample.bundle.speaker_id)
        if vector is None or pool is None or len(pool) < 4:
            return sample.speaker_z
        others = pool[~np.all(pool == vector, axis=1)]
        count = int(rng.integers(2, min(EARLY_MOST, len(others)) + 1))
        seen = others[rng.choice(len(others), count, replace=False)]
        return ((vector - seen.mean(axis=0)) / np.maximum(seen.std(axis=0, ddof=1), self.floor)).astype(np.float32)


def call_statistics(samples: list[Sample], floor: np.ndarray, turns: int) -> list[Sample]:
    """The samples with the speaker statistics the live path would have for them in a call.

    Each speaker's clips of one variant (the recorded ones, each augmented or telephone copy apart: a call is on
    one line) are put in a fixed pseudo-random order (by a hash of the clip's key: sorted keys would put a
    corpus's clips of one emotion together) and dealt into calls of `turns` clips; a clip's utterances (its
    live-cut pieces, in order) follow each other. Each utterance is z-scored against the utterances before it in
    its call only, by the live path's own statistics: the scorer's `StreamContexts.speaker_z` for the voice
    features (none before two utterances; `floor` as the scorer's `speaker_floor`) and the session's
    `SpeakerProsodyStats` for prosody. So the first utterances of every call train without statistics, and the
    next ones with a few, as in a live stream. Each sample also records how many utterances its statistics
    came from (`speaker_count`), which scoring reads (`evaluate.predict`) and training does not.
    """
    from emostream.models.score import StreamContexts  # noqa: PLC0415

    def order(index: int) -> tuple[str, int]:
        return hashlib.sha1(samples[index].key.encode()).hexdigest(), samples[index].piece

    streams: dict[tuple[str, int], list[int]] = defaultdict(list)
    for index in sorted(range(len(samples)), key=order):
        streams[(samples[index].bundle.speaker_id, samples[index].variant)].append(index)
    contexts = StreamContexts()
    out = list(samples)
    for (speaker, variant), members in streams.items():
        clips = list(dict.fromkeys(samples[i].key for i in members))  # in the hashed order
        call_of = {key: k // turns for k, key in enumerate(clips)}
        prosody: dict[int, SpeakerProsodyStats] = defaultdict(SpeakerProsodyStats)
        for index in members:  # call by call, in the hashed order
            sample, call = samples[index], call_of[samples[index].key]
            in_call = replace(sample.bundle, stream_id=f"{speaker}#{variant}#call-{call}")
            speaker_z, count = contexts.speaker_z(in_call, floor)
            prosody_z = prosody[call].z(sample.bundle.prosody)
            prosody[call].add(sample.bundle.prosody)
            out[index] = replace(sample, speaker_z=speaker_z, speaker_count=count,
                                 bundle=replace(sample.bundle, prosody_z=prosody_z))
    return out


def batch(samples: list[Sample], config: EmotionConfig, rng: np.random.Generator | None = None,
          unknown_fraction: float = 0.0, pools: SpeakerPools | None = None,
          early_fraction: float = 0.0) -> tuple[ModelInputs, dict[str, torch.Tensor]]:
    """Collate samples. Training only (with rng): `early_fraction` of them get their speaker statistics from a
    few of the speaker's other utterances (`pools`), and `unknown_fraction` none at all."""
    speaker_z = []
    for sample in samples:
        z = sample.speaker_z
        if rng is not None and pools is not None and rng.random() < early_fraction:
            z = pools.early_z(sample, rng)
        speaker_z.append(None if rng is not None and rng.random() < unknown_fraction else z)
    inputs = collate([s.bundle for s in samples], config, speaker_z=speaker_z)
    targets = {
        "label": torch.tensor([s.label for s in samples]),
        "valence": torch.tensor([s.valence for s in samples], dtype=torch.float32),
        "arousal": torch.tensor([s.arousal for s in samples], dtype=torch.float32),
        # shape = (B, n_labels) bool: the classes each example's corpus has (the loss leaves the others out)
        "classes": torch.tensor([s.classes or (True,) * len(config.labels) for s in samples], dtype=torch.bool),
    }
    return inputs, targets


def voice_statistics(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the voice features over the training samples (the model's buffers)."""
    vectors = np.array([v for s in samples if (v := voice_vector(s.bundle)) is not None])
    return torch.from_numpy(vectors.mean(axis=0)), torch.from_numpy(np.maximum(vectors.std(axis=0), STD_FLOOR))
