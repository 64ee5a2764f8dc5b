"""Dataset readers: labelled corpora -> one ``Example`` type for training and evaluation, one module per corpus.

Every reader returns ``list[Example]`` after validating every row, and raises ``DatasetError`` (a
``ValueError``) whose message names the file, the row and the problem, e.g.::

    /data/train.csv: line 7: unknown label 'joyous'; allowed: neutral, angry, happy, sad, worried, surprise ...
    /data/train.csv: line 9: media file not found: /data/clips/b.wav
    /data/merr.json: entry 'sample_00000007': no media file sample_00000007.<ext> in /data/video

Readers only check that media files exist; they never open them.

The acted corpora (RAVDESS, TESS, EmoDB) name each clip's class in its file name. Their readers read it into
the corpus's own label set (``emostream.labels``: ravdess8, tess7, emodb7) and store the name the requested
``label_set`` gives the same concept. A clip whose class that set lacks (EmoDB's boredom in ravdess8) is kept
with label None and its valence/arousal, and counted in the log: it is never given a nearby class.

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

``read_tess(folder, label_set)``
    TESS (two speakers, seven emotions): ``<speaker>_<emotion>/<speaker>_<word>_<emotion>.ext``.

``read_emodb(folder, label_set)``
    EmoDB (ten German speakers, seven emotions): ``SSTTTEV.ext``, the class from the emotion letter.

``read_mer2023(label_csv, media_folder)``
    MER2023 label files (``train-label.csv``, ``test1-label.csv`` ...): ``name, discrete, valence``.

``read_mer_ov(label_csv, media_folder)``
    MER-OV (MER2024 open-vocabulary track) label files: ``name, openset``.

``read_captions(path, media_folder, label_set)``
    EMER / MERR description files (see ``read_captions`` for the accepted field names).

Splits
------
``speaker_split(examples, validation_speakers)`` splits by speaker, never by clip;
``check_speaker_independent(train, validation)`` raises if a speaker is on both sides. MER2023, MER-OV,
EMER and MERR publish no speaker ids: see ``mer.py`` for the stand-in their readers use.

Modules
-------
``example.py`` (``Example``, ``DatasetError``, the parsing helpers the readers share), ``manifest.py``,
``ravdess.py``, ``tess.py``, ``emodb.py``, ``mer.py`` (MER2023, MER-OV), ``captions.py`` (EMER / MERR), ``splits.py``,
``corpora.py`` (which classes each acted corpus has, for training on several at once). A new corpus is one new
module here, its names exported below, and a ``DataConfig.dataset`` entry in ``training/train.py``.
"""

from emostream.training.datasets.captions import (
    CAPTION_EXPLANATION_FIELDS,
    CAPTION_LABEL_FIELDS,
    CAPTION_NAME_FIELDS,
    CAPTION_TRANSCRIPT_FIELDS,
    CAPTION_WORD_FIELDS,
    read_captions,
)
from emostream.training.datasets.corpora import CORPUS_LABEL_SETS, corpus_classes
from emostream.training.datasets.emodb import EMODB_EMOTIONS, EMODB_SPEAKERS, read_emodb
from emostream.training.datasets.example import MEDIA_EXTENSIONS, DatasetError, Example, parse_words
from emostream.training.datasets.manifest import read_manifest
from emostream.training.datasets.mer import mer_speaker, read_mer2023, read_mer_ov
from emostream.training.datasets.ravdess import RAVDESS_EMOTIONS, RAVDESS_STATEMENTS, ravdess_split, read_ravdess
from emostream.training.datasets.splits import check_speaker_independent, speaker_split
from emostream.training.datasets.tess import TESS_FILE_EMOTIONS, TESS_FOLDER_EMOTIONS, read_tess

__all__ = [
    "CORPUS_LABEL_SETS",
    "CAPTION_EXPLANATION_FIELDS",
    "CAPTION_LABEL_FIELDS",
    "CAPTION_NAME_FIELDS",
    "CAPTION_TRANSCRIPT_FIELDS",
    "CAPTION_WORD_FIELDS",
    "EMODB_EMOTIONS",
    "EMODB_SPEAKERS",
    "MEDIA_EXTENSIONS",
    "RAVDESS_EMOTIONS",
    "RAVDESS_STATEMENTS",
    "TESS_FILE_EMOTIONS",
    "TESS_FOLDER_EMOTIONS",
    "DatasetError",
    "Example",
    "check_speaker_independent",
    "corpus_classes",
    "mer_speaker",
    "parse_words",
    "ravdess_split",
    "read_captions",
    "read_emodb",
    "read_manifest",
    "read_mer2023",
    "read_mer_ov",
    "read_ravdess",
    "read_tess",
    "speaker_split",
]
