"""Training on what the live path sees against training on whole clips: one small run of the same code.

Two recipes, the `lite` model trained alike on the same training speakers (deployments/train-lite.yaml's model
and settings, RAVDESS only here, `--epochs` each, one seed, no calibration):
* span: every clip whole, one row (the default's extraction), statistics over each speaker's clips, 15% of the
  examples without statistics and half with a few of the speaker's others (the default's);
* live: `data.live_cut` (the utterances a live StreamSession cuts from each clip), `--telephone-copies` noisy
  8 kHz mu-law copies of each clip, `data.call_turns` (statistics as live, over the earlier utterances of a call
  of that many of the speaker's clips), no other statistics trickery.
Each is measured on speakers neither trained on (`--test-speakers`):
* whole clips: the held-out speakers' clips as recorded, spans whole, each speaker normalised over all its
  clips (backfill of a finished call): WAR, UAR, ECE, mean confidence;
* calls: bench/calls.py's calls from the same speakers (`--turns` clips each, 0.8 s apart) through the backfill
  path at 16 kHz and through a phone line at 8 kHz: share right, lost, split, mean confidence, ECE.
`--pieces` only counts what the live path cuts from the test speakers' clips, as recorded and through the phone
line (lost, one piece, several; seconds kept), without Whisper, training or Ray.
Figures are printed (and appended to `--out`/results.jsonl), never asserted. Feature caches are resumable
(`--cache`); finished training runs are reused. Inside a loopback-only namespace, in the background:
    RAY_AUTH_MODE=disabled unshare -n sh -c 'ip link set lo up && exec nice -n 19 .venv/bin/python \\
        bench/live_training.py --out /tmp/live-training'
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/calls.py

from calls import DATA, call_figures, plan_calls, run_calls  # noqa: E402

from emostream.cli.common import ray_local  # noqa: E402
from emostream.settings import load_settings  # noqa: E402
from emostream.training.features import Augment, example_rng, extract_features, live_cut, read_features, telephoned  # noqa: E402
from emostream.training.train import CorpusConfig, TrainConfig, fit, load_train_config, read_corpus  # noqa: E402

RECIPE = Path(__file__).resolve().parent.parent / "deployments" / "train-lite.yaml"


def recipes(base: TrainConfig, args: argparse.Namespace) -> dict[str, TrainConfig]:
    data = base.data.model_copy(update={"dataset": "ravdess", "path": args.data / "ravdess-speech-16k", "more_corpora": []})
    common = {"calibration_folds": 0, "ensemble_size": 1, "feature_cache": args.cache, "feature_workers": args.feature_workers,
              "run_dir": args.out / "runs", "stages": [base.stages[0].model_copy(update={"epochs": args.epochs})]}
    live_data = data.model_copy(update={"live_cut": True, "telephone_copies": args.telephone_copies, "call_turns": args.call_turns})
    return {
        "span": base.model_copy(update={**common, "data": data, "name": "span", "export": args.out / "span"}),
        "live": base.model_copy(update={**common, "data": live_data, "name": "live", "export": args.out / "live",
                                        "early_speaker_fraction": 0.0, "unknown_speaker_fraction": 0.0}),
    }


def record(results: Path, figures: dict[str, object]) -> None:
    """Append one result line to results.jsonl."""
    with results.open("a") as handle:
        handle.write(json.dumps(figures) + "\n")


def whole_clip_figures(model_folder: Path, rows: list[dict], speakers: set[str]) -> dict[str, float]:
    """The model on the held-out speakers' clips as recorded, each speaker normalised over all its clips."""
    from emostream.models.presets import load_model
    from emostream.training.data import samples_from_rows
    from emostream.training.evaluate import predict
    from emostream.training.metrics import evaluate_predictions, expected_calibration_error

    model = load_model(str(model_folder))
    labels = list(model.config.labels)
    samples = [s for s in samples_from_rows([r for r in rows if r["speaker"] in speakers and r["variant"] == 0], labels,
                                            model.config.label_set) if s.label >= 0]
    probabilities, _, _ = predict(model, samples)
    truth = np.array([s.label for s in samples])
    report = evaluate_predictions([labels[i] for i in truth], [labels[i] for i in probabilities.argmax(axis=1)], tuple(labels))
    return {"clips": len(samples), "war": report.war, "uar": report.uar,
            "ece": expected_calibration_error(probabilities, truth), "confidence": float(probabilities.max(axis=1).mean())}


def cut_counts(examples: list, settings, telephone: bool) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """How many utterances the live path cuts from each clip (the first telephone copy's, with `telephone`)."""
    from emostream.media.records import file_segments
    from emostream.perception.segment import SegmentPerceiver
    from emostream.perception.voice.speakers import VoiceEmbedder

    perceive, voices, augment = SegmentPerceiver(settings), VoiceEmbedder(), Augment(telephone_copies=1)
    counts, kept, lost = [], [], []
    for example in examples:
        segments = [s for s in file_segments(example.media, example.key, settings.ingest) if not s.is_end_marker]
        seconds = sum(s.audio.shape[-1] for s in segments) / 16000
        if telephone:
            segments = telephoned(segments, example_rng(augment, example.key), augment, (0.0, float("inf")))
        cut = live_cut(segments, (0.0, float("inf")), settings, perceive, voices, example.key)
        counts.append(len(cut))
        kept.append(sum(b.end - b.start for b in cut) / seconds)
        if not cut:
            lost.append(str(example.label))
    return {"clips": len(counts), "lost": counts.count(0), "one": counts.count(1), "several": sum(c > 1 for c in counts),
            "kept": float(np.mean(kept)), "lost_labels": {label: lost.count(label) for label in sorted(set(lost))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-speakers", nargs="+", default=[f"ravdess-{k:02d}" for k in range(1, 9)])
    parser.add_argument("--test-speakers", nargs="+", default=[f"ravdess-{k:02d}" for k in range(15, 19)])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--telephone-copies", type=int, default=1)
    parser.add_argument("--call-turns", type=int, default=12)
    parser.add_argument("--turns", type=int, default=12, help="clips per speaker and call in the call-level test")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "emostream-live-training")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--feature-workers", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--pieces", action="store_true", help="only count the live path's pieces of the test clips")
    parser.add_argument("--no-calls", action="store_true", help="whole clips only")
    args = parser.parse_args()
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    args.out.mkdir(parents=True, exist_ok=True)
    examples = read_corpus(CorpusConfig(dataset="ravdess", path=args.data / "ravdess-speech-16k"), "ravdess8")
    train = [e for e in examples if e.speaker in args.train_speakers]
    test = [e for e in examples if e.speaker in args.test_speakers]
    configs = recipes(load_train_config(args.recipe), args)
    settings = load_settings()
    if args.pieces:
        for telephone in (False, True):
            counted = cut_counts(test, settings, telephone)
            band = "8 kHz mu-law" if telephone else "16 kHz"
            print(f"{band}: {counted}", flush=True)
            record(args.out / "results.jsonl", {"test": f"pieces {band}", "speakers": args.test_speakers, **counted})
        return
    ray_local(args.cpus, log_to_driver=False)
    print(f"# train {len(train)} clips ({', '.join(args.train_speakers)}); test {len(test)} clips "
          f"({', '.join(args.test_speakers)}); {args.epochs} epochs", flush=True)
    # the held-out clips whole, for both models: the span recipe's own cache
    span_cache = extract_features(train + test, settings, args.cache, configs["span"].augment, workers=args.feature_workers)
    held_out = read_features(span_cache)
    caches = {"span": span_cache,
              "live": extract_features(train, settings, args.cache, configs["live"].augment, workers=args.feature_workers)}
    live_rows = [r for r in read_features(caches["live"]) if r["variant"] == 0]
    pieces = [r["pieces"] for r in live_rows if r["piece"] == 0]
    print(f"# live cut of the {len(train)} training clips as recorded: {len(pieces)} cut, {len(train) - len(pieces)} lost, "
          f"{sum(p > 1 for p in pieces)} in more than one piece", flush=True)
    exports = {name: fit(config, caches[name], {e.key for e in train})[0] for name, config in configs.items()}
    results = args.out / "results.jsonl"
    for name, export in exports.items():
        figures = whole_clip_figures(export, held_out, set(args.test_speakers))
        print(f"{name:>5} whole clips: WAR {figures['war']:.1%} UAR {figures['uar']:.1%} ECE {figures['ece']:.3f} "
              f"confidence {figures['confidence']:.1%} ({figures['clips']} clips)", flush=True)
        record(results, {"recipe": name, "test": "whole clips", **figures})
    if args.no_calls:
        return
    calls = plan_calls(test, args.test_speakers, args.turns)
    for name, export in exports.items():
        for telephone in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                turns, labels = run_calls(calls, Path(tmp), str(export), 0.8, telephone)
            f = call_figures(turns, labels)
            band = "8 kHz mu-law" if telephone else "16 kHz"
            print(f"{name:>5} calls {band}: {f.right:.1%} of {f.turns} turns right, {f.lost} lost, {f.split} split; "
                  f"confidence {f.confidence:.1%}, ECE {f.ece:.3f}", flush=True)
            record(results, {"recipe": name, "test": f"calls {band}", "right": f.right, "turns": f.turns, "lost": f.lost,
                             "split": f.split, "confidence": f.confidence, "ece": f.ece})
    ray.shutdown()


if __name__ == "__main__":
    main()
