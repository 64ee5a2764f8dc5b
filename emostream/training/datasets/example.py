"""The one type every reader returns (``Example``), its error (``DatasetError``), and the parsing helpers the readers share.

The underscored helpers are for the readers in this package only: they name the file and the row in every
error (``<file>: <where>: <problem>``).
"""

from __future__ import annotations

import ast
import csv
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emostream.labels import LABEL_SETS, VALENCE_AROUSAL, canonical_labels, corresponding_label, parse_label
from emostream.labels import label_set as _label_set

log = logging.getLogger(__name__)

# Extensions a media file may have when a label file gives only its name, in order of preference (a name
# with both a video and an audio file resolves to the video).
MEDIA_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus")


class DatasetError(ValueError):
    """A dataset file that cannot be read as documented; the message names the file, the row and the problem."""


@dataclass(frozen=True)
class Example:
    """One labelled utterance (or whole media file) of any corpus.

    ``media`` is absolute; ``start``/``end`` are seconds within it (both None = the whole file); ``label`` is
    the dataset's own label name (of the label set the reader was given), ``valence``/``arousal`` are in
    [-1, 1]; ``open_vocabulary`` holds free emotion words (lowercase); ``key`` is a stable id unique within
    its dataset. Construction validates these invariants (ValueError).
    """

    media: Path
    start: float | None
    end: float | None
    speaker: str
    label: str | None
    valence: float | None
    arousal: float | None
    transcript: str | None
    explanation: str | None
    open_vocabulary: tuple[str, ...]
    dataset: str
    key: str

    def __post_init__(self) -> None:
        if not isinstance(self.media, Path) or not self.media.is_absolute():
            raise ValueError(f"Example.media must be an absolute Path, got {self.media!r}")
        if (self.start is None) != (self.end is None):
            raise ValueError(f"Example {self.key!r}: start and end must both be given or both be None")
        if self.start is not None and self.end is not None and not (0.0 <= self.start < self.end):
            raise ValueError(f"Example {self.key!r}: need 0 <= start < end, got start={self.start}, end={self.end}")
        for name in ("valence", "arousal"):
            value = getattr(self, name)
            if value is not None and not (-1.0 <= value <= 1.0):
                raise ValueError(f"Example {self.key!r}: {name} {value} outside [-1, 1]")
        if not self.speaker or not self.key or not self.dataset:
            raise ValueError(f"Example {self.key!r}: speaker, key and dataset must be non-empty")
        if not isinstance(self.open_vocabulary, tuple):
            raise ValueError(f"Example {self.key!r}: open_vocabulary must be a tuple")

    @property
    def whole_file(self) -> bool:
        """True when the example is the whole media file (no start/end)."""
        return self.start is None


# ---------------------------------------------------------------------------------------------------- helpers


def _absolute(path: str | os.PathLike[str]) -> Path:
    """An absolute, normalised path (symlinks are kept, not resolved)."""
    return Path(os.path.abspath(os.fspath(path)))


class _Row:
    """Where a row is, for error messages: ``<file>: <where>: <problem>``."""

    def __init__(self, file: Path, where: str) -> None:
        self.file = file
        self.where = where

    def error(self, problem: str) -> DatasetError:
        return DatasetError(f"{self.file}: {self.where}: {problem}")


def _text(value: Any, field: str, row: _Row) -> str | None:
    """A non-empty stripped string, or None for absent/empty values; numbers are accepted as their text."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise row.error(f"{field} must be text, got {type(value).__name__} {value!r}")
    text = str(value).strip()
    return text or None


def _number(value: Any, field: str, row: _Row) -> float | None:
    """A finite float from a number or numeric text; None for absent/empty values."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise row.error(f"bad number in {field}: {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise row.error(f"bad number in {field}: {value!r}") from None
    if not math.isfinite(number):
        raise row.error(f"bad number in {field}: {value!r} (not finite)")
    return number


def _label(value: Any, label_set: str, row: _Row, field: str = "label") -> str | None:
    """The set's own name for a label written as text (parse_label), or None when absent."""
    text = _text(value, field, row)
    if text is None:
        return None
    try:
        return LABEL_SETS[label_set][parse_label(text, label_set)]
    except ValueError as exc:
        raise row.error(f"unknown {field} {text!r}: {exc}") from None


def parse_words(value: Any) -> tuple[str, ...]:
    """Free emotion words from a list, or from text like ``happy, relaxed``, ``happy; relaxed`` or ``"['happy', 'relaxed']"``.

    Words are stripped of whitespace, brackets and quotes, lowercased and de-duplicated (first occurrence kept).
    Raises ValueError for anything that is not text or a list of text.
    """
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        items: list[Any] = list(value)
    elif isinstance(value, str):
        text = value.strip()
        items = []
        if text[:1] in "[(" and text[-1:] in "])":
            try:
                literal = ast.literal_eval(text)  # MER-OV writes Python list literals: "['happy', 'relaxed']"
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                literal = None
            if isinstance(literal, list | tuple) and all(isinstance(item, str) for item in literal):
                items = list(literal)
            else:
                text = text[1:-1]
        if not items:
            items = re.split(r"[,;]", text)
    else:
        raise ValueError(f"expected a list of words or comma/semicolon separated text, got {type(value).__name__} {value!r}")
    words: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected words as text, got {type(item).__name__} {item!r}")
        word = item.strip().strip("[]()").strip().strip("'\"").strip().lower()
        if word and word not in words:
            words.append(word)
    return tuple(words)


def _words(value: Any, field: str, row: _Row) -> tuple[str, ...]:
    try:
        return parse_words(value)
    except ValueError as exc:
        raise row.error(f"bad {field}: {exc}") from None


def _check_unique(keys: Iterable[tuple[str, _Row]]) -> None:
    seen: dict[str, _Row] = {}
    for key, row in keys:
        if key in seen:
            raise row.error(f"duplicate key {key!r} (also at {seen[key].where})")
        seen[key] = row


def _open_text(path: Path) -> str:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: label files exported from Excel start with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None


def _csv_rows(path: Path, required: Sequence[str], allowed: Collection[str] | None = None) -> Iterator[tuple[_Row, dict[str, str | None]]]:
    """(row, {column: cell}) per CSV record, after checking the header; rows are named by their line number."""
    reader = csv.DictReader(_open_text(path).splitlines(keepends=True))
    header = [name.strip() if name else "" for name in (reader.fieldnames or [])]
    top = _Row(path, "line 1 (header)")
    if not header:
        raise top.error("empty file (no header)")
    if missing := [column for column in required if column not in header]:
        raise top.error(f"missing column(s) {', '.join(missing)}; header has: {', '.join(header)}")
    if allowed is not None and (unknown := [column for column in header if column not in allowed]):
        raise top.error(f"unknown column(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if duplicated := [column for column, count in Counter(header).items() if count > 1]:
        raise top.error(f"duplicate column(s) {', '.join(duplicated)}")
    reader.fieldnames = header
    for record in reader:
        row = _Row(path, f"line {reader.line_num}")
        if None in record:
            raise row.error(f"{len(header) + len(record[None])} fields but the header has {len(header)}")  # type: ignore[index]
        yield row, {column: (cell if cell is None else cell.strip()) for column, cell in record.items()}


class _MediaIndex:
    """Finds ``<folder>/<name>.<ext>`` for any ext in MEDIA_EXTENSIONS; the folder is listed once."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = _absolute(folder)
        if not self.folder.is_dir():
            raise DatasetError(f"{self.folder}: media folder not found")
        rank = {ext: i for i, ext in enumerate(MEDIA_EXTENSIONS)}
        found: dict[str, Path] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in rank and entry.is_file():
                    best = found.get(stem)
                    if best is None or rank[ext.lower()] < rank[best.suffix.lower()]:
                        found[stem] = self.folder / entry.name
        self.found = found

    def find(self, name: str, row: _Row) -> Path:
        try:
            return self.found[name]
        except KeyError:
            raise row.error(f"no media file {name}.<ext> in {self.folder} (looked for {', '.join(MEDIA_EXTENSIONS)})") from None



def _media_files(folder: str | os.PathLike[str], corpus: str) -> list[Path]:
    """Every media file (``MEDIA_EXTENSIONS``) under ``folder``, recursively, sorted by path; hidden and other
    files (READMEs) are skipped. Raises DatasetError when the folder is missing or holds no media."""
    root = _absolute(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: {corpus} folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MEDIA_EXTENSIONS and not p.name.startswith(".") and p.is_file())
    if not files:
        raise DatasetError(f"{root}: no media files ({', '.join(MEDIA_EXTENSIONS)}) found")
    return files


def _acted_example(media: Path, speaker: str, label: str, source: str, target: str, transcript: str | None, dataset: str) -> Example:
    """A whole-file example of an acted corpus whose class a reader took from the file name.

    ``label`` is a name of the corpus's own set ``source``; the example carries the ``target`` set's name for
    the same concept, or None when ``target`` lacks it (``corresponding_label``: a missing class is never
    guessed). Valence/arousal are the concept's ``VALENCE_AROUSAL`` anchor either way, so a clip without a
    class still teaches the valence/arousal heads and counts in its speaker's statistics.
    """
    concept = canonical_labels(source)[LABEL_SETS[source].index(label)]
    valence, arousal = VALENCE_AROUSAL[concept]
    return Example(media=media, start=None, end=None, speaker=speaker, label=corresponding_label(label, source, target),
                   valence=valence, arousal=arousal, transcript=transcript, explanation=None, open_vocabulary=(),
                   dataset=dataset, key=media.stem)


def _log_classes_missing(dataset: str, classes: Counter[str], target: str) -> None:
    """Say how many clips of which corpus classes have no counterpart in ``target`` (kept without a class label)."""
    if classes:
        counts = ", ".join(f"{count} {label}" for label, count in sorted(classes.items()))
        log.info("%s: no %s class for %s clips: kept without a class label (valence/arousal only)", dataset, target, counts)


@dataclass(frozen=True)
class ActedClip:
    """What an acted corpus's file name says about one clip."""

    speaker: str  # corpus-wide speaker id, e.g. "tess-OAF"
    label: str  # a name of the corpus's own label set
    transcript: str | None


def _acted_corpus(folder: str | os.PathLike[str], corpus: str, dataset: str, source: str, target: str,
                  clip: Callable[[Path], ActedClip]) -> list[Example]:
    """Every media file of an acted corpus whose labels are in its file names (`clip` reads one), as examples
    labelled in ``target``; clips whose class ``target`` lacks are kept without one and counted in the log."""
    _label_set(target)
    examples: list[Example] = []
    missing: Counter[str] = Counter()
    for media in _media_files(folder, corpus):
        found = clip(media)
        example = _acted_example(media, found.speaker, found.label, source, target, found.transcript, dataset)
        examples.append(example)
        if example.label is None:
            missing[found.label] += 1
    _check_unique((example.key, _Row(example.media, "file name")) for example in examples)
    _log_classes_missing(dataset, missing, target)
    return examples
