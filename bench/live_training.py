"""Training on what the live path sees against training on whole clips: both recipes' speaker-grouped CV, scored on the same held-out rows.

The two recipes, `--whole` (deployments/train-lite-whole.yaml: every clip whole) and `--live`
(deployments/train-lite.yaml, the default: `live_cut`, telephone copies), each train their
`calibration_folds` fold models exactly as `emostream train` does (`train.calibration_folds`, `train.fold_model`:
runs <name>-fold-<k> under --out/runs, one seed each, reused when finished, so `emostream train` with that
run_dir reuses them too). Both deal the same speakers of RAVDESS, TESS and EmoDB into the same folds, and each
fold model is scored on the rows of the speakers it held out, the same rows for both recipes:
* whole clips: each clip as recorded, whole (the whole recipe's cache), each speaker normalised over all its clips
  (as the recipe's own cv.json; backfill of a finished call);
* cut 16 kHz: the utterances the live path cuts from each clip as recorded (the live recipe's cache, variant 0);
* cut 8 kHz: the same from the clip's first phone-line copy (noisy 8 kHz mu-law, variant 1);
  each cut set twice: "batch", each speaker normalised over all its cut utterances on that line, and "live",
  with the speaker statistics the live path has in a call of --call-turns of its clips (`data.call_statistics`:
  none for a call's first two utterances, then running), weighed as the scorer weighs them (`--prior`,
  `score.speaker_view_weight`), the answer without them standardised over the site, as a scorer does once it
  has scored enough of one (`score.SiteStatistics`; here each corpus on each line is a site, and a speaker's site
  statistics are those of the other held-out speakers' rows of it, never their own; `--no-sites`: over the
  training set).
Figures per scored row (a clip cut in two counts twice; a clip cut to nothing counts as lost, unscored), and per
recording ("per recording": one answer per clip, the mean of its utterances', as `emostream evaluate` scores), the
held-out predictions of the folds pooled: WAR, UAR, ECE, and ECE after the recipe's own temperature (fitted as
`emostream train` fits it, on the recipe's own held-out rows: whole clips for the whole recipe, cut 16 kHz batch
for the live one). Printed and appended to --out/results.jsonl, never asserted. With `--loco` the folds are the corpora
instead: each corpus held out whole, scored by the recipe trained on the other two (`train.corpus_folds`, runs
<name>-on-<corpora>), the measure of what travels to a corpus never trained on.

Feature extraction is the training job's (`features.extract_features`, resumable: a Parquet file per block of
`features.EXAMPLES_PER_FILE` clips under --cache; a stopped run extracts only the missing clips). The live
recipe's is three copies of every clip through the VAD and Smart Turn: hours on two busy cores. `--only` trains
one recipe's fold models (after its extraction) and stops, e.g. the whole recipe's while the live recipe's
features are being extracted. Inside a
loopback-only namespace, in the background:
    RAY_AUTH_MODE=disabled unshare -n sh -c 'ip link set lo up && exec nice -n 19 .venv/bin/python \\
        bench/live_training.py --cache ../emostream-cache/features --out ../emostream-runs/live-training'
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostream.cli.common import ray_local
from emostream.labels import LABEL_SETS
from emostream.models.score import SPEAKER_VIEW_PRIOR
from emostream.training.features import extract_features
from emostream.training.train import (
    TrainConfig,
    cached_rows,
    calibration_folds,
    corpus_folds,
    corpus_model,
    corpus_order,
    fold_model,
    load_train_config,
    read_dataset,
    recipe_settings,
)

DEPLOYMENTS = Path(__file__).resolve().parent.parent / "deployments"
RECIPES = ("whole", "live")
# what each recipe's temperature is fitted on (as `emostream train` fits it: its own recorded rows, batch-normalised)
OWN_MATERIAL = {"whole": "whole clips", "live": "cut 16 kHz, batch"}


@dataclass
class HeldOut:
    """One recipe's pooled held-out predictions on one material."""

    corpus: list[str]
    truth: list[int]
    probabilities: list[np.ndarray]


def recipe_configs(args: argparse.Namespace) -> dict[str, TrainConfig]:
    """The two recipes with the bench's feature cache and run folder; the error names what makes them incomparable."""
    configs = {name: load_train_config(path).model_copy(update={"feature_cache": args.cache, "run_dir": args.out / "runs"})
               for name, path in (("whole", args.whole), ("live", args.live))}
    whole, live = configs["whole"], configs["live"]
    if whole.data.live_cut or not live.data.live_cut or live.data.telephone_copies < 1:
        raise SystemExit(f"--whole {args.whole} must train on whole clips and --live {args.live} on live-cut clips with "
                         "at least one telephone copy (data.live_cut, data.telephone_copies)")
    if whole.calibration_folds < 2 or whole.calibration_folds != live.calibration_folds:
        raise SystemExit(f"both recipes need the same calibration_folds (at least 2), not {whole.calibration_folds} "
                         f"and {live.calibration_folds}")
    if whole.name == live.name:
        raise SystemExit(f"both recipes are named {whole.name!r}: their fold runs would share folders")
    return configs


def materials(whole_rows: list[dict[str, Any]], live_rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The held-out material: rows, by what the model is scored on."""
    return {"whole clips": [r for r in whole_rows if r["variant"] == 0],
            "cut 16 kHz": [r for r in live_rows if r["variant"] == 0],
            "cut 8 kHz": [r for r in live_rows if r["variant"] == 1]}


def score_fold(model, fold: set[str], rows_by_material: dict[str, list[dict[str, Any]]], call_turns: int,  # type: ignore[no-untyped-def]
               pooled: dict[str, HeldOut], prior: float, sites: bool) -> None:
    """Add a fold model's predictions on its held-out speakers' rows of every material to `pooled` (with `sites`, the
    view without speaker statistics standardised over the other held-out speakers' rows of the utterance's corpus and
    line, when there are `score.SiteStatistics`' minimum of them)."""
    from emostream.models.score import speaker_floor
    from emostream.training.data import call_statistics, samples_from_rows
    from emostream.training.evaluate import per_clip, predict, site_of

    labels = list(model.config.labels)
    for material, rows in rows_by_material.items():
        held = [r for r in rows if r["speaker"] in fold]
        corpus, speaker_of = {r["key"]: r["dataset"] for r in held}, {r["key"]: r["speaker"] for r in held}
        # every held-out row counts in its speaker's statistics (EmoDB's boredom too); labelled ones are scored
        batch = samples_from_rows(held, labels, model.config.label_set)
        regimes = {material: batch} if material == "whole clips" else {
            f"{material}, batch": batch, f"{material}, live": call_statistics(batch, speaker_floor(model), call_turns)}
        for name, samples in regimes.items():
            labelled = [s for s in samples if s.label >= 0]
            probabilities = np.zeros((len(labelled), len(labels)), np.float32)
            # each corpus on each line a site of its own (score.SiteStatistics), as a scorer knows it from the other
            # callers: a speaker's site statistics are those of the corpus's other held-out speakers' utterances
            for line, speaker in sorted({(corpus[s.key], speaker_of[s.key]) for s in labelled}):
                theirs = [i for i, s in enumerate(labelled) if (corpus[s.key], speaker_of[s.key]) == (line, speaker)]
                others = [s for s in samples if corpus[s.key] == line and speaker_of[s.key] != speaker]
                site = site_of(model, others) if sites else None
                probabilities[theirs] = predict(model, [labelled[i] for i in theirs], prior, site)[0]
            recordings, (pooled_probabilities,) = per_clip(labelled, probabilities)
            for key, scored, answers in ((name, labelled, probabilities),
                                         (f"{name}, per recording", recordings, pooled_probabilities)):
                if material == "whole clips" and key != name:
                    continue  # a whole clip is one recording already
                into = pooled.setdefault(key, HeldOut([], [], []))
                into.corpus += [corpus[s.key] for s in scored]
                into.truth += [s.label for s in scored]
                into.probabilities += list(answers)


def figures(held: HeldOut, mask: np.ndarray, labels: list[str], temperature: float) -> dict[str, float]:
    """The figures `emostream train`'s cross-validation reports (`metrics.held_out_figures`), of the rows in `mask`."""
    from emostream.training.metrics import held_out_figures

    truth, raw = np.array(held.truth)[mask], np.stack(held.probabilities)[mask]
    return {"rows": int(mask.sum()), **held_out_figures(raw, truth, labels, temperature)}


def cut_counts(rows_by_material: dict[str, list[dict[str, Any]]], keys: set[str]) -> dict[str, dict[str, int]]:
    """Per cut material: the labelled clips it was cut from, how many were lost (no utterance), split (several)."""
    counts = {}
    for material, rows in rows_by_material.items():
        if material == "whole clips":
            continue
        pieces = {r["key"]: r["pieces"] for r in rows if r["key"] in keys}
        counts[material] = {"clips": len(keys), "lost": len(keys - set(pieces)), "split": sum(p > 1 for p in pieces.values())}
    return counts


def cell(f: dict[str, float]) -> str:
    return f"{f['war']:.1%} / {f['uar']:.1%} / {f['ece']:.3f} → {f['ece_calibrated']:.3f}"


def compare(models: dict[str, list[tuple[set[str], Any]]], rows: dict[str, list[dict[str, Any]]], labelled: set[str],
            corpora: list[str], call_turns: int, prior: float, sites: bool, results: Path) -> None:
    """Score every recipe's fold models (each with the speakers it held out) on the held-out rows of every material,
    print the two recipes side by side and append the figures to `results`."""
    from emostream.training.metrics import fit_temperature

    pooled: dict[str, dict[str, HeldOut]] = {name: {} for name in RECIPES}
    for name in RECIPES:
        for fold, model in models[name]:
            score_fold(model, fold, rows, call_turns, pooled[name], prior, sites)
    labels = list(models["whole"][0][1].config.labels)
    temperature = {name: fit_temperature(np.stack(pooled[name][OWN_MATERIAL[name]].probabilities),
                                         np.array(pooled[name][OWN_MATERIAL[name]].truth)) for name in RECIPES}
    counts = cut_counts(rows, labelled)
    print(f"# {len(labelled)} labelled clips, {len(models['whole'])} folds (the same for both); speaker view prior "
          f"{prior:g} (score.speaker_view_weight); sites "
          f"{'on' if sites else 'off'}; temperatures: whole "
          f"{temperature['whole']:.2f}, live {temperature['live']:.2f}; cut: "
          + "; ".join(f"{m}: {c['lost']} lost, {c['split']} split" for m, c in counts.items()), flush=True)
    print("\n| held out | corpus | rows | whole-clip training: WAR / UAR / ECE → calibrated | live-path training |")
    print("|---|---|---|---|---|")
    with results.open("a") as out:
        for material in pooled["whole"]:
            corpus = np.array(pooled["whole"][material].corpus)  # the same rows in the same order for both recipes
            for name in ["all", *corpora]:
                mask = np.ones(len(corpus), bool) if name == "all" else corpus == name
                if not mask.any():  # a corpus none of whose clips is in the cache yet
                    continue
                cells = {recipe: figures(pooled[recipe][material], mask, labels, temperature[recipe]) for recipe in RECIPES}
                for recipe, figured in cells.items():
                    out.write(json.dumps({"recipe": recipe, "material": material, "corpus": name, "prior": prior, "sites": sites,
                                          "temperature": temperature[recipe], **figured}) + "\n")
                print(f"| {material} | {name} | {cells['whole']['rows']} | {cell(cells['whole'])} | {cell(cells['live'])} |",
                      flush=True)

def corpus_models(config: TrainConfig, recorded: list[dict[str, Any]], cache: Path, keys: set[str]) -> list[tuple[set[str], Any]]:
    """Leave one corpus out: per corpus, its speakers and the recipe's model trained on the other corpora (runs
    <name>-on-<corpora>, `train.corpus_model`, as `train.leave_one_corpus_out` trains them, reused when finished)."""
    return [(set(fold.held_out), corpus_model(config, fold, cache, keys)[1])
            for fold in corpus_folds(config, recorded).values() if fold is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whole", type=Path, default=DEPLOYMENTS / "train-lite-whole.yaml", help="the whole-clip recipe")
    parser.add_argument("--live", type=Path, default=DEPLOYMENTS / "train-lite.yaml", help="the live-path recipe")
    parser.add_argument("--cache", type=Path, required=True, help="feature cache root (keep it: extraction takes hours)")
    parser.add_argument("--out", type=Path, required=True, help="fold runs (runs/) and results.jsonl")
    parser.add_argument("--call-turns", type=int, default=12, help="clips per call for the live statistics of the cut rows")
    parser.add_argument("--only", choices=RECIPES, help="train only this recipe's fold models, then stop")
    parser.add_argument("--loco", action="store_true", help="leave one corpus out instead of the speaker folds: each "
                        "corpus scored by a model of the recipe trained on the others (train.corpus_folds)")
    parser.add_argument("--prior", type=float, default=SPEAKER_VIEW_PRIOR,
                        help="how the running statistics' view is weighed (score.speaker_view_weight; 0: alone, as before)")
    parser.add_argument("--no-sites", action="store_true", help="the view without speaker statistics standardised over "
                        "the training set, as before site statistics (score.SiteStatistics)")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    args.out.mkdir(parents=True, exist_ok=True)
    configs = recipe_configs(args)
    examples = read_dataset(configs["whole"].data, configs["whole"].label_set)
    if {e.key for e in read_dataset(configs["live"].data, configs["live"].label_set)} != {e.key for e in examples}:
        raise SystemExit(f"{args.whole} and {args.live} name different corpora: the folds would hold out different clips")
    keys = {e.key for e in examples}
    labelled = {e.key for e in examples if e.label in LABEL_SETS[configs["whole"].label_set]}
    ray_local(args.cpus, log_to_driver=False)
    names = [args.only] if args.only else list(RECIPES)
    caches, models = {}, {}
    for name in names:
        config = configs[name]
        caches[name] = extract_features(examples, recipe_settings(config), config.feature_cache, config.augment,
                                        workers=config.feature_workers)
        recorded = [r for r in cached_rows(caches[name], keys) if r["variant"] == 0]
        models[name] = corpus_models(config, recorded, caches[name], keys) if args.loco else [
            (fold, fold_model(config, k, fold, caches[name], keys)[1])
            for k, fold in enumerate(calibration_folds(config, recorded), start=1)]
        print(f"# {name}: {len(models[name])} fold models in {config.run_dir}", flush=True)
    if args.only:
        return
    if [fold for fold, _ in models["whole"]] != [fold for fold, _ in models["live"]]:
        raise SystemExit("the two recipes dealt different folds (a speaker lost entirely by the live cut?): not comparable")
    rows = materials(cached_rows(caches["whole"], keys), cached_rows(caches["live"], keys))
    compare(models, rows, labelled, corpus_order(configs["whole"], rows["whole clips"]), args.call_turns, args.prior,
            not args.no_sites, args.out / "results.jsonl")


if __name__ == "__main__":
    main()
