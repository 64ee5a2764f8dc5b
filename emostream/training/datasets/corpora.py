"""Which of a label set's classes each acted corpus can have: what the loss may ask of its clips.

A TESS clip is never calm and an EmoDB clip never calm or surprised: their corpora have no such class.
Training on several corpora at once takes a clip's cross-entropy over the classes its corpus has
(``train.corpus_cross_entropy``), so a corpus is never taught that a class it lacks is wrong.
"""

from __future__ import annotations

from emostream.labels import LABEL_SETS, corresponding_label

CORPUS_LABEL_SETS: dict[str, str] = {"ravdess": "ravdess8", "tess": "tess7", "emodb": "emodb7"}  # Example.dataset -> its own set


def corpus_classes(dataset: str, label_set: str) -> tuple[bool, ...] | None:
    """Per class of `label_set`, whether corpus `dataset` has it; None for a corpus of unknown classes (a
    manifest, MER: every class may occur). E.g. ("tess", "ravdess8") -> False for calm only."""
    source = CORPUS_LABEL_SETS.get(dataset)
    if source is None:
        return None
    present = {corresponding_label(label, source, label_set) for label in LABEL_SETS[source]}
    return tuple(label in present for label in LABEL_SETS[label_set])
