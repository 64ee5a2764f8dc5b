"""Evaluation metrics for emotion recognition: pure numpy, plus a matplotlib confusion plot.

`evaluate_predictions` turns per-example truths and predictions into a `Report`:

* WAR (weighted average recall) is plain accuracy: every example weighs the same, so
  frequent classes dominate.
* UAR (unweighted average recall) is the mean of the per-class recalls over the classes
  that occur in the truth; a class of the label set with no true example has no recall and
  is left out (it cannot be "missed"). UAR equals scikit-learn's
  `recall_score(average="macro")` over the labels present in the truth.
* Weighted F1 is the per-class F1 averaged with the classes' true counts as weights
  (scikit-learn's `f1_score(average="weighted")`); a class never predicted has F1 0.
* Valence and arousal: mean squared error over the examples that have a target.
* Open vocabulary (MER-OV): set-level accuracy and recall of free-form emotion words.
* ECE (expected calibration error, `expected_calibration_error`): how far the stated confidence
  of the top class is from how often it is right, averaged over confidence bins.

`plot_confusion` draws the confusion matrix and `write_report` stores `metrics.json` and
`confusion.png` in a folder.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# A words entry: an iterable of words, a single comma/semicolon-separated string, or None (no words).
WordsEntry = str | Iterable[str] | None

_WORD_SEPARATORS = re.compile(r"[,;，；、]")


@dataclass(frozen=True, eq=False)
class Report:
    """Metrics of one evaluation.

    Attributes:
        labels: the closed label set, in the order of the confusion matrix's rows and columns.
        count: number of evaluated examples.
        war: weighted average recall, i.e. accuracy (correct / count).
        uar: unweighted average recall: mean of `per_class_recall` (classes present in the truth).
        weighted_f1: per-class F1 averaged with the true class counts as weights.
        per_class_recall: recall of every label that occurs in the truth (absent labels are omitted).
        confusion: integer counts, shape (len(labels), len(labels)); rows are the truth, columns the
            prediction, both in `labels` order. Read-only.
        valence_mse: mean squared valence error over examples with a valence target, or None.
        arousal_mse: mean squared arousal error over examples with an arousal target, or None.
        open_vocabulary_accuracy: MER-OV set-level accuracy (mean of |pred ∩ truth| / |pred|), or None.
        open_vocabulary_recall: MER-OV set-level recall (mean of |pred ∩ truth| / |truth|), or None.
        ece: expected calibration error of the stated probabilities (`expected_calibration_error`), or None.
        mean_confidence: mean probability of the predicted class, or None; beside `war`, how over-confident.

    Equality is identity (`eq=False`): a numpy array field makes value comparison ambiguous.
    """

    labels: tuple[str, ...]
    count: int
    war: float
    uar: float
    weighted_f1: float
    per_class_recall: dict[str, float]
    confusion: np.ndarray
    valence_mse: float | None = None
    arousal_mse: float | None = None
    open_vocabulary_accuracy: float | None = None
    open_vocabulary_recall: float | None = None
    ece: float | None = None
    mean_confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (plain floats, ints, lists; None for metrics without data)."""
        return {
            "labels": list(self.labels),
            "count": self.count,
            "war": self.war,
            "uar": self.uar,
            "weighted_f1": self.weighted_f1,
            "per_class_recall": dict(self.per_class_recall),
            "confusion": [[int(value) for value in row] for row in self.confusion],
            "valence_mse": self.valence_mse,
            "arousal_mse": self.arousal_mse,
            "open_vocabulary_accuracy": self.open_vocabulary_accuracy,
            "open_vocabulary_recall": self.open_vocabulary_recall,
            "ece": self.ece,
            "mean_confidence": self.mean_confidence,
        }

    def format(self) -> str:
        """A multi-line human-readable summary ending with the confusion matrix (rows truth, columns prediction)."""
        lines = [
            f"examples     {self.count}",
            f"WAR          {self.war:.4f}",
            f"UAR          {self.uar:.4f}",
            f"weighted F1  {self.weighted_f1:.4f}",
        ]
        optional = (
            ("valence MSE", self.valence_mse),
            ("arousal MSE", self.arousal_mse),
            ("OV accuracy", self.open_vocabulary_accuracy),
            ("OV recall", self.open_vocabulary_recall),
            ("ECE", self.ece),
            ("confidence", self.mean_confidence),
        )
        lines.extend(f"{name:<12} {value:.4f}" for name, value in optional if value is not None)
        lines.append("")
        lines.append("per-class recall")
        name_width = max(len(label) for label in self.labels)
        for label in self.labels:
            recall = self.per_class_recall.get(label)
            shown = f"{recall:.4f}" if recall is not None else "-"
            lines.append(f"  {label:<{name_width}}  {shown}")
        lines.append("")
        lines.append("confusion (rows: truth, columns: prediction)")
        lines.extend(_confusion_table(self.labels, self.confusion))
        return "\n".join(lines)


def _confusion_table(labels: Sequence[str], confusion: np.ndarray) -> list[str]:
    """The confusion matrix as aligned text rows, with a header of label names and a row label column."""
    corner = "truth \\ pred"
    row_width = max(len(corner), *(len(label) for label in labels))
    widths = [max(len(label), len(str(int(confusion[:, j].max())))) for j, label in enumerate(labels)]
    header = corner.ljust(row_width) + "".join("  " + label.rjust(width) for label, width in zip(labels, widths, strict=True))
    rows = [header]
    for i, label in enumerate(labels):
        cells = "".join("  " + str(int(confusion[i, j])).rjust(widths[j]) for j in range(len(labels)))
        rows.append(label.ljust(row_width) + cells)
    return rows


def _label_indices(values: Sequence[str], index: dict[str, int], name: str) -> np.ndarray:
    """Indices of `values` in the label set; ValueError naming the first unknown label."""
    out = np.empty(len(values), dtype=np.int64)
    for position, value in enumerate(values):
        try:
            out[position] = index[value]
        except (KeyError, TypeError):
            raise ValueError(f"{name}[{position}] is {value!r}, which is not in labels {tuple(index)}") from None
    return out


def _check_length(values: Sequence[Any] | None, count: int, name: str) -> None:
    if values is not None and len(values) != count:
        raise ValueError(f"{name} has {len(values)} entries but truth has {count}")


def _as_target(value: float | None) -> float | None:
    """`value` as a float, or None when it is None or NaN (no target)."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _mse(truth: Sequence[float | None] | None, predicted: Sequence[float | None] | None, count: int, name: str) -> float | None:
    """Mean squared error over examples whose truth is not None/NaN; None when there is no such example.

    A prediction is required (and must be finite) wherever the truth has a target.
    """
    if truth is None and predicted is None:
        return None
    if truth is None or predicted is None:
        raise ValueError(f"{name}_truth and {name}_pred must be given together")
    _check_length(truth, count, f"{name}_truth")
    _check_length(predicted, count, f"{name}_pred")
    errors: list[float] = []
    for position, (target, guess) in enumerate(zip(truth, predicted, strict=True)):
        expected = _as_target(target)
        if expected is None:
            continue
        if guess is None or not math.isfinite(float(guess)):
            raise ValueError(f"{name}_pred[{position}] is {guess!r} but {name}_truth[{position}] has a target")
        errors.append((float(guess) - expected) ** 2)
    if not errors:
        return None
    return float(np.mean(errors))


def _word_set(entry: WordsEntry, name: str, position: int) -> set[str] | None:
    """Normalised word set of one entry (lowercase, stripped, empties dropped); None when the entry is None."""
    if entry is None:
        return None
    if isinstance(entry, str):
        words: Iterable[Any] = _WORD_SEPARATORS.split(entry)
    else:
        words = entry
    normalised: set[str] = set()
    for word in words:
        if not isinstance(word, str):
            raise ValueError(f"{name}[{position}] contains {word!r}, which is not a string")
        cleaned = word.strip().lower()
        if cleaned:
            normalised.add(cleaned)
    return normalised


def open_vocabulary_scores(words_truth: Sequence[WordsEntry], words_pred: Sequence[WordsEntry]) -> tuple[float | None, float | None]:
    """MER-OV set-level (accuracy, recall) of free-form emotion words.

    The "set-level accuracy and recall" of the MER challenge's open-vocabulary track (MER-OV,
    introduced in MER2024 and scored on MER2023-style clips; `main-ov.py` in zeroQiaoba/MERTools):
    for every example i with a non-empty truth set Y_i and predicted set P_i,

        accuracy_i = |P_i ∩ Y_i| / |P_i|        recall_i = |P_i ∩ Y_i| / |Y_i|

    and both are averaged over those examples. Words are compared after `strip().lower()`;
    a string entry is split on commas/semicolons first. An empty prediction scores 0 on
    both (as in the official scorer). Examples whose truth is None or empty are skipped; if
    none remains, both are None.

    The official scorer first merges synonyms (it asks GPT to group the words of each
    example); this is the exact-match version of the same formula, so it is a lower bound.
    """
    if len(words_truth) != len(words_pred):
        raise ValueError(f"words_pred has {len(words_pred)} entries but words_truth has {len(words_truth)}")
    accuracies: list[float] = []
    recalls: list[float] = []
    for position, (truth_entry, pred_entry) in enumerate(zip(words_truth, words_pred, strict=True)):
        truth = _word_set(truth_entry, "words_truth", position)
        if not truth:
            continue
        predicted = _word_set(pred_entry, "words_pred", position) or set()
        hits = len(predicted & truth)
        accuracies.append(hits / len(predicted) if predicted else 0.0)
        recalls.append(hits / len(truth))
    if not accuracies:
        return None, None
    return float(np.mean(accuracies)), float(np.mean(recalls))


def evaluate_predictions(
    truth: Sequence[str],
    predicted: Sequence[str],
    labels: tuple[str, ...],
    valence_truth: Sequence[float | None] | None = None,
    valence_pred: Sequence[float | None] | None = None,
    arousal_truth: Sequence[float | None] | None = None,
    arousal_pred: Sequence[float | None] | None = None,
    words_truth: Sequence[WordsEntry] | None = None,
    words_pred: Sequence[WordsEntry] | None = None,
    probabilities: np.ndarray | None = None,
) -> Report:
    """Score categorical predictions (and optionally valence/arousal and open-vocabulary words).

    Args:
        truth: true label of each example; every one must be in `labels`.
        predicted: predicted label of each example, same length; every one must be in `labels`.
        labels: the closed label set (unique names); fixes the confusion matrix's order.
        valence_truth, valence_pred: per-example valence; a truth of None or NaN means "no target"
            and the example is left out of `valence_mse`. Give both or neither.
        arousal_truth, arousal_pred: the same for arousal.
        words_truth, words_pred: per-example emotion words (an iterable of words, a comma-separated
            string, or None) for the MER-OV metrics (see `open_vocabulary_scores`). Give both or neither.
        probabilities: shape = (count, len(labels)), the probabilities the predictions came from, in `labels`
            order, for `ece` and `mean_confidence`; None: neither is reported.

    Raises:
        ValueError: lengths differ, there are no examples, `labels` is empty or repeats a name, a label
            is not in `labels` (the message names it and its position), or a paired argument is missing.
    """
    labels = tuple(labels)
    if not labels:
        raise ValueError("labels is empty")
    if len(set(labels)) != len(labels):
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        raise ValueError(f"labels repeats {repeated}")
    count = len(truth)
    if len(predicted) != count:
        raise ValueError(f"predicted has {len(predicted)} entries but truth has {count}")
    if count == 0:
        raise ValueError("no examples to evaluate")
    index = {label: position for position, label in enumerate(labels)}
    true_idx = _label_indices(truth, index, "truth")
    pred_idx = _label_indices(predicted, index, "predicted")

    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true_idx, pred_idx), 1)
    confusion.setflags(write=False)

    correct = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)  # true count per class
    predicted_count = confusion.sum(axis=0).astype(np.float64)
    present = support > 0

    recall = np.divide(correct, support, out=np.zeros(k), where=present)
    precision = np.divide(correct, predicted_count, out=np.zeros(k), where=predicted_count > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(k), where=denominator > 0)

    war = float(correct.sum() / count)
    uar = float(recall[present].mean())
    weighted_f1 = float((f1 * support).sum() / support.sum())
    per_class_recall = {label: float(recall[i]) for i, label in enumerate(labels) if present[i]}

    if (words_truth is None) != (words_pred is None):
        raise ValueError("words_truth and words_pred must be given together")
    ov_accuracy: float | None = None
    ov_recall: float | None = None
    if words_truth is not None and words_pred is not None:
        _check_length(words_truth, count, "words_truth")
        _check_length(words_pred, count, "words_pred")
        ov_accuracy, ov_recall = open_vocabulary_scores(words_truth, words_pred)
    ece = confidence = None
    if probabilities is not None:
        if probabilities.shape != (count, k):
            raise ValueError(f"probabilities has shape {probabilities.shape}, not (examples, labels) = {(count, k)}")
        ece = expected_calibration_error(probabilities, true_idx)
        confidence = float(probabilities.max(axis=1).mean())

    return Report(
        labels=labels,
        count=count,
        war=war,
        uar=uar,
        weighted_f1=weighted_f1,
        per_class_recall=per_class_recall,
        confusion=confusion,
        valence_mse=_mse(valence_truth, valence_pred, count, "valence"),
        arousal_mse=_mse(arousal_truth, arousal_pred, count, "arousal"),
        open_vocabulary_accuracy=ov_accuracy,
        open_vocabulary_recall=ov_recall,
        ece=ece,
        mean_confidence=confidence,
    )


def expected_calibration_error(probabilities: np.ndarray, truth: Sequence[int] | np.ndarray, bins: int = 15) -> float:
    """ECE over equal-width bins of the top class's probability: sum over bins of (share of examples in the bin)
    x |accuracy in the bin - mean confidence in the bin|. 0 = "72%" is right 72% of the time.

    probabilities : shape = (N, n_labels); truth : shape = (N,) class indices.
    """
    probabilities, truth = np.asarray(probabilities, np.float64), np.asarray(truth)
    if probabilities.ndim != 2 or len(probabilities) != len(truth) or not len(truth):
        raise ValueError(f"expected probabilities (N, n_labels) and N truths, got {probabilities.shape} and {truth.shape}")
    confidence = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == truth
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(right[inside].mean() - confidence[inside].mean())
    return float(error)


def temperature_scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities a model gives with its logits divided by `temperature`."""
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-12, None)) / temperature
    scaled = np.exp(logits - logits.max(axis=1, keepdims=True))
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, truth: Sequence[int] | np.ndarray) -> float:
    """The softmax temperature (0.2-5, log-spaced grid) with the least negative log-likelihood of the truth on
    held-out predictions: T > 1 softens an over-confident model, T < 1 sharpens a timid one."""
    probabilities, truth = np.asarray(probabilities, np.float64), np.asarray(truth)
    if probabilities.ndim != 2 or len(probabilities) != len(truth) or not len(truth):
        raise ValueError(f"expected probabilities (N, n_labels) and N truths, got {probabilities.shape} and {truth.shape}")
    grid = np.exp(np.linspace(np.log(0.2), np.log(5.0), 321))
    rows = np.arange(len(truth))
    losses = [-np.log(temperature_scaled(probabilities, t)[rows, truth] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(losses))])


def held_out_figures(probabilities: np.ndarray, truth: np.ndarray, labels: Sequence[str], temperature: float) -> dict[str, float]:
    """What cross-validation reports of held-out predictions (N, n_labels) against their truth indices: WAR, UAR,
    weighted F1, and ECE and mean confidence before and after `temperature`."""
    calibrated = temperature_scaled(probabilities, temperature)
    report = evaluate_predictions([labels[i] for i in truth], [labels[i] for i in probabilities.argmax(axis=1)], tuple(labels))
    return {"war": report.war, "uar": report.uar, "f1": report.weighted_f1,
            "ece": expected_calibration_error(probabilities, truth),
            "ece_calibrated": expected_calibration_error(calibrated, truth),
            "confidence": float(probabilities.max(axis=1).mean()),
            "confidence_calibrated": float(calibrated.max(axis=1).mean())}


def plot_confusion(report: Report, path: str | Path) -> Path:
    """Save the confusion matrix as a PNG at `path` and return the path.

    Cell colours are row-normalised (the share of each true class predicted as each column,
    so the diagonal is the per-class recall); the cells show the raw counts. Uses the Agg
    canvas directly, so pyplot's global state and backend are untouched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    confusion = np.asarray(report.confusion, dtype=np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)

    k = len(report.labels)
    side = max(4.0, 0.7 * k + 2.5)
    figure = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    axes.set_xticks(range(k), labels=report.labels, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(k), labels=report.labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"WAR {report.war:.3f}   UAR {report.uar:.3f}   (n={report.count})")
    font_size = 10 if k <= 8 else max(5, 10 - (k - 8) // 2)
    for i in range(k):
        for j in range(k):
            colour = "white" if shares[i, j] > 0.5 else "black"
            axes.text(j, i, str(int(report.confusion[i, j])), ha="center", va="center", color=colour, fontsize=font_size)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return path


def write_report(report: Report, folder: str | Path) -> tuple[Path, Path]:
    """Write `metrics.json` (`Report.to_dict()`) and `confusion.png` into `folder` (created if needed).

    Returns:
        (path of metrics.json, path of confusion.png).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "metrics.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    png_path = plot_confusion(report, folder / "confusion.png")
    return json_path, png_path
