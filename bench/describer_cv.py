"""Cross-validation of the describer (the mllm preset): the emotion its answer names, parsed back, scored like the
classifier on RAVDESS speaker folds; how often an answer fails to parse; what an answer costs.

Each fold fine-tunes mllm with the product's recipe (`training.train.fit`: Ray Train, DeepSpeed ZeRO-2, LoRA on
SmolLM2, projector and lite's blocks trained, the joint classification + answer loss) on the other folds' actors,
then reads its held-out actors' clips three ways:
* classifier: the same run's classification head (lite's), trained on the same clips in the same steps;
* generated: the answer written freely (greedy, `llm.generate`), its label parsed back (`instructions.parse_answer`);
  an answer that does not parse, or names no label of the set, counts as wrong;
* label scored: the LM's likelihood of each label word after "emotion:" (`llm.label_log_likelihoods`), the best
  one: the LM's own choice, restricted to the closed label set, so it cannot fail to parse;
* the describer's answer as served (`llm.describe`): the classifier's label written into the answer's start, the LM
  writing the rest; its label is the classifier's by construction, so what is measured is whether the rest parses
  and whether its words are the label's lexicon words (`labels.OPEN_WORDS`).

CPU is scarce, so the evaluation is cut down, and says how: FOLDS folds of whole actors; each fold trains on a
stratified subset of its training actors' clips (--train-per-class clips of each class per actor) for --epochs
epochs, and is scored on a stratified subset of its held-out actors' clips (--test-per-class of each class, spread
over the actors). Speaker statistics are each actor's over the clips a side uses (training: its subset; test: all 60
of a held-out actor's clips, as backfill sees a finished call). Answers are cut at --max-new-tokens: an answer that
parses when cut parses in full (greedy decoding only adds to its last field), so the failure rate is an upper bound.

Features come from a feature cache folder (`bench/cv.py --extract` or a training run writes one; last-layer
Whisper, 768 values). Each fold's records go to --out/fold-K/records.json; a finished fold is not run again, so the
job resumes (a fold whose model was exported is only read again). Run it in a loopback-only namespace, in the
background:
    RAY_AUTH_MODE=disabled unshare -n sh -c 'ip link set lo up && OMP_NUM_THREADS=1 exec nice -n 10 \\
        .venv/bin/python bench/describer_cv.py --features ~/.cache/emostream-cv/2772cc8975b4' > describer-cv.log 2>&1 &
With --report it prints the table of the folds finished so far and starts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emostream.labels import LABEL_SETS

LABEL_SET = "ravdess8"
LABELS = list(LABEL_SETS[LABEL_SET])
FOLDS = 2  # RAVDESS's 18 actors dealt round-robin into two folds of nine
BATCH = 8  # utterances per generation / scoring batch (the describer's default max batch)
READINGS = ("classifier", "generated", "label scored")


def actor_folds(actors: Sequence[str], count: int) -> list[list[str]]:
    """Whole actors dealt round-robin into `count` folds (sorted: the same on every run)."""
    return [sorted(actors)[k::count] for k in range(count)]


def per_actor(rows: list[dict[str, Any]], per_class: int, rng: np.random.Generator) -> list[str]:
    """Keys of `per_class` random clips of each label of each actor (a fold's training subset)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for row in sorted(rows, key=lambda r: r["key"]):
        groups.setdefault((row["label"], row["speaker"]), []).append(row["key"])
    return [key for keys in groups.values() for key in rng.permutation(keys)[:per_class]]


def spread_over_actors(rows: list[dict[str, Any]], per_class: int, rng: np.random.Generator) -> list[str]:
    """Keys of `per_class` random clips of each label over all the rows' actors (a fold's test subset), dealt
    round-robin from a different actor for each label, so every actor gives about as many as the others."""
    actors = sorted({row["speaker"] for row in rows})
    chosen = []
    for index, label in enumerate(LABELS):
        queues = [list(rng.permutation(sorted(r["key"] for r in rows if r["label"] == label and r["speaker"] == actor)))
                  for actor in actors]
        shift = index * per_class % len(actors)
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


def run_fold(k: int, actors: list[str], rows: list[dict[str, Any]], cache: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fine-tune on the other actors' subset, then score the held-out subset: one record per test clip."""
    import torch  # noqa: PLC0415

    from emostream.labels import OPEN_WORDS  # noqa: PLC0415
    from emostream.models.instructions import parse_answer  # noqa: PLC0415
    from emostream.models.llm import classified_starts, generate, label_log_likelihoods, tokenizer_for  # noqa: PLC0415
    from emostream.models.presets import load_model  # noqa: PLC0415
    from emostream.training.data import batch, samples_from_rows  # noqa: PLC0415
    from emostream.training.train import TrainConfig, fit  # noqa: PLC0415

    rng = np.random.default_rng(k)
    held_out = [r for r in rows if r["speaker"] in actors]
    training = [r for r in rows if r["speaker"] not in actors]
    train_keys = set(per_actor(training, args.train_per_class, rng))
    test_keys = set(spread_over_actors(held_out, args.test_per_class, rng))
    folder = args.out / f"fold-{k + 1}"
    config = TrainConfig.model_validate({
        "preset": "mllm", "label_set": LABEL_SET, "data": {"path": str(args.data / "ravdess-speech-16k")}, "workers": 1,
        "batch_size": BATCH, "zero_stage": 2, "run_dir": str(folder / "runs"), "name": "mllm", "export": str(folder / "model"),
        "warmup_fraction": 0.1, "stages": [{"name": "lora", "epochs": args.epochs, "learning_rate": args.learning_rate, "lora": True}],
    })
    started = time.perf_counter()
    if not (config.export / "config.json").is_file():  # else trained already: only the reading is left
        start_ray(args.cpus)
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
                "generate_seconds": generating / len(chosen), "score_seconds": scoring / len(chosen),
            })
        print(f"fold {k + 1}: {len(records)}/{len(samples)} clips read", flush=True)
    (folder / "records.json").write_text(json.dumps({"train_clips": len(train_keys), "train_seconds": trained,
                                                     "records": records}, indent=1))
    return records


def start_ray(cpus: int) -> None:
    import ray  # noqa: PLC0415

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)


def cell(truth: list[str], predicted: list[str | None]) -> str:
    war, uar = war_uar(truth, predicted)
    return f"{war:.1%} / {uar:.1%}"


def report(folds: dict[int, dict[str, Any]], args: argparse.Namespace) -> None:
    """The table: per fold and pooled, WAR / UAR of each reading, parse failures, seconds per utterance."""
    print(f"# describer cv: mllm on RAVDESS, {FOLDS} folds of whole actors; per fold, LoRA fine-tune on "
          f"{args.train_per_class} clip(s) of each class per training actor for {args.epochs} epochs (lr {args.learning_rate:g}), "
          f"scored on {args.test_per_class} clips of each class of the held-out actors; answers cut at {args.max_new_tokens} "
          "tokens; cells: WAR / UAR (chance 12.5%)")
    print("\n| fold | train clips | test clips | classifier | generated, parsed back | label scored | parse failures "
          "| out-of-set labels | served answer: parse failures | served answer: words fit its label "
          "| s/utt generate (batch 8) | s/utt label score |")
    print("|---" * 12 + "|")
    pooled: list[dict[str, Any]] = []
    for k, fold in sorted(folds.items()):
        records = fold["records"]
        pooled += records
        print(row(f"fold {k + 1}", fold["train_clips"], records))
    if len(folds) > 1:
        print(row("pooled", sum(f["train_clips"] for f in folds.values()), pooled))


def row(name: str, train_clips: int, records: list[dict[str, Any]]) -> str:
    truth = [r["truth"] for r in records]
    failures = sum(not r["parsed"] for r in records)
    outside = sum(r["parsed"] and r["generated"] not in LABELS for r in records)
    cells = " | ".join(cell(truth, [r[reading] for r in records]) for reading in READINGS)
    served_failures = sum(not r["served_parsed"] for r in records)
    fit = sum(r["served_words_fit"] for r in records)
    return (f"| {name} | {train_clips} | {len(records)} | {cells} | {failures}/{len(records)} ({failures / len(records):.1%}) "
            f"| {outside} | {served_failures}/{len(records)} | {fit}/{len(records)} "
            f"| {np.mean([r['generate_seconds'] for r in records]):.2f} "
            f"| {np.mean([r['score_seconds'] for r in records]):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding ravdess-speech-16k")
    parser.add_argument("--features", type=Path, required=True, help="a feature cache folder holding RAVDESS (last layer)")
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "emostream-describer-cv", help="runs and records")
    parser.add_argument("--train-per-class", type=int, default=1, help="training clips of each class per training actor")
    parser.add_argument("--test-per-class", type=int, default=4, help="test clips of each class per fold")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs for the local Ray instance")
    parser.add_argument("--report", action="store_true", help="only print the table of the finished folds")
    args = parser.parse_args()
    from emostream.training.features import read_features  # noqa: PLC0415

    rows = [r for r in read_features(args.features) if r["dataset"] == "ravdess" and r["variant"] == 0]
    if not rows:
        raise SystemExit(f"{args.features}: no RAVDESS rows: extract them with `bench/cv.py --extract` first")
    finished = {}
    for k, actors in enumerate(actor_folds(sorted({r["speaker"] for r in rows}), FOLDS)):
        path = args.out / f"fold-{k + 1}" / "records.json"
        if path.is_file():
            finished[k] = json.loads(path.read_text())
        elif not args.report:
            import torch  # noqa: PLC0415

            torch.set_num_threads(1)
            run_fold(k, actors, rows, args.features, args)
            finished[k] = json.loads(path.read_text())
    report(finished, args)


if __name__ == "__main__":
    main()
