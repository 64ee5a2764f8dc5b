"""TESS (Toronto emotional speech set; Dupuis & Pichora-Fuller 2010): labels, speakers and words from the names.

Two female speakers, OAF (aged 64) and YAF (aged 26), each say "Say the word ___" for target words in seven
emotions. Layout: ``<speaker>_<emotion>/<speaker>_<word>_<emotion>.<ext>``. The folder's emotion part is spelt
inconsistently in the original (``Fear``/``fear``, ``Sad``/``sad``, ``Pleasant_surprise``/``pleasant_surprised``);
the file's is one lowercase word, ``ps`` for pleasant surprise. Both are read into ``tess7``
(``emostream.labels``), whose ``pleasant_surprise`` is the concept surprised.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from emostream.training.datasets.example import ActedClip, Example, _acted_corpus, _Row

# The emotion part of a file name, lowercased -> its tess7 label.
TESS_FILE_EMOTIONS: dict[str, str] = {
    "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "neutral": "neutral", "ps": "pleasant_surprise",
    "sad": "sad",
}  # fmt: skip
# The emotion part of a folder name, lowercased (every spelling the original uses) -> its tess7 label.
TESS_FOLDER_EMOTIONS: dict[str, str] = {
    "angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "neutral": "neutral",
    "pleasant_surprise": "pleasant_surprise", "pleasant_surprised": "pleasant_surprise", "sad": "sad",
}  # fmt: skip
_TESS_NAME = re.compile(r"^([A-Za-z]+)_([A-Za-z]+)_([A-Za-z]+)$")
_TESS_FOLDER = re.compile(r"^([A-Za-z]+)_([A-Za-z_]+)$")


def read_tess(folder: str | os.PathLike[str], label_set: str = "ravdess8") -> list[Example]:
    """Every TESS media file under ``folder`` (recursively), sorted by path.

    The class comes from the file name ``<speaker>_<word>_<emotion>`` (``TESS_FILE_EMOTIONS``); a file inside
    a ``<speaker>_<emotion>`` folder (``TESS_FOLDER_EMOTIONS``) must agree with it, so a misfiled clip is an
    error rather than a wrong label. Label: the ``label_set`` name of the clip's concept (pleasant surprise
    = surprised); a class ``label_set`` lacks (surprised, in emodb7) leaves the label None and is logged, see
    ``_acted_example``. Valence/arousal: the concept's ``VALENCE_AROUSAL`` anchor; speaker ``tess-<speaker>``
    (``tess-OAF``, ``tess-YAF``); transcript ``Say the word <word>``; key: the file stem; dataset ``"tess"``.
    Raises DatasetError naming a file it cannot label, ValueError for an unknown ``label_set``.
    """
    def clip(media: Path) -> ActedClip:
        speaker, word, label = _tess_fields(media)
        return ActedClip(f"tess-{speaker}", label, f"Say the word {word}")

    return _acted_corpus(folder, "TESS", "tess", "tess7", label_set, clip)


def _tess_fields(media: Path) -> tuple[str, str, str]:
    """(speaker, word, tess7 label) of a TESS file, checked against its folder when that is a TESS folder."""
    row = _Row(media, "file name")
    match = _TESS_NAME.match(media.stem)
    if match is None:
        raise row.error(f"{media.name!r} is not a TESS name <speaker>_<word>_<emotion> (e.g. OAF_back_angry.flac)")
    speaker, word, emotion = match.groups()
    label = TESS_FILE_EMOTIONS.get(emotion.lower())
    if label is None:
        raise row.error(f"{media.name!r}: unknown emotion {emotion!r}; allowed: {', '.join(TESS_FILE_EMOTIONS)}")
    folder = _TESS_FOLDER.match(media.parent.name)
    if folder is not None and folder.group(2).lower() in TESS_FOLDER_EMOTIONS:
        folder_speaker, folder_label = folder.group(1), TESS_FOLDER_EMOTIONS[folder.group(2).lower()]
        if (folder_speaker, folder_label) != (speaker, label):
            raise row.error(f"{media.name!r} ({speaker}, {label}) inside folder {media.parent.name} ({folder_speaker}, {folder_label})")
    return speaker, word, label
