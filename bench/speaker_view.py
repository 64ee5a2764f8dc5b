"""How far a live call's answers should lean on the speaker's running statistics: the prior of `speaker_view_weight`.

The default recipe's speaker-grouped fold models (deployments/train-lite.yaml's `calibration_folds`, trained exactly
as `emostream train` trains them: `train.fold_model`, runs under --runs, reused when finished) score the rows of the
speakers each held out, as recorded (variant 0: the utterances the live path cuts from each clip for the default's
`live_cut` recipe, each clip whole for deployments/train-lite-whole.yaml), in two ways:
* whole speaker: z-scored against all of the speaker's rows (the recipe's own CV, cv.json);
* in calls: each speaker's clips dealt into calls of --call-turns (`data.call_statistics`, as the live path's
  running statistics have them: none for a call's first two utterances, then the utterances so far), each answer
  mixing the model's two views of the voice (`score.views_forward`) by `speaker_view_weight(count, prior)` for
  each prior in --priors; prior 0 is the rule before the mix (the speaker-normalised view alone, once it exists).
Printed per prior: WAR, UAR and ECE (fold models carry no temperature) pooled over the folds and per corpus, and
WAR by the utterance's place in its call. Then the prior each fold would get if it were chosen on the other two
folds' speakers alone, and what that choice scores on the fold (nested: the figure to report, not the best row).
Printed, never asserted. Ray Train and Ray Data (features, extracted if missing: a few minutes on two cores) run
inside a loopback-only namespace:
    RAY_AUTH_MODE=disabled unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/speaker_view.py \\
        --cache ../emostream-cache/features --runs ../emostream-cache/runs'
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from emostream.cli.common import ray_local
from emostream.training.features import extract_features
from emostream.training.train import (
    cached_rows,
    calibration_folds,
    corpus_order,
    fold_model,
    load_train_config,
    read_dataset,
    recipe_settings,
)

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "deployments" / "train-lite.yaml"
PLACES = ((0, 2), (2, 4), (4, 7), (7, 1_000))  # earlier utterances of the speaker in the call


def main() -> None:
    from emostream.models.score import SPEAKER_VIEW_PRIOR, speaker_floor  # noqa: PLC0415
    from emostream.training.data import call_statistics, samples_from_rows  # noqa: PLC0415
    from emostream.training.evaluate import predict  # noqa: PLC0415
    from emostream.training.metrics import held_out_figures  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_RECIPE, help="the recipe whose fold models are scored")
    parser.add_argument("--cache", type=Path, required=True, help="feature cache root")
    parser.add_argument("--runs", type=Path, required=True, help="where the fold runs are (trained there if missing)")
    parser.add_argument("--call-turns", type=int, default=12, help="clips per speaker in a call")
    parser.add_argument("--priors", default="0,1,2,3,4,6,8", help="comma-separated priors to compare (0: no mix)")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    config = load_train_config(args.config).model_copy(update={"feature_cache": args.cache, "run_dir": args.runs})
    if config.calibration_folds < 2:
        raise SystemExit(f"{args.config}: calibration_folds is {config.calibration_folds}; the bench needs at least 2 folds")
    examples = read_dataset(config.data, config.label_set)
    keys = {e.key for e in examples}
    ray_local(args.cpus, log_to_driver=False)
    cache = extract_features(examples, recipe_settings(config), config.feature_cache, config.augment, workers=config.feature_workers)
    rows = [r for r in cached_rows(cache, keys) if r["variant"] == 0]
    folds = calibration_folds(config, rows)
    priors = [float(p) for p in args.priors.split(",")]

    scored: dict[str, list[np.ndarray]] = {"whole speaker": [], **{f"prior {p:g}": [] for p in priors}}
    truth, corpus, place, fold_of = [], [], [], []
    for k, fold in enumerate(folds, start=1):
        model = fold_model(config, k, fold, cache, keys)[1]
        labels = list(model.config.labels)
        held = [r for r in rows if r["speaker"] in fold]
        dataset = {r["key"]: r["dataset"] for r in held}
        whole = samples_from_rows(held, labels, model.config.label_set)  # every held-out row counts in the statistics
        calls = call_statistics(whole, speaker_floor(model), args.call_turns)
        whole, calls = ([s for s in samples if s.label >= 0] for samples in (whole, calls))
        scored["whole speaker"].append(predict(model, whole)[0])
        for prior in priors:
            scored[f"prior {prior:g}"].append(predict(model, calls, prior)[0])
        truth += [s.label for s in calls]
        corpus += [dataset[s.key] for s in calls]
        place += [s.speaker_count for s in calls]
        fold_of += [k] * len(calls)
    y, corpora, places, fold_ids = np.array(truth), np.array(corpus), np.array(place), np.array(fold_of)
    probabilities = {name: np.concatenate(parts) for name, parts in scored.items()}
    names = ["all", *corpus_order(config, rows)]
    print(f"# {len(y)} labelled rows of {len(folds)} speaker folds ({args.config.name}), calls of {args.call_turns} "
          f"clips per speaker; the default prior is {SPEAKER_VIEW_PRIOR:g}")
    print("| statistics | " + " | ".join(f"{n}: WAR / UAR / ECE" for n in names) + " | "
          + " | ".join(f"WAR after {lo}-{hi - 1 if hi < 1_000 else ''}" for lo, hi in PLACES) + " |")
    print("|---|" + "---|" * (len(names) + len(PLACES)))
    for name, p in probabilities.items():
        cells = []
        for n in names:
            mask = np.ones(len(y), bool) if n == "all" else corpora == n
            f = held_out_figures(p[mask], y[mask], labels, 1.0)
            cells.append(f"{f['war']:.1%} / {f['uar']:.1%} / {f['ece']:.3f}")
        for lo, hi in PLACES:
            mask = (places >= lo) & (places < hi)
            cells.append(f"{(p[mask].argmax(1) == y[mask]).mean():.1%}" if name != "whole speaker" else "")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)

    def war(p: np.ndarray, mask: np.ndarray) -> float:
        return float((p[mask].argmax(1) == y[mask]).mean())

    nested = np.zeros_like(probabilities["whole speaker"])
    for k in range(1, len(folds) + 1):
        chosen = max(priors, key=lambda prior: war(probabilities[f"prior {prior:g}"], fold_ids != k))
        nested[fold_ids == k] = probabilities[f"prior {chosen:g}"][fold_ids == k]
        own = {prior: war(probabilities[f"prior {prior:g}"], fold_ids == k) for prior in priors}
        print(f"fold {k}: prior {chosen:g} chosen on the other folds' speakers, {own[chosen]:.1%} on its own "
              f"(every prior on it: {', '.join(f'{prior:g} {value:.1%}' for prior, value in own.items())})")
    f = held_out_figures(nested, y, labels, 1.0)
    print(f"nested choice, pooled: WAR {f['war']:.1%} / UAR {f['uar']:.1%} / ECE {f['ece']:.3f}")


if __name__ == "__main__":
    main()
