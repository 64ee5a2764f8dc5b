"""Evaluation metrics (emostream.training.metrics): hand-computed cases, cross-checked with scikit-learn; fast."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

from emostream.training.metrics import (
    Report,
    evaluate_predictions,
    expected_calibration_error,
    open_vocabulary_scores,
    plot_confusion,
    write_report,
)

LABELS = ("angry", "happy", "sad")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# angry: 3 true, 2 right (one called happy); happy: 2 true, 1 right (one called sad); sad: 3 true, all right.
TRUTH = ["angry", "angry", "angry", "happy", "happy", "sad", "sad", "sad"]
PRED = ["angry", "angry", "happy", "happy", "sad", "sad", "sad", "sad"]


def test_hand_computed_example() -> None:
    report = evaluate_predictions(TRUTH, PRED, LABELS)
    assert report.count == 8
    assert report.labels == LABELS
    np.testing.assert_array_equal(report.confusion, [[2, 1, 0], [0, 1, 1], [0, 0, 3]])
    assert report.war == pytest.approx(6 / 8)
    assert report.per_class_recall == pytest.approx({"angry": 2 / 3, "happy": 1 / 2, "sad": 1.0})
    assert report.uar == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # precision: angry 2/2, happy 1/2, sad 3/4 -> F1: angry 0.8, happy 0.5, sad 6/7; weights 3, 2, 3.
    assert report.weighted_f1 == pytest.approx((3 * 0.8 + 2 * 0.5 + 3 * 6 / 7) / 8)
    # scikit-learn agrees.
    assert report.war == pytest.approx(accuracy_score(TRUTH, PRED))
    assert report.uar == pytest.approx(recall_score(TRUTH, PRED, average="macro"))
    assert report.weighted_f1 == pytest.approx(f1_score(TRUTH, PRED, average="weighted"))
    np.testing.assert_array_equal(report.confusion, confusion_matrix(TRUTH, PRED, labels=list(LABELS)))
    assert report.valence_mse is None and report.arousal_mse is None
    assert report.open_vocabulary_accuracy is None and report.open_vocabulary_recall is None


def test_class_never_predicted() -> None:
    truth = ["angry", "happy", "happy", "sad", "sad"]
    predicted = ["angry", "angry", "angry", "sad", "sad"]  # happy is never predicted
    report = evaluate_predictions(truth, predicted, LABELS)
    assert report.per_class_recall["happy"] == 0.0
    assert report.confusion[:, LABELS.index("happy")].sum() == 0
    assert report.uar == pytest.approx((1 + 0 + 1) / 3)
    assert report.uar == pytest.approx(recall_score(truth, predicted, average="macro"))
    # angry: precision 1/3, recall 1 -> F1 0.5; happy F1 0; sad F1 1; weights 1, 2, 2.
    assert report.weighted_f1 == pytest.approx((1 * 0.5 + 2 * 0 + 2 * 1) / 5)
    assert report.weighted_f1 == pytest.approx(f1_score(truth, predicted, average="weighted", zero_division=0))


def test_class_absent_from_truth_is_left_out_of_uar() -> None:
    labels = ("angry", "happy", "sad", "fearful")
    truth = ["angry", "angry", "happy", "sad"]
    predicted = ["angry", "fearful", "happy", "fearful"]  # fearful is predicted but never true
    report = evaluate_predictions(truth, predicted, labels)
    assert set(report.per_class_recall) == {"angry", "happy", "sad"}
    assert report.uar == pytest.approx((1 / 2 + 1 + 0) / 3)  # not divided by 4
    present = sorted(set(truth))
    assert report.uar == pytest.approx(recall_score(truth, predicted, labels=present, average="macro"))
    assert report.weighted_f1 == pytest.approx(f1_score(truth, predicted, average="weighted", zero_division=0))
    assert report.war == pytest.approx(2 / 4)
    assert report.confusion[labels.index("fearful")].sum() == 0
    assert report.confusion[:, labels.index("fearful")].sum() == 2


@pytest.mark.parametrize("seed", range(5))
def test_random_predictions_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = ("neutral", "happy", "sad", "angry", "surprised", "fearful")
    truth = [labels[i] for i in rng.integers(0, 5, size=60)]  # "fearful" never true
    predicted = [labels[i] for i in rng.integers(0, 6, size=60)]
    report = evaluate_predictions(truth, predicted, labels)
    present = sorted(set(truth))
    assert report.war == pytest.approx(accuracy_score(truth, predicted))
    assert report.uar == pytest.approx(recall_score(truth, predicted, labels=present, average="macro", zero_division=0))
    assert report.weighted_f1 == pytest.approx(f1_score(truth, predicted, average="weighted", zero_division=0))
    np.testing.assert_array_equal(report.confusion, confusion_matrix(truth, predicted, labels=list(labels)))
    assert report.confusion.sum() == 60


def test_valence_and_arousal_mse_skip_missing_targets() -> None:
    report = evaluate_predictions(
        TRUTH[:4],
        PRED[:4],
        LABELS,
        valence_truth=[0.5, None, -0.5, float("nan")],
        valence_pred=[0.0, 0.9, 0.5, None],  # only examples 0 and 2 count
        arousal_truth=[0.2, 0.4, 0.6, 0.8],
        arousal_pred=[0.2, 0.5, 0.4, 1.1],
    )
    assert report.valence_mse == pytest.approx((0.5**2 + 1.0**2) / 2)
    assert report.arousal_mse == pytest.approx((0 + 0.01 + 0.04 + 0.09) / 4)


def test_mse_none_without_targets_and_errors() -> None:
    report = evaluate_predictions(["sad"], ["sad"], LABELS, valence_truth=[None], valence_pred=[0.3])
    assert report.valence_mse is None
    with pytest.raises(ValueError, match=r"valence_pred\[0\]"):
        evaluate_predictions(["sad"], ["sad"], LABELS, valence_truth=[0.1], valence_pred=[None])
    with pytest.raises(ValueError, match="arousal_truth and arousal_pred"):
        evaluate_predictions(["sad"], ["sad"], LABELS, arousal_truth=[0.1])
    with pytest.raises(ValueError, match="arousal_pred has 2 entries"):
        evaluate_predictions(["sad"], ["sad"], LABELS, arousal_truth=[0.1], arousal_pred=[0.1, 0.2])


def test_open_vocabulary_by_hand() -> None:
    words_truth = [
        ["Happy", " excited "],  # pred {happy, calm}: 1 hit -> accuracy 1/2, recall 1/2
        ["sad", "tired", "bored"],  # pred {sad}: accuracy 1, recall 1/3
        "angry, annoyed",  # pred {angry, annoyed}: accuracy 1, recall 1 (string entries split on commas)
        None,  # no truth set: skipped
        ["worried"],  # empty prediction: accuracy 0, recall 0
    ]
    words_pred = [["happy", "CALM"], ["sad"], ["Annoyed", "angry"], ["whatever"], []]
    report = evaluate_predictions(["happy"] * 5, ["happy"] * 5, LABELS, words_truth=words_truth, words_pred=words_pred)
    assert report.open_vocabulary_accuracy == pytest.approx((1 / 2 + 1 + 1 + 0) / 4)
    assert report.open_vocabulary_recall == pytest.approx((1 / 2 + 1 / 3 + 1 + 0) / 4)
    assert open_vocabulary_scores(words_truth, words_pred) == (report.open_vocabulary_accuracy, report.open_vocabulary_recall)
    assert open_vocabulary_scores([None, []], [["happy"], ["sad"]]) == (None, None)
    with pytest.raises(ValueError, match="words_truth and words_pred"):
        evaluate_predictions(["sad"], ["sad"], LABELS, words_pred=[["sad"]])


def test_errors_name_the_bad_label() -> None:
    with pytest.raises(ValueError, match=r"truth\[1\] is 'disgusted'"):
        evaluate_predictions(["sad", "disgusted"], ["sad", "sad"], LABELS)
    with pytest.raises(ValueError, match=r"predicted\[0\] is 'Happy'"):
        evaluate_predictions(["happy"], ["Happy"], LABELS)
    with pytest.raises(ValueError, match="predicted has 1 entries but truth has 2"):
        evaluate_predictions(["sad", "sad"], ["sad"], LABELS)
    with pytest.raises(ValueError, match="no examples"):
        evaluate_predictions([], [], LABELS)
    with pytest.raises(ValueError, match="repeats"):
        evaluate_predictions(["sad"], ["sad"], ("sad", "sad"))


def test_report_is_frozen_and_json_friendly() -> None:
    report = evaluate_predictions(TRUTH, PRED, LABELS, valence_truth=[0.0] * 8, valence_pred=[0.1] * 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.war = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        report.confusion[0, 0] = 99
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["labels"] == list(LABELS)
    assert as_dict["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 3]]
    assert as_dict["war"] == pytest.approx(0.75)
    assert as_dict["valence_mse"] == pytest.approx(0.01)
    assert as_dict["arousal_mse"] is None


def test_format_has_labels_war_and_an_aligned_table() -> None:
    labels = ("angry", "happy", "sad", "surprised")
    report = evaluate_predictions(TRUTH, PRED, labels)
    text = report.format()
    assert "WAR" in text and "0.7500" in text and "UAR" in text
    for label in labels:
        assert label in text
    table = text.split("confusion (rows: truth, columns: prediction)\n", 1)[1].splitlines()
    assert len(table) == 1 + len(labels)
    assert len({len(line) for line in table}) == 1  # aligned columns
    assert table[1].split() == ["angry", "2", "1", "0", "0"]


def test_plot_and_write_report(tmp_path: Path) -> None:
    report = evaluate_predictions(TRUTH, PRED, LABELS)
    png = plot_confusion(report, tmp_path / "plots" / "cm.png")
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000

    json_path, png_path = write_report(report, tmp_path / "run")
    assert json_path == tmp_path / "run" / "metrics.json"
    assert png_path == tmp_path / "run" / "confusion.png"
    assert png_path.read_bytes().startswith(PNG_SIGNATURE)
    stored = json.loads(json_path.read_text())
    assert stored == json.loads(json.dumps(report.to_dict()))
    assert math.isclose(stored["uar"], report.uar)


def test_plot_handles_a_row_without_examples(tmp_path: Path) -> None:
    report: Report = evaluate_predictions(["sad"], ["happy"], LABELS)  # angry and happy rows are all zero
    assert plot_confusion(report, tmp_path / "cm.png").read_bytes().startswith(PNG_SIGNATURE)


def test_expected_calibration_error() -> None:
    # Two bins used: 0.9 confident and right 2 of 4 times (|0.5 - 0.9| = 0.4), 0.6 confident and right 1 of 2 (0.1).
    probabilities = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 2)
    truth = np.array([0, 0, 1, 1, 1, 0])
    assert math.isclose(expected_calibration_error(probabilities, truth), 4 / 6 * 0.4 + 2 / 6 * 0.1)
    assert expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0.0
    with pytest.raises(ValueError, match="expected probabilities"):
        expected_calibration_error(np.zeros((3, 2)), np.zeros(2))


def test_probabilities_give_the_calibration_error_and_mean_confidence() -> None:
    probabilities = np.full((8, 3), 0.1)
    probabilities[np.arange(8), [LABELS.index(p) for p in PRED]] = 0.8  # the prediction at 80%, 6 of 8 right
    report = evaluate_predictions(TRUTH, PRED, LABELS, probabilities=probabilities)
    assert report.mean_confidence == pytest.approx(0.8)
    assert report.ece == pytest.approx(0.05)  # one bin: |0.75 - 0.8|
    assert "ECE          0.0500" in report.format() and report.to_dict()["ece"] == pytest.approx(0.05)
    assert evaluate_predictions(TRUTH, PRED, LABELS).ece is None
    with pytest.raises(ValueError, match="probabilities has shape"):
        evaluate_predictions(TRUTH, PRED, LABELS, probabilities=probabilities[:, :2])
