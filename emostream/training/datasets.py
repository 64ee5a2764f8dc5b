"""Dataset readers: labelled corpora -> one ``Example`` type for training and evaluation.

Every reader returns ``list[Example]`` after validating every row, and raises ``DatasetError`` (a
``ValueError``) whose message names the file, the row and the problem, e.g.::

    /data/train.csv: line 7: unknown label 'joyous'; allowed: neutral, angry, happy, sad, worried, surprise ...
    /data/train.csv: line 9: media file not found: /data/clips/b.wav
    /data/merr.json: entry 'sample_00000007': no media file sample_00000007.<ext> in /data/video

Readers only check that media files exist; they never open them.

Readers
-------
``read_manifest(path, label_set)``
    The project's own generic format, CSV or JSONL (by extension). Columns / keys:

    ===============  ========  =================================================================================
    column           required  meaning
    ===============  ========  =================================================================================
    media            yes       media file, relative to the manifest's folder or absolute
    speaker          yes       speaker id (speaker-independent splits, per-speaker normalisation)
    start, end       no        seconds within the media (both or neither; absent = the whole file)
    label            no        a label of ``label_set`` (or a ``SYNONYMS`` word), stored as the set's own name
    valence          no        float in [-1, 1]
    arousal          no        float in [-1, 1]
    transcript       no        what is said
    explanation      no        why the label (free text)
    open_vocabulary  no        free emotion words: comma/semicolon separated in CSV, a list in JSONL
    key              no        stable id; default: the media file's stem, plus ``#start-end`` for a segment
    ===============  ========  =================================================================================

    Empty CSV cells and JSON ``null`` mean "absent". Any other column is an error (a misspelt optional
    column would otherwise be dropped silently). Keys must be unique within a manifest.

``read_ravdess(folder)`` / ``ravdess_split``
    RAVDESS (Livingstone & Russo 2018) file names ``MM-VV-EE-II-SS-RR-AA.ext``, searched recursively.

``read_mer2023(label_csv, media_folder)``
    MER2023 label files (``train-label.csv``, ``test1-label.csv`` ...): ``name, discrete, valence``.

``read_mer_ov(label_csv, media_folder)``
    MER-OV (MER2024 open-vocabulary track) label files: ``name, openset``.

``read_captions(path, media_folder, label_set)``
    EMER / MERR description files (see ``read_captions`` for the accepted field names).

Splits
------
``speaker_split(examples, validation_speakers)`` splits by speaker, never by clip;
``check_speaker_independent(train, validation)`` raises if a speaker is on both sides.

Speakers in MER2023 / MER-OV / EMER / MERR
------------------------------------------
These corpora publish no speaker ids. The readers use the sample name's prefix up to its first
underscore, or the whole name when it has none. For the official names (``sample_00000123``,
``samplenew_00004251``) that prefix names the *collection batch*, not a person: all of MER2023's labelled
clips then share one "speaker" ``sample``. That keeps them together on one side of a speaker split
(conservative: no accidental leakage) but cannot make a speaker-independent split inside MER2023 -- use
its official train / test1 / test2 / test3 partition for that, or pass ``speaker_of`` with a real mapping.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from emostream.labels import LABEL_SETS, VALENCE_AROUSAL, canonical_labels, parse_label
from emostream.labels import label_set as _label_set

__all__ = [
    "CAPTION_EXPLANATION_FIELDS",
    "CAPTION_LABEL_FIELDS",
    "CAPTION_NAME_FIELDS",
    "CAPTION_TRANSCRIPT_FIELDS",
    "CAPTION_WORD_FIELDS",
    "MEDIA_EXTENSIONS",
    "RAVDESS_EMOTIONS",
    "RAVDESS_STATEMENTS",
    "DatasetError",
    "Example",
    "check_speaker_independent",
    "mer_speaker",
    "parse_words",
    "ravdess_split",
    "read_captions",
    "read_manifest",
    "read_mer2023",
    "read_mer_ov",
    "read_ravdess",
    "speaker_split",
]

# Extensions a media file may have when a label file gives only its name, in order of preference (a name
# with both a video and an audio file resolves to the video).
MEDIA_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus")

# RAVDESS file-name fields (Livingstone & Russo 2018, PLoS ONE 13(5): e0196391).
RAVDESS_EMOTIONS: dict[int, str] = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fearful", 7: "disgust", 8: "surprised"}
RAVDESS_STATEMENTS: dict[int, str] = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
_RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_RAVDESS_ACTOR_FOLDER = re.compile(r"^Actor_(\d{2})$")

_MANIFEST_COLUMNS = (
    "media", "start", "end", "speaker", "label", "valence", "arousal", "transcript", "explanation", "open_vocabulary", "key",
)  # fmt: skip
_MANIFEST_REQUIRED = ("media", "speaker")

# read_captions field names, in order of precedence (the first one present and non-empty wins).
CAPTION_NAME_FIELDS: tuple[str, ...] = ("name",)
CAPTION_LABEL_FIELDS: tuple[str, ...] = ("label", "emotion", "discrete")
CAPTION_EXPLANATION_FIELDS: tuple[str, ...] = ("description", "caption", "smp_reason_caption", "reason")
CAPTION_WORD_FIELDS: tuple[str, ...] = ("openset", "words")
CAPTION_TRANSCRIPT_FIELDS: tuple[str, ...] = ("transcript", "text", "sentence", "subtitle")


_T = TypeVar("_T")


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


def mer_speaker(name: str) -> str:
    """The stand-in speaker of a MER2023-family sample: the name up to its first underscore, else the whole name.

    See the module docstring: for official names this is a collection batch ("sample", "samplenew"), not a person.
    """
    prefix, underscore, _ = name.partition("_")
    return prefix if underscore and prefix else name


# ---------------------------------------------------------------------------------------------------- manifest


def read_manifest(path: str | os.PathLike[str], label_set: str, *, dataset: str | None = None) -> list[Example]:
    """Read a generic CSV (``.csv``) or JSONL (``.jsonl``/``.ndjson``) manifest; columns in the module docstring.

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


# ---------------------------------------------------------------------------------------------------- RAVDESS


def read_ravdess(folder: str | os.PathLike[str]) -> list[Example]:
    """Every RAVDESS media file under ``folder`` (recursively), sorted by path.

    File names are ``MM-VV-EE-II-SS-RR-AA.ext``: modality (01 audio-video, 02 video-only, 03 audio-only),
    vocal channel (01 speech, 02 song), emotion 01..08 (``RAVDESS_EMOTIONS``), intensity (01 normal,
    02 strong; neutral has no strong), statement (``RAVDESS_STATEMENTS``, used as the transcript),
    repetition (01, 02), actor (01..24). Files with an extension in ``MEDIA_EXTENSIONS`` are read; others
    (READMEs, hidden files) are skipped. A file inside an ``Actor_XX`` folder must carry actor XX.

    Label: the ravdess8 name; valence/arousal: ``VALENCE_AROUSAL`` of the label; speaker ``ravdess-AA``;
    key: the file stem; dataset ``"ravdess"``. Raises DatasetError naming a bad file.
    """
    root = _absolute(folder)
    if not root.is_dir():
        raise DatasetError(f"{root}: RAVDESS folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MEDIA_EXTENSIONS and not p.name.startswith(".") and p.is_file())
    if not files:
        raise DatasetError(f"{root}: no media files ({', '.join(MEDIA_EXTENSIONS)}) found")
    concepts = dict(zip(LABEL_SETS["ravdess8"], canonical_labels("ravdess8"), strict=True))
    examples = []
    for media in files:
        fields = _ravdess_fields(media)
        label = RAVDESS_EMOTIONS[fields["emotion"]]
        valence, arousal = VALENCE_AROUSAL[concepts[label]]
        examples.append(
            Example(
                media=media,
                start=None,
                end=None,
                speaker=f"ravdess-{fields['actor']:02d}",
                label=label,
                valence=valence,
                arousal=arousal,
                transcript=RAVDESS_STATEMENTS[fields["statement"]],
                explanation=None,
                open_vocabulary=(),
                dataset="ravdess",
                key=media.stem,
            )
        )
    _check_unique((example.key, _Row(example.media, "file name")) for example in examples)
    return examples


def _ravdess_fields(media: Path) -> dict[str, int]:
    """The seven numeric fields of a RAVDESS file name, validated."""
    row = _Row(media, "file name")
    match = _RAVDESS_NAME.match(media.stem)
    if match is None:
        raise row.error(f"{media.name!r} is not a RAVDESS name MM-VV-EE-II-SS-RR-AA (seven two-digit fields)")
    names = ("modality", "channel", "emotion", "intensity", "statement", "repetition", "actor")
    fields = dict(zip(names, (int(group) for group in match.groups()), strict=True))
    allowed = {
        "modality": range(1, 4),
        "channel": range(1, 3),
        "emotion": range(1, 9),
        "intensity": range(1, 3),
        "statement": range(1, 3),
        "repetition": range(1, 3),
        "actor": range(1, 25),
    }
    for name, valid in allowed.items():
        if fields[name] not in valid:
            raise row.error(f"{media.name!r}: {name} {fields[name]:02d} outside {valid.start:02d}..{valid.stop - 1:02d}")
    if fields["emotion"] == 1 and fields["intensity"] == 2:
        raise row.error(f"{media.name!r}: neutral has no strong intensity (02)")
    folder = _RAVDESS_ACTOR_FOLDER.match(media.parent.name)
    if folder is not None and int(folder.group(1)) != fields["actor"]:
        raise row.error(f"{media.name!r}: actor {fields['actor']:02d} inside folder {media.parent.name}")
    return fields


def ravdess_split(examples: Sequence[Example], validation_actors: Iterable[int] = (15, 16, 17, 18)) -> tuple[list[Example], list[Example]]:
    """(train, validation) of RAVDESS examples by actor, never by clip; the default holds out actors 15-18."""
    return speaker_split(examples, [f"ravdess-{actor:02d}" for actor in validation_actors])


# ---------------------------------------------------------------------------------------------------- MER2023 / MER-OV


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


# ---------------------------------------------------------------------------------------------------- EMER / MERR captions


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


# ---------------------------------------------------------------------------------------------------- splits


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
