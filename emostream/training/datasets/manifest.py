"""The project's own generic manifest: CSV or JSONL, one row per utterance (columns in the package docstring)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from emostream.labels import label_set as _label_set
from emostream.training.datasets.example import (
    DatasetError,
    Example,
    _absolute,
    _check_unique,
    _csv_rows,
    _label,
    _number,
    _open_text,
    _Row,
    _text,
    _words,
)

_MANIFEST_COLUMNS = (
    "media", "start", "end", "speaker", "label", "valence", "arousal", "transcript", "explanation", "open_vocabulary", "key",
)  # fmt: skip
_MANIFEST_REQUIRED = ("media", "speaker")


def read_manifest(path: str | os.PathLike[str], label_set: str, *, dataset: str | None = None) -> list[Example]:
    """Read a generic CSV (``.csv``) or JSONL (``.jsonl``/``.ndjson``) manifest; columns in the package docstring.

    ``label_set`` names a set of ``LABEL_SETS`` (unknown names raise ValueError); labels are stored as that
    set's own names. ``dataset`` (default: the manifest's file stem) names the examples' dataset. Raises DatasetError.
    """
    _label_set(label_set)
    file = _absolute(path)
    suffix = file.suffix.lower()
    rows: Iterable[tuple[_Row, Mapping[str, Any]]]
    if suffix == ".csv":
        rows = _csv_rows(file, _MANIFEST_REQUIRED, _MANIFEST_COLUMNS)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(file)
    else:
        raise DatasetError(f"{file}: unsupported manifest type {suffix or '(none)'!r}; use .csv or .jsonl")
    examples: list[Example] = []
    rows_by_key: list[tuple[str, _Row]] = []
    for row, record in rows:
        example = _manifest_example(record, row, file, label_set, dataset or file.stem, is_csv=suffix == ".csv")
        examples.append(example)
        rows_by_key.append((example.key, row))
    _check_unique(rows_by_key)
    return examples


def _jsonl_rows(file: Path) -> Iterator[tuple[_Row, Mapping[str, Any]]]:
    for number, line in enumerate(_open_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        row = _Row(file, f"line {number}")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise row.error(f"invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise row.error(f"expected a JSON object, got {type(record).__name__}")
        if missing := [column for column in _MANIFEST_REQUIRED if column not in record]:
            raise row.error(f"missing column(s) {', '.join(missing)}")
        if unknown := [column for column in record if column not in _MANIFEST_COLUMNS]:
            raise row.error(f"unknown column(s) {', '.join(unknown)}; allowed: {', '.join(_MANIFEST_COLUMNS)}")
        yield row, record


def _manifest_example(record: Mapping[str, Any], row: _Row, file: Path, label_set: str, dataset: str, *, is_csv: bool) -> Example:
    media_text = _text(record.get("media"), "media", row)
    if media_text is None:
        raise row.error("empty media")
    media = _absolute(file.parent / media_text)  # an absolute media_text replaces the folder
    if not media.is_file():
        raise row.error(f"media file not found: {media}")
    speaker = _text(record.get("speaker"), "speaker", row)
    if speaker is None:
        raise row.error("empty speaker")
    start, end = _number(record.get("start"), "start", row), _number(record.get("end"), "end", row)
    if (start is None) != (end is None):
        raise row.error("start and end must both be given or both be empty")
    if start is not None and end is not None and not (0.0 <= start < end):
        raise row.error(f"need 0 <= start < end, got start={start:g}, end={end:g}")
    dimensions: dict[str, float | None] = {}
    for name in ("valence", "arousal"):
        value = _number(record.get(name), name, row)
        if value is not None and not (-1.0 <= value <= 1.0):
            raise row.error(f"{name} {value:g} outside [-1, 1]")
        dimensions[name] = value
    words_value = record.get("open_vocabulary")
    if not is_csv and words_value is not None and not isinstance(words_value, list):
        raise row.error(f"open_vocabulary must be a JSON list of words, got {type(words_value).__name__}")
    key = _text(record.get("key"), "key", row)
    if key is None:
        key = media.stem if start is None else f"{media.stem}#{start:g}-{end:g}"
    return Example(
        media=media,
        start=start,
        end=end,
        speaker=speaker,
        label=_label(record.get("label"), label_set, row),
        valence=dimensions["valence"],
        arousal=dimensions["arousal"],
        transcript=_text(record.get("transcript"), "transcript", row),
        explanation=_text(record.get("explanation"), "explanation", row),
        open_vocabulary=_words(words_value, "open_vocabulary", row),
        dataset=dataset,
        key=key,
    )
