"""MER2023 discrete labels and MER-OV (MER2024 open-vocabulary) words, keyed by sample name.

Speakers
--------
These corpora publish no speaker ids. The readers use the sample name's prefix up to its first
underscore, or the whole name when it has none (``mer_speaker``). For the official names
(``sample_00000123``, ``samplenew_00004251``) that prefix names the *collection batch*, not a person: all of
MER2023's labelled clips then share one "speaker" ``sample``. That keeps them together on one side of a
speaker split (conservative: no accidental leakage) but cannot make a speaker-independent split inside
MER2023 -- use its official train / test1 / test2 / test3 partition for that, or pass ``speaker_of`` with
a real mapping. EMER / MERR captions (``captions.py``) use the same stand-in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from emostream.training.datasets.example import (
    Example,
    _absolute,
    _check_unique,
    _csv_rows,
    _label,
    _MediaIndex,
    _number,
    _Row,
    _text,
    _words,
)


def mer_speaker(name: str) -> str:
    """The stand-in speaker of a MER2023-family sample: the name up to its first underscore, else the whole name.

    See the module docstring: for official names this is a collection batch ("sample", "samplenew"), not a person.
    """
    prefix, underscore, _ = name.partition("_")
    return prefix if underscore and prefix else name


def _mer_examples(
    label_csv: str | os.PathLike[str],
    media_folder: str | os.PathLike[str],
    required: tuple[str, ...],
    dataset: str,
    speaker_of: Callable[[str], str],
    fields_of: Callable[[_Row, dict[str, str | None]], dict[str, Any]],
) -> list[Example]:
    """Rows of a MER-style label CSV (keyed by ``name``) as whole-file examples; `fields_of` reads the labels."""
    file = _absolute(label_csv)
    media = _MediaIndex(media_folder)
    examples: list[Example] = []
    rows_by_key: list[tuple[str, _Row]] = []
    for row, record in _csv_rows(file, required):
        name = _text(record.get("name"), "name", row)
        if name is None:
            raise row.error("empty name")
        labels = {"label": None, "valence": None, "arousal": None, "explanation": None, "open_vocabulary": (), **fields_of(row, record)}
        examples.append(Example(media=media.find(name, row), start=None, end=None, speaker=speaker_of(name), transcript=None,
                                dataset=dataset, key=name, **labels))
        rows_by_key.append((name, row))
    _check_unique(rows_by_key)
    return examples


def read_mer2023(
    label_csv: str | os.PathLike[str],
    media_folder: str | os.PathLike[str],
    *,
    speaker_of: Callable[[str], str] = mer_speaker,
) -> list[Example]:
    """A MER2023 label file (``train-label.csv``, ``test1-label.csv`` ...) with columns ``name, discrete, valence``.

    ``discrete`` is a mer2023_6 label (neutral, angry, happy, sad, worried, surprise; synonyms accepted);
    ``valence`` is on MER's -5..5 scale and is divided by 5. The ``valence`` column may be missing (MER2023's
    test3 labels have none) or a cell empty: valence None. Arousal is None (MER2023 annotates none).
    Media: ``<media_folder>/<name>.<ext>`` (any of MEDIA_EXTENSIONS). Speaker: ``speaker_of(name)``, by
    default ``mer_speaker`` (see the module docstring: not a real speaker id). Dataset ``"mer2023"``.
    """

    def fields_of(row: _Row, record: dict[str, str | None]) -> dict[str, Any]:
        label = _label(record.get("discrete"), "mer2023_6", row, field="discrete")
        if label is None:
            raise row.error("empty discrete label")
        raw_valence = _number(record.get("valence"), "valence", row)
        if raw_valence is not None and not (-5.0 <= raw_valence <= 5.0):
            raise row.error(f"valence {raw_valence:g} outside MER's -5..5")
        return {"label": label, "valence": None if raw_valence is None else raw_valence / 5.0}

    return _mer_examples(label_csv, media_folder, ("name", "discrete"), "mer2023", speaker_of, fields_of)


def read_mer_ov(
    label_csv: str | os.PathLike[str],
    media_folder: str | os.PathLike[str],
    *,
    speaker_of: Callable[[str], str] = mer_speaker,
) -> list[Example]:
    """A MER-OV (open-vocabulary) label file with columns ``name, openset``.

    ``openset`` is a list of free emotion words: a Python/JSON list literal as MER2024 writes it
    (``"['happy', 'relaxed']"``) or comma/semicolon separated text; parsed by ``parse_words`` into
    ``open_vocabulary`` (an empty cell gives ``()``). Label, valence and arousal are None. Media and speaker
    as in ``read_mer2023``. Dataset ``"mer_ov"``.
    """
    return _mer_examples(label_csv, media_folder, ("name", "openset"), "mer_ov", speaker_of,
                         lambda row, record: {"open_vocabulary": _words(record.get("openset"), "openset", row)})
