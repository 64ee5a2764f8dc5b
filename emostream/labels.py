"""Emotion label sets the system supports, and documented mappings between them.

Label sets
----------
Each set is a tuple of lowercase names in the dataset's own class order (index i = class i):

============  =====  ==========================================================================  ==========================================
name          size   order                                                                       source of the order
============  =====  ==========================================================================  ==========================================
ravdess8      8      neutral, calm, happy, sad, angry, fearful, disgust, surprised               RAVDESS file-name emotion codes 01..08
tess7         7      angry, disgust, fear, happy, neutral, pleasant_surprise, sad                TESS folder names, alphabetical
emodb7        7      anger, boredom, disgust, fear, happiness, sadness, neutral                  EmoDB emotion letters W L E A F T N
mer2023_6     6      neutral, angry, happy, sad, worried, surprise                               MER2023 baseline (MERTools) ``emos``
merr9         9      neutral, angry, happy, sad, worried, surprise, fear, contempt, doubt        Emotion-LLaMA ``FeatureFaceDataset`` emos
fer7          7      angry, disgust, fear, happy, sad, surprise, neutral                         FER-2013 ``emotion`` column 0..6
dfew7         7      happy, sad, neutral, angry, surprise, disgust, fear                         DFEW labels 1..7
ferplus8      8      neutral, happiness, surprise, sadness, anger, disgust, fear, contempt       FER+ vote columns, less unknown and NF
============  =====  ==========================================================================  ==========================================

MERR's annotation files give each label as a word, so its only index order is the reference implementation's
(MER2023's six, then fear, contempt, doubt); Emotion-LLaMA's prompt lists the nine in a different order.

TESS and EmoDB (more speakers for the ravdess8 voice model) carry their labels only as words in file and folder
names, so their orders are the ones given above. TESS's only surprise is "pleasant surprise": it is the concept
surprised (ravdess8's surprised does not fix a valence either). EmoDB's boredom is a concept of its own,
``bored``, which ravdess8 lacks: a reader targeting ravdess8 keeps such a clip without a class label (see
``corresponding_label``), and mapped probabilities spread it by ``NEAREST``. Neither corpus has calm; EmoDB
has no surprised.

Canonical vocabulary
--------------------
Every set's names are normalised into one vocabulary, ``CANONICAL``::

    neutral, calm, happy, sad, angry, fearful, disgust, surprised, worried, doubt, contempt, bored

Normalisation only renames (``TO_CANONICAL``), e.g. "fear" -> "fearful", "surprise" -> "surprised",
"happiness" -> "happy", "pleasant_surprise" -> "surprised"; a name it does not list is already canonical.
No two labels of one set share a canonical concept.

Mapping rules (``mapping_matrix(source, target)``)
---------------------------------------------------
A row per source label, a column per target label; each row is a probability distribution saying where
the probability of that source label goes:

1. The same concept in the target set: all of it goes there (1:1). Hence a set maps to itself as the identity.
2. A concept the target lacks: it is spread over its nearest concepts with the weights of ``NEAREST``;
   a nearest concept the target also lacks is itself expanded through ``NEAREST`` (never revisiting a concept
   already on the path, and renormalising over what is left). E.g. contempt -> mer2023_6: disgust (absent;
   its own neighbours are contempt, already visited, and angry) and angry, so contempt -> angry 1.0.

==========  ============================  ==================================================================
concept     nearest (weight)              why
==========  ============================  ==================================================================
calm        neutral 0.8, happy 0.2        low-arousal, mildly pleasant; a quiet delivery much like neutral
fearful     worried 1.0                   same threat/anxiety family; MER2023 has worried instead of fear
worried     fearful 1.0                   the reverse: fear is the sets' only anxiety-family class
disgust     contempt 0.6, angry 0.4       the "CAD" hostility/rejection emotions (Rozin et al. 1999)
contempt    disgust 0.6, angry 0.4        idem; contempt is closest to disgust
doubt       neutral 0.7, worried 0.3      a mostly low-arousal cognitive state with an uneasy component
bored       neutral 0.6, sad 0.4          a flat, low-arousal delivery, mildly unpleasant (not calm: pleasant)
surprised   happy 0.5, fearful 0.5        high arousal, valence either way (EmoDB has no surprise)
==========  ============================  ==================================================================

The resulting mappings are a convention for combining heads trained on different datasets, not measured
confusion rates. A hard label is never spread: ``corresponding_label`` gives the same concept in another set,
or None when that set lacks it.

Valence/arousal
---------------
``VALENCE_AROUSAL`` places each canonical concept in Russell's (1980) circumplex, both axes in [-1, 1];
``expected_valence_arousal`` is the probability-weighted mean of those anchors.

Open vocabulary
---------------
``OPEN_WORDS`` gives each canonical concept its basic and intense word from the intensity tiers of Plutchik's
(2001) wheel (sadness / grief, anger / rage …); ``open_words`` picks a clip's words by its intensity
(``INTENSITIES``). The LLM's instruction targets take their words from there and nowhere else.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

__all__ = [
    "CANONICAL",
    "DFEW7",
    "EMODB7",
    "FER7",
    "FERPLUS8",
    "LABEL_SETS",
    "MER2023_6",
    "MERR9",
    "INTENSITIES",
    "NEAREST",
    "OPEN_WORDS",
    "RAVDESS8",
    "SYNONYMS",
    "TESS7",
    "TO_CANONICAL",
    "VALENCE_AROUSAL",
    "canonical_labels",
    "corresponding_label",
    "expected_valence_arousal",
    "label_set",
    "map_probabilities",
    "mapping_matrix",
    "near_labels",
    "open_words",
    "parse_label",
]

# ---------------------------------------------------------------------------------------------------- label sets

# RAVDESS (Livingstone & Russo 2018, PLoS ONE 13(5): e0196391), 3rd field of each file name:
# 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised.
RAVDESS8: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")

# TESS (Dupuis & Pichora-Fuller 2010, Toronto emotional speech set): the emotion part of its folder names, spelt
# consistently (the original mixes "Fear"/"fear", "Sad"/"sad", "Pleasant_surprise"/"pleasant_surprised"), in
# alphabetical order as the folders list; TESS numbers nothing.
TESS7: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "pleasant_surprise", "sad")

# EmoDB (Burkhardt et al. 2005, Interspeech, "A database of German emotional speech"): the 6th character of
# each file name, in the order its documentation lists them: W anger (Wut), L boredom (Langeweile), E disgust
# (Ekel), A fear (Angst), F happiness (Freude), T sadness (Trauer), N neutral.
EMODB7: tuple[str, ...] = ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral")

# MER2023 (Lian et al. 2023, "MER 2023: Multi-label Learning, Modality Robustness, and Semi-Supervised
# Learning"), discrete track: the index order of the official baseline (MERTools/MER2023,
# `emos = ['neutral', 'angry', 'happy', 'sad', 'worried', 'surprise']`). The paper words them
# neutral, anger, happiness, sadness, worry, surprise.
MER2023_6: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise")

# MERR (Cheng et al. 2024, "Emotion-LLaMA", NeurIPS): the index order of the reference implementation
# (Emotion-LLaMA, minigpt4/datasets/datasets/first_face.py: `emos = ['neutral', 'angry', 'happy', 'sad',
# 'worried', 'surprise', 'fear', 'contempt', 'doubt']`, i.e. MER2023's six followed by three more).
# MERR's annotation files carry the label as a word, not a number, so this is the only index order there
# is; its instruction prompt lists the same nine in another order ("happy, sad, neutral, angry, worried,
# surprise, fear, contempt, doubt"). MERR has no disgust class (only two samples were found; dropped).
MERR9: tuple[str, ...] = ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt")

# FER-2013 (Goodfellow et al. 2013, ICML challenges in representation learning), `emotion` column 0..6:
# 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral. The face expression network
# (perception/faces/expression.py) outputs this order.
FER7: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# DFEW (Jiang et al. 2020, ACM MM, "DFEW: A Large-Scale Database for Recognizing Dynamic Facial Expressions
# in the Wild"), labels 1..7: happy, sad, neutral, angry, surprise, disgust, fear (the order also used by
# DFER-CLIP and by Emotion-LLaMA's DFEW evaluation config).
DFEW7: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")

# FER+ (Barsoum, Zhang, Canton Ferrer & Zhang 2016, ICMI, "Training deep networks for facial expression
# recognition with crowd-sourced label distribution"): the FER-2013 images re-labelled by ten raters each; the
# order of the vote columns of its fer2013new.csv. The last two columns, "unknown" and "NF" (not a face), are
# not emotions and are left out: they are votes about the image, handled where the votes are read
# (emostream/training/face_data.py). The fine-tuned face expression network outputs this order.
FERPLUS8: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "ravdess8": RAVDESS8,
    "tess7": TESS7,
    "emodb7": EMODB7,
    "mer2023_6": MER2023_6,
    "merr9": MERR9,
    "fer7": FER7,
    "dfew7": DFEW7,
    "ferplus8": FERPLUS8,
}

# ---------------------------------------------------------------------------------------------------- canonical vocabulary

CANONICAL: tuple[str, ...] = (
    "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised", "worried", "doubt", "contempt", "bored",
)  # fmt: skip

# Per-set renaming into CANONICAL; a label not listed keeps its name.
TO_CANONICAL: dict[str, dict[str, str]] = {
    "ravdess8": {},
    "tess7": {"fear": "fearful", "pleasant_surprise": "surprised"},
    "emodb7": {"anger": "angry", "boredom": "bored", "fear": "fearful", "happiness": "happy", "sadness": "sad"},
    "mer2023_6": {"surprise": "surprised"},
    "merr9": {"fear": "fearful", "surprise": "surprised"},
    "fer7": {"fear": "fearful", "surprise": "surprised"},
    "dfew7": {"fear": "fearful", "surprise": "surprised"},
    "ferplus8": {"happiness": "happy", "surprise": "surprised", "sadness": "sad", "anger": "angry", "fear": "fearful"},
}

# Where a concept's probability goes in a set that lacks it: (canonical concept, weight), weights summing to 1.
# Concepts present in every set (neutral, happy, sad, angry) need no entry.
NEAREST: dict[str, tuple[tuple[str, float], ...]] = {
    # Calm (RAVDESS only) is a quiet, low-arousal, mildly pleasant delivery, much like neutral: most of it goes
    # there, and the small happy share keeps some of its positive valence (no other set has a pleasant low-arousal class).
    "calm": (("neutral", 0.8), ("happy", 0.2)),
    # MER2023 has no fear class: worried is the same negative, threat-related (anxiety) family at lower
    # intensity, so fearful goes there whole.
    "fearful": (("worried", 1.0),),
    # The reverse: in RAVDESS, FER-2013 and DFEW fear is the only anxiety-family class.
    "worried": (("fearful", 1.0),),
    # Disgust, contempt and anger are the three hostility/rejection ("CAD") emotions (Rozin, Lowery, Imada &
    # Haidt 1999, JPSP 76(4)); contempt is the nearer one to disgust, anger the broader fallback. Applies to
    # MERR (no disgust: contempt 0.6, angry 0.4) and MER2023 (neither: all to angry).
    "disgust": (("contempt", 0.6), ("angry", 0.4)),
    # Symmetric with disgust: in sets without contempt it goes mostly to disgust, the rest to angry.
    "contempt": (("disgust", 0.6), ("angry", 0.4)),
    # Doubt (MERR) is mostly a low-arousal, near-neutral cognitive state, with an uneasy, uncertain component
    # carried by worried (or, where worried is absent, by fearful through its own entry).
    "doubt": (("neutral", 0.7), ("worried", 0.3)),
    # Boredom (EmoDB) is a flat, slow, low-arousal delivery, acoustically much like neutral; sad carries its low
    # arousal and mildly negative valence. Not calm: calm is the pleasant side of low arousal.
    "bored": (("neutral", 0.6), ("sad", 0.4)),
    # Surprise is high-arousal with a valence that goes either way: a pleasant surprise is near joy, an alarming
    # one near fear (the two classes surprise is most confused with). Only EmoDB lacks it.
    "surprised": (("happy", 0.5), ("fearful", 0.5)),
}

# Words parse_label accepts besides a set's own names (case-insensitive), each -> canonical concept. Every word
# is a label some dataset uses, or a plain noun/adjective form of one; nothing looser (e.g. no "mad", "scared").
SYNONYMS: dict[str, str] = {
    # canonical names and the sets' own spellings
    **{name: name for name in CANONICAL},
    "fear": "fearful",
    "surprise": "surprised",
    # noun forms: the MER2023 paper (happiness, sadness, anger, worry), DFEW/DFER-CLIP class names
    # (happiness, sadness, anger), MELD (joy, sadness, anger, disgust, fear, surprise)
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "anger": "angry",
    "worry": "worried",
    "calmness": "calm",
    "boredom": "bored",
    # adjective forms
    "disgusted": "disgust",
    "contemptuous": "contempt",
    "doubtful": "doubt",
    "afraid": "fearful",
    # TESS's folder word for its surprise class
    "pleasant_surprise": "surprised",
    # three-letter codes of CREMA-D (ANG, DIS, FEA, HAP, NEU, SAD) and IEMOCAP (ang, hap, sad, neu, fea, sur, dis)
    "ang": "angry",
    "dis": "disgust",
    "fea": "fearful",
    "hap": "happy",
    "neu": "neutral",
    "sur": "surprised",
}

# ---------------------------------------------------------------------------------------------------- open vocabulary

# The open-vocabulary words of the LLM's instruction targets (emostream/models/instructions.py), per concept: its
# basic word and its intense word. Source: the intensity tiers of Plutchik's wheel of emotions (Plutchik, R. 2001,
# "The Nature of Emotions", American Scientist 89(4), 344-350): each primary emotion at basic and intense strength,
# e.g. sadness / grief, anger / rage, fear / terror. A concept outside the wheel's eight primaries has only its own
# noun (contempt is the wheel's disgust+anger dyad and boredom its mild disgust). A clip's words are looked up
# here (``open_words``), never written per clip.
OPEN_WORDS: dict[str, tuple[str, str | None]] = {
    "neutral": ("neutral", None),
    "calm": ("calmness", None),
    "happy": ("joy", "ecstasy"),
    "sad": ("sadness", "grief"),
    "angry": ("anger", "rage"),
    "fearful": ("fear", "terror"),
    "disgust": ("disgust", "loathing"),
    "surprised": ("surprise", "amazement"),
    "worried": ("worry", None),
    "doubt": ("doubt", None),
    "contempt": ("contempt", None),
    "bored": ("boredom", None),
}
INTENSITIES = ("normal", "strong", "unknown")  # RAVDESS's two levels; "unknown" for corpora that do not say

# ---------------------------------------------------------------------------------------------------- valence / arousal

# Anchors in Russell's circumplex (Russell, J. A. 1980, "A circumplex model of affect", Journal of Personality
# and Social Psychology 39(6), 1161-1178): (valence, arousal), each in [-1, 1]. The values are approximate
# placements read from the circumplex's ordering of affect words, not measured norms; use them for
# direction and rough magnitude only.
VALENCE_AROUSAL: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "calm": (0.3, -0.6),
    "happy": (0.8, 0.5),
    "sad": (-0.6, -0.4),
    "angry": (-0.6, 0.8),
    "fearful": (-0.6, 0.6),
    "disgust": (-0.7, 0.3),
    "surprised": (0.2, 0.8),
    "worried": (-0.4, 0.3),
    "doubt": (-0.2, 0.0),
    "contempt": (-0.5, 0.2),
    "bored": (-0.4, -0.7),
}


def _check_tables() -> None:
    """Import-time consistency of the tables above (raises RuntimeError, not assert: must survive python -O)."""
    problems: list[str] = []
    if set(TO_CANONICAL) != set(LABEL_SETS):
        problems.append(f"TO_CANONICAL covers {sorted(TO_CANONICAL)}, LABEL_SETS {sorted(LABEL_SETS)}")
    for name, labels in LABEL_SETS.items():
        renames = TO_CANONICAL.get(name, {})
        if unused := set(renames) - set(labels):
            problems.append(f"{name}: TO_CANONICAL renames labels it does not have: {sorted(unused)}")
        concepts = [renames.get(label, label) for label in labels]
        if unknown := [c for c in concepts if c not in CANONICAL]:
            problems.append(f"{name}: labels outside CANONICAL: {unknown}")
        if len(set(concepts)) != len(concepts):
            problems.append(f"{name}: two labels share a canonical concept: {concepts}")
    if set(VALENCE_AROUSAL) != set(CANONICAL):
        problems.append("VALENCE_AROUSAL must have exactly the CANONICAL concepts")
    for concept, (valence, arousal) in VALENCE_AROUSAL.items():
        if not (-1.0 <= valence <= 1.0 and -1.0 <= arousal <= 1.0):
            problems.append(f"VALENCE_AROUSAL[{concept!r}] outside [-1, 1]")
    for concept, nearest in NEAREST.items():
        if concept not in CANONICAL or any(n not in CANONICAL or n == concept for n, _ in nearest):
            problems.append(f"NEAREST[{concept!r}] names a concept outside CANONICAL (or itself)")
        if any(w <= 0 for _, w in nearest) or abs(sum(w for _, w in nearest) - 1.0) > 1e-9:
            problems.append(f"NEAREST[{concept!r}] weights must be positive and sum to 1")
    if unknown_words := {w: c for w, c in SYNONYMS.items() if c not in CANONICAL or w != w.lower()}:
        problems.append(f"SYNONYMS with a bad concept or a non-lowercase word: {unknown_words}")
    if set(OPEN_WORDS) != set(CANONICAL):
        problems.append("OPEN_WORDS must have exactly the CANONICAL concepts")
    if problems:
        raise RuntimeError("emostream.labels tables are inconsistent: " + "; ".join(problems))


_check_tables()

# ---------------------------------------------------------------------------------------------------- functions


def _labels(name: str) -> tuple[str, ...]:
    try:
        return LABEL_SETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown label set {name!r}; known sets: {', '.join(LABEL_SETS)}") from None


def label_set(name: str) -> tuple[str, ...]:
    """The labels of the set called `name` (a key of LABEL_SETS), in the dataset's class order.

    Raises ValueError naming the unknown set and the known ones.
    """
    return _labels(name)


def canonical_labels(name: str) -> tuple[str, ...]:
    """The set's labels renamed into CANONICAL, same order (e.g. fer7: ..., "fearful", ..., "surprised", ...)."""
    labels = _labels(name)
    renames = TO_CANONICAL[name]
    return tuple(renames.get(label, label) for label in labels)


def _spread(concept: str, present: frozenset[str], path: frozenset[str]) -> dict[str, float]:
    """Where `concept`'s unit of probability goes among the `present` concepts (see the module docstring)."""
    if concept in present:
        return {concept: 1.0}
    out: dict[str, float] = {}
    kept = 0.0
    for neighbour, weight in NEAREST.get(concept, ()):
        if neighbour in path:
            continue  # a cycle (worried <-> fearful, disgust <-> contempt): drop it, renormalise the rest
        spread = _spread(neighbour, present, path | {neighbour})
        if not spread:
            continue
        kept += weight
        for target, share in spread.items():
            out[target] = out.get(target, 0.0) + weight * share
    return {target: share / kept for target, share in out.items()} if kept > 0 else {}


@cache
def _mapping(source: str, target: str) -> npt.NDArray[np.float64]:
    source_concepts, target_concepts = canonical_labels(source), canonical_labels(target)
    present = frozenset(target_concepts)
    matrix = np.zeros((len(source_concepts), len(target_concepts)), np.float64)
    for row, concept in enumerate(source_concepts):
        spread = _spread(concept, present, frozenset({concept}))
        if not spread:
            raise RuntimeError(f"NEAREST gives {concept!r} ({source}) no route into {target}; add an entry")
        for target_concept, share in spread.items():
            matrix[row, target_concepts.index(target_concept)] = share
    matrix.setflags(write=False)
    return matrix


def mapping_matrix(source: str, target: str) -> npt.NDArray[np.float64]:
    """Shape (len(source), len(target)): row i is where source label i's probability goes; rows sum to 1.

    `p_target = p_source @ mapping_matrix(source, target)`. Identical concepts map 1:1 (so a set maps to
    itself as the identity); a concept the target lacks is spread by NEAREST. Returns a fresh float64 array.
    """
    _labels(source)  # clear errors for unknown names (before the cache sees them)
    _labels(target)
    return _mapping(source, target).copy()


def near_labels(name: str) -> npt.NDArray[np.bool_]:
    """Shape (n, n) bool: [k, j] is True when label j is among NEAREST's neighbours of label k's concept (calm ->
    neutral, happy in ravdess8): where a corpus without k has a clip labelled j, that clip may well have been k."""
    concepts = canonical_labels(name)
    near = np.zeros((len(concepts), len(concepts)), bool)
    for k, concept in enumerate(concepts):
        for neighbour, _ in NEAREST.get(concept, ()):
            if neighbour in concepts:
                near[k, concepts.index(neighbour)] = True
    return near


def _as_probabilities(probabilities: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(probabilities)
    n = len(_labels(name))
    if array.ndim == 0 or array.shape[-1] != n:
        raise ValueError(f"probabilities for {name} need a last axis of {n} ({', '.join(LABEL_SETS[name])}), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"probabilities must be real numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError("probabilities must be finite and non-negative")
    return array


def _renormalise(values: np.ndarray) -> np.ndarray:
    """Divide by the last-axis sum; an all-zero row stays all zeros (instead of NaN)."""
    total = values.sum(axis=-1, keepdims=True)
    return np.divide(values, total, out=np.zeros_like(values), where=total > 0)


def map_probabilities(probabilities: npt.ArrayLike, source: str, target: str) -> np.ndarray:
    """Probabilities (..., len(source)) -> (..., len(target)) through mapping_matrix, renormalised to sum to 1.

    Input that does not sum to 1 (e.g. un-normalised scores) is normalised too; an all-zero row maps to zeros.
    The result is float32 for float32/float16 input, float64 otherwise.
    """
    array = _as_probabilities(probabilities, source)
    _labels(target)
    out_dtype = np.float32 if array.dtype in (np.float32, np.float16) else np.float64
    mapped = array.astype(np.float64) @ _mapping(source, target)
    return _renormalise(mapped).astype(out_dtype)


def expected_valence_arousal(probabilities: npt.ArrayLike, label_set: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(valence, arousal): the probability-weighted mean of VALENCE_AROUSAL over the set's labels.

    `probabilities` has shape (..., len(set)); it is normalised first. Returns two float64 arrays of shape
    `probabilities.shape[:-1]` (0-d for a single distribution: `float(valence)`); all-zero rows give (0, 0).
    """
    array = _renormalise(_as_probabilities(probabilities, label_set).astype(np.float64))
    anchors = np.array([VALENCE_AROUSAL[c] for c in canonical_labels(label_set)], np.float64)  # (n, 2)
    weighted = array @ anchors
    return np.asarray(weighted[..., 0]), np.asarray(weighted[..., 1])


def parse_label(text: str, label_set: str) -> int:
    """The index in the named set of a label written as text: the set's own name, a SYNONYMS word, any case.

    "Happiness", "happy", "JOY" -> happy's index; "fear" and "fearful" both parse in every set with fear.
    A word for a concept the set does not have (e.g. "calm" in fer7) is an error, not a silent mapping:
    use mapping_matrix for that. Raises ValueError naming the value and the set's allowed labels.
    """
    labels = _labels(label_set)
    concept = SYNONYMS.get(text.strip().lower()) if isinstance(text, str) else None
    concepts = canonical_labels(label_set)
    if concept is None or concept not in concepts:
        raise ValueError(f"{text!r} is not a {label_set} label; allowed: {', '.join(labels)} (or their synonyms in SYNONYMS)")
    return concepts.index(concept)


def open_words(label: str, label_set: str, intensity: str) -> tuple[str, ...]:
    """The open-vocabulary words of a label at an intensity (``OPEN_WORDS``): the intense word first when the clip is
    "strong" and the concept has one, then the basic word. Raises ValueError for an unknown label or intensity."""
    if intensity not in INTENSITIES:
        raise ValueError(f"unknown intensity {intensity!r}; known: {', '.join(INTENSITIES)}")
    basic, intense = OPEN_WORDS[canonical_labels(label_set)[parse_label(label, label_set)]]
    return (intense, basic) if intensity == "strong" and intense else (basic,)


def corresponding_label(label: str, source: str, target: str) -> str | None:
    """The `target` set's name for the concept of `source` label `label`, or None when `target` lacks that concept.

    For hard labels (a clip's class): "pleasant_surprise" (tess7) -> "surprised" (ravdess8); "boredom" (emodb7)
    -> None in ravdess8. Unlike mapping_matrix, nothing is spread to a nearest concept: a class the target set
    lacks is not guessed. Raises ValueError for an unknown set or a `label` that is not one of `source`'s names.
    """
    labels = _labels(source)
    _labels(target)
    if label not in labels:
        raise ValueError(f"{label!r} is not a {source} label; allowed: {', '.join(labels)}")
    concept = canonical_labels(source)[labels.index(label)]
    concepts = canonical_labels(target)
    return LABEL_SETS[target][concepts.index(concept)] if concept in concepts else None
