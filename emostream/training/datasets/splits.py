"""Speaker-independent splits: by speaker, never by clip."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from emostream.training.datasets.example import Example


def speaker_split(examples: Sequence[Example], validation_speakers: Iterable[str]) -> tuple[list[Example], list[Example]]:
    """(train, validation): examples of ``validation_speakers`` go to validation, all others to train; order kept.

    Raises ValueError when a validation speaker has no example (a typo would otherwise give an empty or
    smaller validation set) or when either side would be empty.
    """
    wanted = set(validation_speakers)
    if not wanted:
        raise ValueError("no validation speakers given")
    present = {example.speaker for example in examples}
    if missing := sorted(wanted - present):
        shown = sorted(present)
        listing = ", ".join(shown[:30]) + (" ..." if len(shown) > 30 else "")
        raise ValueError(f"validation speaker(s) without examples: {', '.join(missing)}; speakers present: {listing}")
    train = [example for example in examples if example.speaker not in wanted]
    validation = [example for example in examples if example.speaker in wanted]
    if not train:
        raise ValueError("every example belongs to a validation speaker: the training split would be empty")
    return train, validation


def check_speaker_independent(train: Iterable[Example], validation: Iterable[Example]) -> None:
    """Raise ValueError naming every speaker (with example counts) found in both ``train`` and ``validation``."""
    train_counts = Counter(example.speaker for example in train)
    validation_counts = Counter(example.speaker for example in validation)
    if shared := sorted(set(train_counts) & set(validation_counts)):
        details = ", ".join(f"{speaker} ({train_counts[speaker]} train, {validation_counts[speaker]} validation)" for speaker in shared)
        raise ValueError(f"not speaker-independent: {len(shared)} speaker(s) in both splits: {details}")


def speaker_folds(speakers: Sequence[str], corpora: Sequence[str], count: int, corpus_order: Sequence[str]) -> list[set[str]]:
    """Whole speakers dealt round-robin into `count` folds, corpus by corpus in `corpus_order`, each corpus's
    speakers sorted (the same folds on every run). speakers, corpora : one entry per example (or per speaker)."""
    if count < 2:
        raise ValueError(f"speaker folds need at least 2 folds, not {count}")
    order = list(corpus_order)
    if unknown := sorted(set(corpora) - set(order)):
        raise ValueError(f"corpora {unknown} are not in the fold order {order}")
    folds: list[set[str]] = [set() for _ in range(count)]
    pairs = sorted(set(zip(corpora, speakers, strict=True)), key=lambda pair: (order.index(pair[0]), pair[1]))
    for k, (_, speaker) in enumerate(pairs):
        folds[k % count].add(speaker)
    if any(not fold for fold in folds):
        raise ValueError(f"{len(pairs)} speakers cannot fill {count} folds")
    return folds
