"""EmoDB (Berlin Database of Emotional Speech; Burkhardt et al., Interspeech 2005): labels and speakers from the names.

Ten actors (five female, five male) speak ten German sentences in seven emotions. A file is named
``SSTTTEV.<ext>``: speaker ``SS``, text ``TTT``, emotion letter ``E`` (German initials, ``EMODB_EMOTIONS``),
version ``V``. The class is taken from the name only, into ``emodb7`` (``emostream.labels``), whose boredom
has no counterpart in ravdess8.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from emostream.training.datasets.example import ActedClip, Example, _acted_corpus, _Row

# The emotion letter of a file name -> its emodb7 label: Wut, Langeweile, Ekel, Angst, Freude, Trauer, neutral.
EMODB_EMOTIONS: dict[str, str] = {
    "W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral",
}  # fmt: skip
# The corpus's ten speakers (the documentation's numbering; 03 to 16 with gaps).
EMODB_SPEAKERS: tuple[str, ...] = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
_EMODB_NAME = re.compile(r"^(\d{2})([ab]\d{2})([A-Z])([a-z])$")


def read_emodb(folder: str | os.PathLike[str], label_set: str = "ravdess8") -> list[Example]:
    """Every EmoDB media file under ``folder`` (recursively), sorted by path.

    Label: the ``label_set`` name of the clip's concept; a class ``label_set`` lacks (boredom in ravdess8,
    81 clips) leaves the label None and is logged, see ``_acted_example``. Valence/arousal: the concept's
    ``VALENCE_AROUSAL`` anchor; speaker ``emodb-SS``; key: the file stem; dataset ``"emodb"``. Transcript:
    None -- the sentences are German and a copy may be cut short (the shared one is cut to 2.0 s), so the full
    sentence would not be what the clip says. Raises DatasetError naming a file it cannot label, ValueError
    for an unknown ``label_set``.
    """
    def clip(media: Path) -> ActedClip:
        speaker, label = _emodb_fields(media)
        return ActedClip(f"emodb-{speaker}", label, None)

    return _acted_corpus(folder, "EmoDB", "emodb", "emodb7", label_set, clip)


def _emodb_fields(media: Path) -> tuple[str, str]:
    """(speaker, emodb7 label) of an EmoDB file name."""
    row = _Row(media, "file name")
    match = _EMODB_NAME.match(media.stem)
    if match is None:
        raise row.error(f"{media.name!r} is not an EmoDB name SSTTTEV (speaker, text, emotion letter, version; e.g. 03a01Wa.flac)")
    speaker, _text, letter, _version = match.groups()
    if speaker not in EMODB_SPEAKERS:
        raise row.error(f"{media.name!r}: speaker {speaker} is not one of EmoDB's {', '.join(EMODB_SPEAKERS)}")
    if letter not in EMODB_EMOTIONS:
        allowed = ", ".join(f"{code} {label}" for code, label in EMODB_EMOTIONS.items())
        raise row.error(f"{media.name!r}: unknown emotion letter {letter!r}; allowed: {allowed}")
    return speaker, EMODB_EMOTIONS[letter]
