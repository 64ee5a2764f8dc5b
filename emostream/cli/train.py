"""`emostream train` (Ray Train + DeepSpeed) and `emostream evaluate` (a model on labelled recordings of unseen speakers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emostream.cli.common import Commands, ray_connect, ray_local
from emostream.settings import load_settings

if TYPE_CHECKING:
    from emostream.training.datasets import Example

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


EVALUATE_READERS = ("ravdess", "tess", "emodb", "manifest")  # the readers that label a folder or manifest alone


def add_evaluate(commands: Commands) -> None:
    evaluate = commands.add_parser("evaluate", help="evaluate an emotion model on labelled recordings of unseen speakers",
                                   description="WAR, UAR, weighted F1, ECE, mean confidence, confusion matrix and "
                                               "valence/arousal error of the emotion model on labelled recordings: a "
                                               "corpus folder or manifest, or a training config's validation speakers. "
                                               "Each recording is scored as the product scores it: cut into the "
                                               "utterances the live path cuts (its answer the mean of theirs), each "
                                               "speaker normalised over all their utterances (batch) and one utterance "
                                               "at a time (live). Or, with --faces, the face expression expert on "
                                               "labelled face images (accuracy, UAR, ECE, confusion matrix).")
    evaluate.add_argument("source", metavar="CONFIG.yaml | PATH", nargs="?",
                          help="a training config (its validation speakers; every speaker when it names none), or a "
                               "labelled corpus folder or manifest with --dataset (not with --faces)")
    evaluate.add_argument("--dataset", choices=EVALUATE_READERS,
                          help="with a folder or manifest: the reader that labels its files (a file it cannot label is "
                               "an error naming it)")
    evaluate.add_argument("--speakers", nargs="+", metavar="ID",
                          help="only these speakers, as the reader names them (e.g. ravdess-19 tess-OAF)")
    evaluate.add_argument("--model", metavar="DIR",
                          help="model folder or preset (default: the config's export folder, or the embedded default)")
    evaluate.add_argument("--whole-clips", action="store_true",
                          help="score every recording whole, as one utterance, instead of what the live path cuts from it")
    evaluate.add_argument("--telephone", action="store_true",
                          help="score every recording after a noisy 8 kHz mu-law phone line (media/telephone.py)")
    evaluate.add_argument("--cache", metavar="DIR", type=Path,
                          help="feature cache (default: the config's feature_cache, else .emostream/features)")
    evaluate.add_argument("--faces", metavar="PATH", type=Path,
                          help="evaluate the face expert instead: a FER+ split (.npz) or a folder with one sub-folder "
                               "of photos or face crops per label (each image's largest face aligned as live; one "
                               "with no face found read whole)")
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
    if args.source is None:
        print("give a training config, a labelled folder or manifest with --dataset, or --faces PATH", file=sys.stderr)
        return 2
    from emostream.models.presets import load_model
    from emostream.perception.encode import voice_for_model
    from emostream.training.data import samples_from_rows
    from emostream.training.evaluate import evaluate_samples
    from emostream.training.features import Augment, extract_features, read_features
    from emostream.training.metrics import write_report
    from emostream.training.train import CorpusConfig, load_train_config, read_corpus, read_dataset

    source = Path(args.source)
    config = load_train_config(source) if source.suffix in (".yaml", ".yml") else None
    if config is None and args.dataset is None:
        print(f"{source} is not a training config (.yaml): say which reader labels it, --dataset "
              f"{{{','.join(EVALUATE_READERS)}}}", file=sys.stderr)
        return 2
    if config is not None and args.dataset is not None:
        print(f"{source} is a training config: it names its corpora and their readers itself; --dataset is for a "
              "labelled folder or manifest", file=sys.stderr)
        return 2
    model_name = args.model or (config.export if config is not None else None)
    model = load_model(model_name)
    settings = load_settings(args.config)  # the features the evaluated model reads (voice.audio_features unset: its own)
    settings = settings.model_copy(update={"voice": voice_for_model(settings.voice, model_name)})
    if config is not None:
        examples = read_dataset(config.data, config.label_set)
        speakers = set(args.speakers or config.data.validation_speakers)
    else:
        examples = read_corpus(CorpusConfig(dataset=args.dataset, path=source), model.config.label_set)
        speakers = set(args.speakers or [])
    examples = [e for e in examples if e.speaker in speakers or not speakers]
    if not examples:
        print(f"no recordings of {sorted(speakers) if speakers else 'any speaker'} in {source}", file=sys.stderr)
        return 2
    ray_local(args.cpus)
    # No augmented copies: the recordings as they are (or through one phone line), in a cache of their own.
    augment = Augment(seed=config.seed if config is not None else 0, live_cut=not args.whole_clips,
                      telephone_copies=int(args.telephone))
    cache_root = args.cache or (config.feature_cache if config is not None else Path(".emostream/features"))
    cache = extract_features(examples, settings, cache_root, augment, workers=config.feature_workers if config else 2)
    keys, variant = {e.key for e in examples}, int(args.telephone)
    rows = [r for r in read_features(cache) if r["key"] in keys and r["variant"] == variant]
    samples = samples_from_rows(rows, model.config.labels, model.config.label_set)
    print(scored_as(examples, rows, list(model.config.labels), args.telephone, args.whole_clips))
    for regime, live in (("batch", False), ("live", True)):
        report = evaluate_samples(model, samples, model.config.labels, live=live)
        print(f"== {regime} normalisation ({'each speaker over all their utterances' if not live else 'running, one utterance at a time'})")
        print(report.format())
        if args.out:
            paths = write_report(report, Path(args.out) / regime)
            print("written: " + ", ".join(str(p) for p in paths))
    return 0


def scored_as(examples: list[Example], rows: list[dict[str, Any]], labels: list[str], telephone: bool, whole: bool) -> str:
    """The header of an evaluation: what was scored, and the labelled recordings the live path split or lost."""
    labelled = [e.key for e in examples if e.label in labels]
    speakers = len({e.speaker for e in examples if e.label in labels})
    line = "after an 8 kHz phone line" if telephone else "as recorded"
    if whole:
        return f"{len(labelled)} labelled recordings of {speakers} speakers, each scored whole ({line})"
    pieces = {r["key"]: r["pieces"] for r in rows}
    lost = [key for key in labelled if key not in pieces]
    return (f"{len(labelled)} labelled recordings of {speakers} speakers, cut as the live path cuts them ({line}): "
            f"{sum(pieces.get(key, 0) > 1 for key in labelled)} in several utterances (the mean of their answers counts), "
            f"{len(lost)} lost (no utterance; not in the figures)" + (f": {', '.join(sorted(lost)[:10])}" if lost else ""))


def evaluate_faces(args: argparse.Namespace) -> int:
    from emostream.training.face_expert import evaluate_named_expert

    evaluation = evaluate_named_expert(args.faces, args.expression_model, args.temperature, Path(args.out) if args.out else None)
    print(evaluation.format())
    return 0
