"""`emostream train` (Ray Train + DeepSpeed) and `emostream evaluate` (a model on a config's unseen speakers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emostream.cli.common import Commands, ray_connect, ray_local
from emostream.settings import load_settings

# Training, features and models load torch, Ray and the encoders: imported inside the commands, so that the
# other commands start fast.


def add_train(commands: Commands) -> None:
    train = commands.add_parser("train", help="train an emotion model (Ray Train + DeepSpeed)",
                                description="Extract features of a labelled dataset (cached, Ray Data), train with Ray "
                                            "Train workers running DeepSpeed, checkpoint every epoch (a re-run resumes), "
                                            "and export the model with save_pretrained.")
    train.add_argument("config_file", metavar="CONFIG.yaml", help="training config, e.g. deployments/train-lite.yaml")
    train.add_argument("--address", metavar="ADDR", help="Ray cluster to join, e.g. auto (default: start a local Ray)")
    train.add_argument("--cpus", type=int, metavar="N", help="CPUs for the local Ray instance (default: all)")
    train.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from emostream.training.train import load_train_config, train

    config = load_train_config(args.config_file)
    ray_connect(args.address, args.cpus)
    exported, metrics = train(config)
    print(f"model exported to {exported}")
    print("last epoch: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return 0


def add_evaluate(commands: Commands) -> None:
    evaluate = commands.add_parser("evaluate", help="evaluate a model on the validation speakers of a training config",
                                   description="WAR, UAR, weighted F1, confusion matrix and valence/arousal error on "
                                               "speakers the model never trained on, with batch and live normalisation; "
                                               "or, with --faces, the face expression expert on labelled face images "
                                               "(accuracy, UAR, ECE, confusion matrix).")
    evaluate.add_argument("config_file", metavar="CONFIG.yaml", nargs="?",
                          help="training config naming the data and its validation speakers (not with --faces)")
    evaluate.add_argument("--model", metavar="DIR", help="model folder or preset (default: the config's export folder)")
    evaluate.add_argument("--faces", metavar="PATH", type=Path,
                          help="evaluate the face expert instead: a FER+ split (.npz) or a folder with one sub-folder "
                               "of face images per label")
    evaluate.add_argument("--expression-model", choices=["fer2013", "ferplus"], default="ferplus",
                          help="with --faces: which expression weights (default: ferplus)")
    evaluate.add_argument("--temperature", type=float, metavar="T",
                          help="with --faces: softmax temperature instead of the fitted one (1: uncalibrated)")
    evaluate.add_argument("--out", metavar="DIR", help="also write metrics.json and confusion.png here")
    evaluate.add_argument("--cpus", type=int, metavar="N", help="CPUs for the local Ray instance (default: all)")
    evaluate.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.faces is not None:
        return evaluate_faces(args)
    if args.config_file is None:
        print("give a training config, or --faces PATH", file=sys.stderr)
        return 2
    from emostream.models.presets import load_model
    from emostream.perception.encode import voice_for_model
    from emostream.training.data import samples_from_rows
    from emostream.training.evaluate import evaluate_samples
    from emostream.training.features import Augment, extract_features, read_features
    from emostream.training.metrics import write_report
    from emostream.training.train import load_train_config, read_dataset

    config = load_train_config(args.config_file)
    model = load_model(args.model or config.export)
    settings = load_settings(args.config)  # the features the evaluated model reads (voice.audio_features unset: its own)
    settings = settings.model_copy(update={"voice": voice_for_model(settings.voice, args.model or config.export)})
    speakers = set(config.data.validation_speakers)
    examples = [e for e in read_dataset(config.data, config.label_set) if e.speaker in speakers or not speakers]
    ray_local(args.cpus)
    # Evaluation needs no augmented copies: its own cache, a third of the work.
    cache = extract_features(examples, settings, config.feature_cache, Augment(seed=config.seed),
                             workers=config.feature_workers)
    keys = {e.key for e in examples}
    rows = [r for r in read_features(cache) if r["key"] in keys and r["variant"] == 0]
    samples = samples_from_rows(rows, model.config.labels, model.config.label_set)
    for regime, live in (("batch", False), ("live", True)):
        report = evaluate_samples(model, samples, model.config.labels, live=live)
        print(f"== {regime} normalisation ({'each speaker over all their utterances' if not live else 'running, one utterance at a time'})")
        print(report.format())
        if args.out:
            paths = write_report(report, Path(args.out) / regime)
            print("written: " + ", ".join(str(p) for p in paths))
    return 0


def evaluate_faces(args: argparse.Namespace) -> int:
    from emostream.training.face_expert import evaluate_named_expert

    evaluation = evaluate_named_expert(args.faces, args.expression_model, args.temperature, Path(args.out) if args.out else None)
    print(evaluation.format())
    return 0
