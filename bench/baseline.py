"""The linear baseline the default model has to beat: logistic regression on the voice read-out's inputs.

The inputs are what the model's linear voice read-out sees with whole-speaker statistics: the Whisper
tiny.en encoder output (mean and std pooled) and the resemblyzer voice embedding, both z-scored per
speaker, and the prosody statistics with their per-speaker z-scores. Class-balanced, L2-regularised;
C is chosen by speaker-independent cross-validation inside the training speakers (4 folds of whole
speakers), never on the validation speakers. Then it is fitted on all training speakers (augmented
copies included, as the model trains) and scored once on the validation speakers, beside the default
checkpoint's stated figures. Reads the training feature cache `emostream train` built.
Figures are printed, never asserted. Run: .venv/bin/python bench/baseline.py [deployments/train-lite.yaml]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from emostream.models.presets import DEFAULT_CHECKPOINT
from emostream.settings import load_settings
from emostream.training.data import Sample, batch, samples_from_rows
from emostream.training.features import cache_folder, read_features
from emostream.training.train import build_model, load_train_config, read_dataset

GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
FOLDS = 4


def features(samples: list[Sample], config) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    inputs, targets = batch(samples, config)
    return torch.cat([inputs.voice_z, inputs.prosody], dim=1).numpy(), targets["label"].numpy()


def fit_and_score(C: float, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    classifier = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit(*train)
    predicted = classifier.predict(test[0])
    return accuracy_score(test[1], predicted), balanced_accuracy_score(test[1], predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config_file", nargs="?", default="deployments/train-lite.yaml", help="the training config")
    args = parser.parse_args()
    config = load_train_config(args.config_file)
    cache = cache_folder(config.feature_cache, load_settings(), config.augment, read_dataset(config.data, config.label_set))
    if not cache.is_dir():
        raise SystemExit(f"no feature cache at {cache}: run `emostream train {args.config_file}` first")
    model_config = build_model(config).config
    rows = read_features(cache)
    validation = set(config.data.validation_speakers)
    speakers = sorted({r["speaker"] for r in rows} - validation)

    def data(chosen: set[str], originals_only: bool) -> tuple[np.ndarray, np.ndarray]:
        picked = [r for r in rows if r["speaker"] in chosen and (r["variant"] == 0 or not originals_only)]
        samples = [s for s in samples_from_rows(picked, model_config.labels, config.label_set) if s.label >= 0]
        return features(samples, model_config)

    folds = [set(fold) for fold in np.array_split(speakers, FOLDS)]
    splits = [(data(set(speakers) - fold, False), data(fold, True)) for fold in folds]
    print(f"# linear baseline: {len(speakers)} training speakers in {FOLDS} folds, validation {', '.join(sorted(validation))}")
    print("C       cv_WAR  cv_UAR")
    scores = {}
    for C in GRID:
        war, uar = np.mean([fit_and_score(C, train, test) for train, test in splits], axis=0)
        scores[C] = (war + uar) / 2
        print(f"{C:<7g} {war:6.1%}  {uar:6.1%}")
    best = max(scores, key=scores.get)
    war, uar = fit_and_score(best, data(set(speakers), False), data(validation, True))
    print(f"chosen C = {best:g} (best mean of CV WAR and UAR)")
    print(f"logistic regression on the validation speakers: WAR {war:.1%}  UAR {uar:.1%}")
    stated = DEFAULT_CHECKPOINT / "metrics-batch.json"
    if stated.is_file():
        figures = json.loads(stated.read_text())
        print(f"default checkpoint (its metrics-batch.json):   WAR {figures['war']:.1%}  UAR {figures['uar']:.1%}")


if __name__ == "__main__":
    main()
