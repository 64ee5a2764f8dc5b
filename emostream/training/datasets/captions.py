"""EMER / MERR description files: per-utterance captions explaining the emotion (CSV or JSON)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from emostream.labels import label_set as _label_set
from emostream.training.datasets.example import (
    DatasetError,
    Example,
    _absolute,
    _check_unique,
    _csv_rows,
    _label,
    _MediaIndex,
    _open_text,
    _Row,
    _text,
    _words,
)
from emostream.training.datasets.mer import mer_speaker

# read_captions field names, in order of precedence (the first one present and non-empty wins).
CAPTION_NAME_FIELDS: tuple[str, ...] = ("name",)
CAPTION_LABEL_FIELDS: tuple[str, ...] = ("label", "emotion", "discrete")
CAPTION_EXPLANATION_FIELDS: tuple[str, ...] = ("description", "caption", "smp_reason_caption", "reason")
CAPTION_WORD_FIELDS: tuple[str, ...] = ("openset", "words")
CAPTION_TRANSCRIPT_FIELDS: tuple[str, ...] = ("transcript", "text", "sentence", "subtitle")

_T = TypeVar("_T")


def read_captions(
    path: str | os.PathLike[str],
    media_folder: str | os.PathLike[str],
    label_set: str,
    *,
    dataset: str | None = None,
    speaker_of: Callable[[str], str] = mer_speaker,
) -> list[Example]:
    """EMER / MERR description files: per-utterance captions explaining the emotion.

    Accepted layouts (by extension):

    * ``.csv`` with a header, one row per utterance;
    * ``.json`` holding a list of objects, each with a ``name``;
    * ``.json`` holding an object keyed by name (MERR: ``{"sample_00000007": {"caption": ...}}`` in
      ``MERR_coarse_grained.json``, ``{"sample_00000007": {"smp_reason_caption": ..., "text": ...}}`` in
      ``MERR_fine_grained.json``); an inner ``name``, if present, must equal the key.

    Fields (the first present, non-empty one of each group wins):

    ==============  ===========================================================  ===================================
    Example field   accepted names, in precedence order                          notes
    ==============  ===========================================================  ===================================
    key             ``name`` (or the JSON object key)                            required; media = <folder>/<name>.*
    label           ``label``, ``emotion``, ``discrete``                         optional; a ``label_set`` label
    explanation     ``description``, ``caption``, ``smp_reason_caption``,        optional
                    ``reason``
    open_vocabulary ``openset``, ``words``                                       optional; as in ``read_mer_ov``
    transcript      ``transcript``, ``text``, ``sentence``, ``subtitle``         optional (MERR fine: ``text``)
    ==============  ===========================================================  ===================================

    Other fields (MERR's ``AU_list``, ``visual_prior_list`` ...) are ignored. A row with none of label,
    explanation and words is an error (nothing to learn from). Valence/arousal are None. Speaker: as in
    ``read_mer2023``. ``dataset`` defaults to the file's stem. Rows are named by CSV line, JSON list index
    or JSON key.
    """
    _label_set(label_set)
    file = _absolute(path)
    media = _MediaIndex(media_folder)
    suffix = file.suffix.lower()
    rows: Iterable[tuple[_Row, str | None, Mapping[str, Any]]]
    if suffix == ".csv":
        rows = ((row, None, record) for row, record in _csv_rows(file, CAPTION_NAME_FIELDS))
    elif suffix == ".json":
        rows = _json_caption_rows(file)
    else:
        raise DatasetError(f"{file}: unsupported caption file type {suffix or '(none)'!r}; use .csv or .json")
    examples: list[Example] = []
    rows_by_key: list[tuple[str, _Row]] = []
    for row, outer_name, record in rows:
        inner_name = _text(record.get("name"), "name", row)
        if outer_name is not None and inner_name is not None and inner_name != outer_name:
            raise row.error(f"name {inner_name!r} differs from its key {outer_name!r}")
        name = outer_name or inner_name
        if name is None:
            raise row.error("missing name")
        label = _first(record, CAPTION_LABEL_FIELDS, row, lambda value, field, at: _label(value, label_set, at, field))
        explanation = _first(record, CAPTION_EXPLANATION_FIELDS, row, _text)
        words = _first(record, CAPTION_WORD_FIELDS, row, lambda value, field, at: _words(value, field, at) or None)
        if label is None and explanation is None and words is None:
            fields = CAPTION_LABEL_FIELDS + CAPTION_EXPLANATION_FIELDS + CAPTION_WORD_FIELDS
            raise row.error(f"no label, description or words (looked for {', '.join(fields)})")
        examples.append(
            Example(
                media=media.find(name, row),
                start=None,
                end=None,
                speaker=speaker_of(name),
                label=label,
                valence=None,
                arousal=None,
                transcript=_first(record, CAPTION_TRANSCRIPT_FIELDS, row, _text),
                explanation=explanation,
                open_vocabulary=words or (),
                dataset=dataset or file.stem,
                key=name,
            )
        )
        rows_by_key.append((name, row))
    _check_unique(rows_by_key)
    return examples


def _first(record: Mapping[str, Any], fields: Sequence[str], row: _Row, convert: Callable[[Any, str, _Row], _T | None]) -> _T | None:
    """``convert(value, field, row)`` of the first field of ``fields`` that converts to something other than None."""
    for field in fields:
        if field in record:
            value = convert(record[field], field, row)
            if value is not None:
                return value
    return None


def _json_caption_rows(file: Path) -> Iterator[tuple[_Row, str | None, Mapping[str, Any]]]:
    try:
        document = json.loads(_open_text(file))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{file}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    if isinstance(document, list):
        for index, record in enumerate(document):
            row = _Row(file, f"item {index}")
            if not isinstance(record, dict):
                raise row.error(f"expected a JSON object, got {type(record).__name__}")
            name = record.get("name")
            if isinstance(name, str) and name.strip():
                row = _Row(file, f"item {index} ({name.strip()!r})")
            yield row, None, record
    elif isinstance(document, dict):
        for name, record in document.items():
            row = _Row(file, f"entry {name!r}")
            if not isinstance(record, dict):
                raise row.error(f"expected a JSON object, got {type(record).__name__}")
            if not name.strip():
                raise row.error("empty name")
            yield row, name.strip(), record
    else:
        raise DatasetError(f"{file}: top level: expected a JSON list of objects or an object keyed by name, got {type(document).__name__}")
