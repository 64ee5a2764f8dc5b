"""Cross-validation of the describer (the mllm preset) on the classifier's own speaker folds: the emotion its answer
names, parsed back, scored like the classifier; how often an answer fails to parse; what an answer costs.

The describer is trained as an MLLM's alignment stage is: on top of a trained, frozen classifier. For each of the
recipe's `calibration_folds` speaker folds (every corpus dealt round-robin, as `emostream train` deals them):
* the classifier: the recipe's fold model (run <name>-fold-<k>, trained on the other folds' speakers; a finished run
  is reused, else trained), exported as `emostream train` exports it;
* the describer: the describer recipe (--describer, deployments/train-mllm.yaml: mllm, lite's blocks frozen, the
  projector and LoRA adapters on SmolLM2 trained with `training.train.fit`: Ray Train, DeepSpeed ZeRO-2, the answer's
  cross-entropy) started from that export instead of the default's (`initial_model`), on a stratified subset of the
  same training speakers' clips (--train-per-class clips of each class per speaker, with the classifier recipe's
  rows: live-cut utterances, as recorded and on the phone lines).

Each fold's held-out speakers are then read four ways, on a stratified subset of their clips as recorded
(--test-per-class of each class, spread over the speakers; speaker statistics over all of a speaker's clips, as
backfill sees a finished call):
* classifier: the fold model's head (the describer's frozen copy of it: the same weights);
* generated: the answer written freely (greedy, `llm.generate`), its label parsed back (`instructions.parse_answer`);
  an answer that does not parse, or names no label of the set, counts as wrong;
* label scored: the LM's likelihood of each label word after "emotion:" (`llm.label_log_likelihoods`), the best one;
* the answer as served (`llm.describe`): the classifier's label written into its start, the LM writing the rest;
  what is measured is whether the rest parses and whether its words are the label's lexicon words.

Answers are cut at --max-new-tokens: an answer that parses when cut parses in full (greedy decoding only adds to its
last field), so the failure rate is an upper bound. Each fold's records go to --out/fold-K/records.json; a finished
fold is not run again, so the job resumes. Run it in a loopback-only namespace, in the background:
    RAY_AUTH_MODE=disabled unshare -n sh -c 'ip link set lo up && exec nice -n 10 .venv/bin/python \\
        bench/describer_cv.py --recipe deployments/train-lite.yaml' > describer-cv.log 2>&1 &
With --report it prints the table of the folds finished so far and starts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emostream.labels import LABEL_SETS

LABEL_SET = "ravdess8"
LABELS = list(LABEL_SETS[LABEL_SET])
BATCH = 8  # utterances per training step, generation and scoring batch (the describer's default max batch)
READINGS = ("classifier", "generated", "label scored")


def per_speaker(rows: list[dict[str, Any]], per_class: int, rng: np.random.Generator) -> list[str]:
    """Keys of `per_class` random clips of each label of each speaker (a fold's training subset)."""
    groups: dict[tuple[str, str], set[str]] = {}  # a clip cut into pieces has a row per piece, all of one key
    for row in rows:
        groups.setdefault((row["label"], row["speaker"]), set()).add(row["key"])
    return [key for group in sorted(groups) for key in rng.permutation(sorted(groups[group]))[:per_class]]


def spread_over_speakers(rows: list[dict[str, Any]], per_class: int, rng: np.random.Generator) -> list[str]:
    """Keys of `per_class` random clips of each label over all the rows' speakers (a fold's test subset), dealt
    round-robin from a different speaker for each label, so every speaker gives about as many as the others."""
    speakers = sorted({row["speaker"] for row in rows})
    chosen = []
    for index, label in enumerate(LABELS):
        queues = [list(rng.permutation(sorted({r["key"] for r in rows if r["label"] == label and r["speaker"] == speaker})))
                  for speaker in speakers]
        shift = index * per_class % len(speakers)
        queues = queues[shift:] + queues[:shift]
        picked: list[str] = []
        while len(picked) < per_class and any(queues):
            picked += [queue.pop() for queue in queues if queue][: per_class - len(picked)]
        chosen += picked
    return chosen


def war_uar(truth: Sequence[str], predicted: Sequence[str | None]) -> tuple[float, float]:
    """Accuracy (WAR) and the mean of the per-class recalls over the classes in the truth (UAR); a prediction that is
    None or outside the label set is simply wrong."""
    right = np.array([t == p for t, p in zip(truth, predicted, strict=True)])
    recalls = [right[np.array(truth) == label].mean() for label in sorted(set(truth))]
    return float(right.mean()), float(np.mean(recalls))


def run_fold(k: int, classifier: Path, fold: list[str], rows: list[dict[str, Any]], recipe: Any, describer: Any,
             cache: Path, args: argparse.Namespace) -> None:
    """Fine-tune the describer on the fold's training speakers' subset, starting from the fold's classifier, then read
    the held-out subset: one record per test utterance, in --out/fold-K/records.json."""
    import torch

    from emostream.labels import OPEN_WORDS
    from emostream.models.instructions import NO_CUE, grounded, parse_answer
    from emostream.models.llm import classified_starts, generate, label_log_likelihoods, tokenizer_for
    from emostream.models.presets import load_model
    from emostream.training.data import batch, samples_from_rows
    from emostream.training.train import TrainConfig, fit

    rng = np.random.default_rng(k)
    recorded = [r for r in rows if r["variant"] == 0]
    labelled = [r for r in recorded if r["label"] in LABELS]
    held_out = [r for r in labelled if r["speaker"] in fold]
    train_keys = set(per_speaker([r for r in labelled if r["speaker"] not in fold], args.train_per_class, rng))
    test_keys = set(spread_over_speakers(held_out, args.test_per_class, rng))
    folder = args.out / f"fold-{k}"
    config = TrainConfig.model_validate({
        **describer.model_dump(mode="json"), "initial_model": str(classifier), "name": "mllm", "run_dir": str(folder / "runs"),
        "export": str(folder / "model"), "data": {**recipe.data.model_dump(mode="json"), "validation_speakers": fold},
    })
    started = time.perf_counter()
    if not (config.export / "config.json").is_file():  # else trained already: only the reading is left
        fit(config, cache, train_keys)
    trained = time.perf_counter() - started
    model = load_model(config.export).eval()
    tokenizer = tokenizer_for(model)
    samples = [s for s in samples_from_rows(held_out, LABELS, LABEL_SET) if s.key in test_keys]
    records = []
    for first in range(0, len(samples), BATCH):
        chosen = samples[first : first + BATCH]
        transcripts = [s.bundle.transcript for s in chosen]
        inputs, _ = batch(chosen, model.config)
        with torch.inference_mode():
            output = model(inputs)
            began = time.perf_counter()
            texts = generate(model, output, tokenizer, transcripts, args.max_new_tokens)
            generating = time.perf_counter() - began
            began = time.perf_counter()
            scored = label_log_likelihoods(model, output, tokenizer, transcripts).argmax(dim=1)
            scoring = time.perf_counter() - began
            served = generate(model, output, tokenizer, transcripts, args.max_new_tokens, classified_starts(model, output))
        for i, (sample, text, served_text) in enumerate(zip(chosen, texts, served, strict=True)):
            answer, served_answer = parse_answer(text), parse_answer(served_text)
            records.append({
                "key": sample.key, "speaker": sample.bundle.speaker_id, "truth": LABELS[sample.label],
                "classifier": LABELS[int(output.probabilities[i].argmax())], "text": text,
                "parsed": answer is not None, "generated": answer.emotion if answer else None,
                "label scored": LABELS[int(scored[i])], "served_text": served_text, "served_parsed": served_answer is not None,
                # the served answer's words are all its label's lexicon words (labels.OPEN_WORDS)
                "served_words_fit": served_answer is not None and bool(served_answer.words) and set(served_answer.words)
                <= set(OPEN_WORDS.get(served_answer.emotion, ())),
                # its `because` keeps a cue measured for the utterance (instructions.grounded), as the event would show it
                "served_cites": served_answer is not None and grounded(served_answer, sample.bundle).because != NO_CUE,
                "generate_seconds": generating / len(chosen), "score_seconds": scoring / len(chosen),
            })
        print(f"fold {k}: {len(records)}/{len(samples)} utterances read", flush=True)
    (folder / "records.json").write_text(json.dumps({"train_clips": len(train_keys), "train_seconds": trained,
                                                     "records": records}, indent=1))


def cell(truth: list[str], predicted: list[str | None]) -> str:
    war, uar = war_uar(truth, predicted)
    return f"{war:.1%} / {uar:.1%}"


def report(folds: dict[int, dict[str, Any]], args: argparse.Namespace) -> None:
    """The table: per fold and pooled, WAR / UAR of each reading, parse failures, seconds per utterance."""
    print(f"# describer cv: {args.describer} started from each of {args.recipe}'s fold models on its speaker folds; "
          f"per fold, trained on {args.train_per_class} clip(s) of each class per training speaker, "
          f"read on {args.test_per_class} clips of each class of the "
          f"held-out speakers; answers cut at {args.max_new_tokens} tokens; cells: WAR / UAR (chance 12.5%)")
    print("\n| fold | train clips | test clips | classifier | generated, parsed back | label scored | parse failures "
          "| out-of-set labels | served answer: parse failures | served answer: words fit its label "
          "| served answer: cites a measured cue | free label = classifier's | s/utt generate (batch 8) | s/utt label score |")
    print("|---" * 14 + "|")
    pooled: list[dict[str, Any]] = []
    for k, fold in sorted(folds.items()):
        records = fold["records"]
        pooled += records
        print(row(f"fold {k}", fold["train_clips"], records))
    if len(folds) > 1:
        print(row("pooled", sum(f["train_clips"] for f in folds.values()), pooled))


def row(name: str, train_clips: int, records: list[dict[str, Any]]) -> str:
    truth = [r["truth"] for r in records]
    failures = sum(not r["parsed"] for r in records)
    outside = sum(r["parsed"] and r["generated"] not in LABELS for r in records)
    cells = " | ".join(cell(truth, [r[reading] for r in records]) for reading in READINGS)
    served_failures = sum(not r["served_parsed"] for r in records)
    fit = sum(r["served_words_fit"] for r in records)
    cites = sum(r["served_cites"] for r in records)
    agree = sum(r["generated"] == r["classifier"] for r in records)
    return (f"| {name} | {train_clips} | {len(records)} | {cells} | {failures}/{len(records)} ({failures / len(records):.1%}) "
            f"| {outside} | {served_failures}/{len(records)} | {fit}/{len(records)} | {cites}/{len(records)} "
            f"| {agree}/{len(records)} "
            f"| {np.mean([r['generate_seconds'] for r in records]):.2f} "
            f"| {np.mean([r['score_seconds'] for r in records]):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("deployments/train-lite.yaml"),
                        help="the classifier's training config: its fold models are the classifiers read beside the describer")
    parser.add_argument("--runs", type=Path, help="the recipe's fold runs' folder (default: its run_dir)")
    parser.add_argument("--cache", type=Path, help="the feature cache root (default: the recipe's feature_cache)")
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "emostream-describer-cv", help="runs and records")
    parser.add_argument("--describer", type=Path, default=Path("deployments/train-mllm.yaml"),
                        help="the describer's training config (its initial_model and data are the fold's)")
    parser.add_argument("--train-per-class", type=int, default=2, help="training clips of each class per training speaker")
    parser.add_argument("--test-per-class", type=int, default=12, help="test clips of each class per fold")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for the local Ray instance")
    parser.add_argument("--report", action="store_true", help="only print the table of the finished folds")
    args = parser.parse_args()
    folds = sorted(args.out.glob("fold-*/records.json"))
    if args.report:
        report({int(path.parent.name.split("-")[1]): json.loads(path.read_text()) for path in folds}, args)
        return
    from emostream.cli.common import ray_local
    from emostream.training.train import cached_rows, export_fold_models, load_train_config

    recipe = load_train_config(args.recipe)
    recipe = recipe.model_copy(update={"run_dir": args.runs or recipe.run_dir, "feature_cache": args.cache or recipe.feature_cache})
    describer = load_train_config(args.describer)
    ray_local(args.cpus, log_to_driver=False)
    cache, keys, classifiers = export_fold_models(recipe, args.out / "classifiers")
    rows = cached_rows(cache, keys)
    finished = {}
    for k, (classifier, fold) in enumerate(classifiers, start=1):
        path = args.out / f"fold-{k}" / "records.json"
        if not path.is_file():
            run_fold(k, classifier, fold, rows, recipe, describer, cache, args)
        finished[k] = json.loads(path.read_text())
    report(finished, args)


if __name__ == "__main__":
    main()
