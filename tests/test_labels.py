"""Emotion label sets and the mappings between them (emostream.labels): pure numpy, fast."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from emostream import labels
from emostream.labels import (
    CANONICAL,
    FER7,
    LABEL_SETS,
    NEAREST,
    VALENCE_AROUSAL,
    canonical_labels,
    corresponding_label,
    expected_valence_arousal,
    label_set,
    map_probabilities,
    mapping_matrix,
    parse_label,
)

PAIRS = list(itertools.product(LABEL_SETS, repeat=2))


def weight(source: str, source_label: str, target: str, target_label: str) -> float:
    matrix = mapping_matrix(source, target)
    return float(matrix[label_set(source).index(source_label), label_set(target).index(target_label)])


def test_set_orders() -> None:
    assert label_set("ravdess8") == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    assert label_set("mer2023_6") == ("neutral", "angry", "happy", "sad", "worried", "surprise")
    assert label_set("merr9") == ("neutral", "angry", "happy", "sad", "worried", "surprise", "fear", "contempt", "doubt")
    assert label_set("fer7") == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER-2013 0..6
    assert label_set("fer7") == FER7  # the face network's output order, not a copy of it
    assert label_set("dfew7") == ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
    assert label_set("tess7") == ("angry", "disgust", "fear", "happy", "neutral", "pleasant_surprise", "sad")
    assert label_set("emodb7") == ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral")  # W L E A F T N
    assert label_set("ferplus8") == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
    assert set(LABEL_SETS) == {"ravdess8", "tess7", "emodb7", "mer2023_6", "merr9", "fer7", "dfew7", "ferplus8"}


def test_every_set_normalises_into_the_canonical_vocabulary() -> None:
    for name, names in LABEL_SETS.items():
        concepts = canonical_labels(name)
        assert len(concepts) == len(names) == len(set(concepts)), name
        assert set(concepts) <= set(CANONICAL), name
    assert canonical_labels("fer7")[label_set("fer7").index("fear")] == "fearful"
    assert canonical_labels("fer7")[label_set("fer7").index("surprise")] == "surprised"
    assert set(VALENCE_AROUSAL) == set(CANONICAL)
    for nearest in NEAREST.values():
        assert sum(w for _, w in nearest) == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(LABEL_SETS))
def test_mapping_to_itself_is_the_identity(name: str) -> None:
    np.testing.assert_array_equal(mapping_matrix(name, name), np.eye(len(label_set(name))))


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_rows_are_distributions(source: str, target: str) -> None:
    matrix = mapping_matrix(source, target)
    assert matrix.shape == (len(label_set(source)), len(label_set(target)))
    assert np.all(matrix >= 0)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # identical concepts map 1:1
    source_concepts, target_concepts = canonical_labels(source), canonical_labels(target)
    for row, concept in enumerate(source_concepts):
        if concept in target_concepts:
            assert matrix[row, target_concepts.index(concept)] == 1.0, (source, target, concept)


def test_fer7_to_ravdess8() -> None:
    assert weight("fer7", "fear", "ravdess8", "fearful") == 1.0
    assert weight("fer7", "neutral", "ravdess8", "neutral") == 1.0
    assert weight("fer7", "surprise", "ravdess8", "surprised") == 1.0
    assert mapping_matrix("fer7", "ravdess8")[:, label_set("ravdess8").index("calm")].sum() == 0.0  # nothing becomes calm


def test_ferplus8_to_fer7() -> None:
    # FER+'s nouns are FER-2013's concepts; its contempt, which FER-2013 lacks, goes to disgust and anger
    assert canonical_labels("ferplus8") == ("neutral", "happy", "surprised", "sad", "angry", "disgust", "fearful", "contempt")
    assert weight("ferplus8", "happiness", "fer7", "happy") == 1.0
    assert weight("ferplus8", "contempt", "fer7", "disgust") == pytest.approx(0.6)
    assert weight("ferplus8", "contempt", "fer7", "angry") == pytest.approx(0.4)
    assert mapping_matrix("fer7", "ferplus8")[:, label_set("ferplus8").index("contempt")].sum() == 0.0
    assert parse_label("Happiness", "ferplus8") == parse_label("happy", "ferplus8") == 1


def test_ravdess8_to_mer2023_6() -> None:
    matrix = mapping_matrix("ravdess8", "mer2023_6")
    calm = matrix[label_set("ravdess8").index("calm")]
    assert label_set("mer2023_6")[int(calm.argmax())] == "neutral"
    assert calm[label_set("mer2023_6").index("neutral")] > 0.5
    assert weight("ravdess8", "fearful", "mer2023_6", "worried") == 1.0
    assert weight("ravdess8", "disgust", "mer2023_6", "angry") == 1.0  # no disgust or contempt in MER2023


def test_missing_concepts_go_to_their_nearest() -> None:
    assert weight("mer2023_6", "worried", "fer7", "fear") == 1.0
    assert weight("merr9", "contempt", "fer7", "disgust") == pytest.approx(0.6)
    assert weight("merr9", "contempt", "fer7", "angry") == pytest.approx(0.4)
    assert weight("merr9", "contempt", "mer2023_6", "angry") == 1.0  # via disgust, which MER2023 lacks too
    assert weight("merr9", "doubt", "mer2023_6", "neutral") == pytest.approx(0.7)
    assert weight("merr9", "doubt", "mer2023_6", "worried") == pytest.approx(0.3)
    assert weight("merr9", "doubt", "dfew7", "fear") == pytest.approx(0.3)  # worried -> fear where worried is absent
    assert weight("dfew7", "disgust", "merr9", "contempt") == pytest.approx(0.6)


@pytest.mark.parametrize("middle", [name for name in LABEL_SETS if name != "ravdess8"])
def test_round_trip_keeps_argmax_for_shared_labels(middle: str) -> None:
    there_and_back = mapping_matrix("ravdess8", middle) @ mapping_matrix(middle, "ravdess8")
    shared = set(canonical_labels("ravdess8")) & set(canonical_labels(middle))
    assert {"neutral", "happy", "sad", "angry"} <= shared
    for i, concept in enumerate(canonical_labels("ravdess8")):
        if concept in shared:
            assert int(there_and_back[i].argmax()) == i, (middle, concept)
    # fearful has no twin in MER2023 but comes back through worried
    fearful = label_set("ravdess8").index("fearful")
    assert int(there_and_back[fearful].argmax()) == fearful


def test_map_probabilities() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=(4, 3)).astype(np.float32)  # (..., 7) FER-7
    q = map_probabilities(p, "fer7", "merr9")
    assert q.shape == (4, 3, 9) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(q, p.astype(np.float64) @ mapping_matrix("fer7", "merr9"), atol=1e-6)
    # un-normalised scores are renormalised; an all-zero row stays zero instead of NaN
    np.testing.assert_allclose(map_probabilities([2.0, 0, 0, 0, 0, 0, 0], "fer7", "ravdess8")[4], 1.0)
    assert not map_probabilities(np.zeros((2, 7)), "fer7", "dfew7").any()
    with pytest.raises(ValueError, match="last axis of 7"):
        map_probabilities(np.ones(8), "fer7", "dfew7")
    with pytest.raises(ValueError, match="non-negative"):
        map_probabilities([-0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.1], "fer7", "dfew7")


def test_mapping_matrix_is_a_fresh_copy() -> None:
    matrix = mapping_matrix("fer7", "ravdess8")
    matrix[:] = 0
    assert mapping_matrix("fer7", "ravdess8").sum() == 7


def test_expected_valence_arousal() -> None:
    for name in LABEL_SETS:
        names = canonical_labels(name)  # FER+ says "happiness", "sadness"
        one_hot = np.eye(len(names))
        valence, arousal = expected_valence_arousal(one_hot[names.index("happy")], name)
        assert valence > 0 and arousal > 0
        valence, arousal = expected_valence_arousal(one_hot[names.index("sad")], name)
        assert valence < 0 and arousal < 0
        valence, arousal = expected_valence_arousal(one_hot[canonical_labels(name).index("neutral")], name)
        assert float(valence) == 0.0 and float(arousal) == 0.0
    # a weighted average over a batch
    valence, arousal = expected_valence_arousal(np.array([[0.5, 0, 0, 0.5, 0, 0, 0]] * 3), "fer7")  # angry + happy
    assert valence.shape == arousal.shape == (3,)
    np.testing.assert_allclose(valence, (VALENCE_AROUSAL["angry"][0] + VALENCE_AROUSAL["happy"][0]) / 2)
    np.testing.assert_allclose(arousal, (VALENCE_AROUSAL["angry"][1] + VALENCE_AROUSAL["happy"][1]) / 2)
    for anchor in VALENCE_AROUSAL.values():
        assert all(-1.0 <= x <= 1.0 for x in anchor)


def test_parse_label() -> None:
    assert parse_label("happy", "ravdess8") == 2
    assert parse_label(" Happiness ", "dfew7") == label_set("dfew7").index("happy")
    assert parse_label("JOY", "fer7") == label_set("fer7").index("happy")
    assert parse_label("fear", "ravdess8") == label_set("ravdess8").index("fearful")
    assert parse_label("Fearful", "fer7") == label_set("fer7").index("fear")
    assert parse_label("surprised", "mer2023_6") == label_set("mer2023_6").index("surprise")
    assert parse_label("worry", "merr9") == label_set("merr9").index("worried")
    for name, names in LABEL_SETS.items():
        for i, label in enumerate(names):
            assert parse_label(label.upper(), name) == i


def test_unknown_set_names_the_bad_value_and_the_known_ones() -> None:
    for call in (
        lambda: label_set("affectnet8"),
        lambda: mapping_matrix("affectnet8", "fer7"),
        lambda: mapping_matrix("fer7", "affectnet8"),
        lambda: map_probabilities(np.ones(7), "fer7", "affectnet8"),
        lambda: expected_valence_arousal(np.ones(7), "affectnet8"),
        lambda: parse_label("happy", "affectnet8"),
    ):
        with pytest.raises(ValueError, match="'affectnet8'") as error:
            call()
        assert all(name in str(error.value) for name in LABEL_SETS)


def test_unknown_label_names_the_row_value_and_the_allowed_labels() -> None:
    with pytest.raises(ValueError, match="'elated'") as error:
        parse_label("elated", "fer7")
    assert "angry, disgust, fear, happy, sad, surprise, neutral" in str(error.value)
    # a known word for a concept this set does not have is an error too, not a silent mapping
    with pytest.raises(ValueError, match="'calm' is not a fer7 label"):
        parse_label("calm", "fer7")
    with pytest.raises(ValueError, match="'contempt' is not a ravdess8 label"):
        parse_label("contempt", "ravdess8")


def test_module_tables_are_checked_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(labels.NEAREST, "calm", (("neutral", 0.5),))
    with pytest.raises(RuntimeError, match="sum to 1"):
        labels._check_tables()


def test_tess7_and_emodb7_to_ravdess8() -> None:
    assert canonical_labels("tess7") == ("angry", "disgust", "fearful", "happy", "neutral", "surprised", "sad")
    assert canonical_labels("emodb7") == ("angry", "bored", "disgust", "fearful", "happy", "sad", "neutral")
    assert weight("tess7", "pleasant_surprise", "ravdess8", "surprised") == 1.0
    assert weight("emodb7", "happiness", "ravdess8", "happy") == 1.0
    # boredom, which ravdess8 lacks, is spread by NEAREST when probabilities are mapped
    assert weight("emodb7", "boredom", "ravdess8", "neutral") == pytest.approx(0.6)
    assert weight("emodb7", "boredom", "ravdess8", "sad") == pytest.approx(0.4)
    # and ravdess8's surprised, which EmoDB lacks, goes half to happiness, half to fear
    assert weight("ravdess8", "surprised", "emodb7", "happiness") == pytest.approx(0.5)
    assert weight("ravdess8", "surprised", "emodb7", "fear") == pytest.approx(0.5)
    for corpus in ("tess7", "emodb7"):  # neither corpus has calm: nothing of theirs becomes calm
        assert mapping_matrix(corpus, "ravdess8")[:, label_set("ravdess8").index("calm")].sum() == 0.0
    assert parse_label("Pleasant_Surprise", "tess7") == parse_label("surprised", "tess7") == 5
    assert parse_label("bored", "emodb7") == parse_label("Boredom", "emodb7") == 1


def test_corresponding_label_never_guesses_a_missing_class() -> None:
    assert corresponding_label("pleasant_surprise", "tess7", "ravdess8") == "surprised"
    assert corresponding_label("fear", "tess7", "ravdess8") == "fearful"
    assert corresponding_label("anger", "emodb7", "ravdess8") == "angry"
    assert corresponding_label("boredom", "emodb7", "ravdess8") is None
    assert corresponding_label("calm", "ravdess8", "emodb7") is None
    assert corresponding_label("boredom", "emodb7", "emodb7") == "boredom"
    assert [corresponding_label(name, "ravdess8", "ravdess8") for name in label_set("ravdess8")] == list(label_set("ravdess8"))
    with pytest.raises(ValueError, match="'bored' is not a emodb7 label; allowed: anger, boredom"):
        corresponding_label("bored", "emodb7", "ravdess8")  # the set's own name, not a synonym
    with pytest.raises(ValueError, match="unknown label set 'tess'"):
        corresponding_label("angry", "tess", "ravdess8")
