"""RAVDESS (Livingstone & Russo 2018): labels, speakers and transcripts from the file names."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from emostream.training.datasets.example import Example, _acted_example, _check_unique, _media_files, _Row
from emostream.training.datasets.splits import speaker_split

# RAVDESS file-name fields (Livingstone & Russo 2018, PLoS ONE 13(5): e0196391).
RAVDESS_EMOTIONS: dict[int, str] = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fearful", 7: "disgust", 8: "surprised"}
RAVDESS_STATEMENTS: dict[int, str] = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
RAVDESS_INTENSITIES: dict[int, str] = {1: "normal", 2: "strong"}
_RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_RAVDESS_ACTOR_FOLDER = re.compile(r"^Actor_(\d{2})$")


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
    examples = []
    for media in _media_files(folder, "RAVDESS"):
        fields = _ravdess_fields(media)
        examples.append(_acted_example(media, f"ravdess-{fields['actor']:02d}", RAVDESS_EMOTIONS[fields["emotion"]], "ravdess8",
                                       "ravdess8", RAVDESS_STATEMENTS[fields["statement"]], "ravdess"))
    _check_unique((example.key, _Row(example.media, "file name")) for example in examples)
    return examples


def ravdess_intensity(media: Path) -> str:
    """"normal" or "strong": the emotional intensity a RAVDESS file name gives (labels.INTENSITIES)."""
    return RAVDESS_INTENSITIES[_ravdess_fields(media)["intensity"]]


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
