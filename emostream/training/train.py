"""`emostream train CONFIG.yaml`: Ray Train workers running DeepSpeed over the cached features.

Each worker reads the feature cache, takes its shard of every epoch, and trains
through `deepspeed.initialize` (ZeRO stage, optimizer, scheduler, gradient
accumulation and precision from the config). CPU workers use DeepSpeed's CPU
accelerator over the gloo group Ray Train made; GPU workers use NCCL. A torch
optimizer is used: DeepSpeed's own CPU Adam compiles for ~30 s on first use.

Every epoch each rank saves its ZeRO shard into one Ray Train checkpoint.
Running the same config again resumes from the run's latest checkpoint. At the
end the shards are consolidated and the model is exported with
`save_pretrained` to the folder the scorer loads. With `ensemble_size` K, K
runs train one after another from consecutive seeds and the export averages
them (`EmotionEnsemble`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from emostream.labels import near_labels
from emostream.models.presets import build_preset, check_preset
from emostream.perception.voice.whisper_base import feature_model_folder, recorded_feature_model
from emostream.training.features import Augment

if TYPE_CHECKING:
    from emostream.models.model import EmotionModel
    from emostream.settings import Settings

log = logging.getLogger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorpusConfig(_Section):
    dataset: Literal["ravdess", "tess", "emodb", "manifest", "mer2023", "captions"] = "ravdess"
    path: Path  # RAVDESS, TESS or EmoDB folder, manifest file, MER label CSV or caption file
    media: Path | None = None  # media folder for MER and caption files


class DataConfig(CorpusConfig):
    # Further corpora trained on with the first (speaker ids carry the corpus name, so they stay distinct). A
    # clip's cross-entropy is over the classes its corpus has (corpus_cross_entropy); a clip whose class the
    # label set lacks (EmoDB's boredom) trains valence and arousal only.
    more_corpora: list[CorpusConfig] = []
    validation_speakers: list[str] = []  # speaker-independent split: these speakers only validate
    augment_copies: int = Field(0, ge=0)  # augmented copies of each training example (audio-only: speed, gain, noise)
    # What the live path sees (features.Augment; model card, "Training on what the live path sees"):
    telephone_copies: int = Field(0, ge=0)  # copies of each example through a noisy 8 kHz mu-law line (media/telephone.py)
    live_cut: bool = False  # rows: the utterances a live StreamSession cuts from each copy, not the whole clip
    # > 0: every training utterance z-scored as live, against the utterances before it in a call of this many of its
    # speaker's clips (data.call_statistics), instead of all the speaker's utterances; replaces early_speaker_fraction
    call_turns: int = Field(0, ge=0)


class StageConfig(_Section):
    name: str
    epochs: int = Field(ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    freeze: list[str] = []  # parameter name prefixes kept fixed in this stage, e.g. ["visual_encoder.frame_encoder"]
    lora: bool = False  # put LoRA adapters on the language model from this stage on


class TrainConfig(_Section):
    """A training run, read from YAML (see deployments/train-*.yaml)."""

    preset: str = "lite"  # a name of emostream.models.presets.PRESETS: tiny, tiny-llm, lite, mllm, large
    preset_arguments: dict[str, Any] = {}  # what the preset takes besides the label set, e.g. large's checkpoint folders
    label_set: str = "ravdess8"
    data: DataConfig
    feature_cache: Path = Path(".emostream/features")
    feature_workers: int = Field(2, ge=1)
    workers: int = Field(2, ge=1)  # Ray Train workers (processes), one CPU each (or one GPU each with use_gpu)
    use_gpu: bool = False
    batch_size: int = Field(32, ge=1)  # per worker and step
    gradient_accumulation: int = Field(1, ge=1)
    zero_stage: int = Field(2, ge=0, le=3)
    deepspeed: Path | None = None  # a DeepSpeed JSON (deployments/deepspeed/*.json) laid over the settings here
    precision: Literal["fp32", "bf16"] = "fp32"
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    stages: list[StageConfig]
    class_balance: bool = True  # weight the loss by inverse class frequency
    valence_arousal_weight: float = Field(0.5, ge=0)
    # > 0: the voice read-out and the deep path are also each trained as a classifier of their own (this weight on
    # each loss), so the model sums two experts that each can classify, rather than a deep path that leaves the rest
    # to a read-out that stopped learning once the deep path fit the training speakers.
    expert_weight: float = Field(0.0, ge=0)
    # A class a clip's corpus lacks (TESS and EmoDB have no calm): "left_out" of every such clip's loss; "near_only":
    # left out only where the clip's label is the class's neighbour in labels.NEAREST (calm for a neutral or happy
    # TESS clip), a plain negative for the corpus's other clips (an angry TESS clip is not calm).
    absent_classes: Literal["left_out", "near_only"] = "left_out"
    language_weight: float = Field(1.0, ge=0)  # LLM presets: the captioning loss next to the classification loss
    unknown_speaker_fraction: float = Field(0.15, ge=0, le=1)  # shown without speaker statistics, as at a stream's start
    early_speaker_fraction: float = Field(0.0, ge=0, le=1)  # z-scored against a few of the speaker's utterances, as early in a stream
    seed: int = 0
    # > 1: that many models trained alike, from seeds seed, seed + 1, …, each a run of its own (<name>-member-<k>);
    # the export averages their probabilities, valence and arousal.
    ensemble_size: int = Field(1, ge=1)
    # > 1: before the exported model, that many fold models (one seed each, this recipe, runs <name>-fold-<k>) train
    # on all speakers but one speaker-grouped fold's (every corpus dealt round-robin, datasets.splits.speaker_folds);
    # their predictions on the held-out speakers are the model's own cross-validation (cv.json beside the export:
    # WAR, UAR, ECE before and after calibration) and fit the softmax temperature the export applies (config.calibration_temperature).
    calibration_folds: int = Field(0, ge=0)
    # A trained classifier export (`emostream train`'s, of the same blocks: lite's for mllm) whose weights, voice
    # statistics included, the run starts from instead of fresh ones; an ensemble gives its first member. Parts it
    # lacks (the mllm's projector and language model) start as the preset builds them. With a stage's `freeze`, its
    # blocks stay as trained and only the rest learns to read them (mllm: the projector and the LoRA adapters).
    initial_model: Path | None = None
    # The Whisper model whose every encoder layer the recipe's voice features come from, when not the transcripts'
    # (voice.asr_model_dir's): "whisper-base" (the install step's Whisper base) or a CTranslate2 model folder. The
    # export records it (`audio_feature_model`), and serving follows it. Unset: the settings' features (the served
    # model's, or voice.feature_model_dir as set).
    audio_feature_model: str | None = None
    run_dir: Path = Path(".emostream/runs")
    name: str = "emotion"
    export: Path = Path(".emostream/models/emotion")

    @model_validator(mode="after")
    def _calibration_on_held_out_speakers(self) -> TrainConfig:
        if self.calibration_folds == 1:
            raise ValueError("calibration_folds: 0 (no calibration) or at least 2 speaker folds, not 1")
        if self.calibration_folds and self.data.validation_speakers:
            raise ValueError("calibration_folds holds out every speaker in turn: leave data.validation_speakers empty")
        return self

    @model_validator(mode="after")
    def _known_preset_and_ensemble_of_classifiers(self) -> TrainConfig:
        check_preset(self.preset, self.preset_arguments)
        # tiny-llm and mllm always have a language model, large when given one; an ensemble would only fail at its export
        has_language_model = self.preset in ("tiny-llm", "mllm") or bool(self.preset_arguments.get("llm_path"))
        if self.ensemble_size > 1 and has_language_model:
            raise ValueError("ensemble_size > 1 averages classifiers: a preset with a language model cannot be ensembled")
        return self

    @model_validator(mode="after")
    def _one_source_of_early_statistics(self) -> TrainConfig:
        if self.data.call_turns and self.early_speaker_fraction:
            raise ValueError("data.call_turns already gives early utterances few statistics, as live: "
                             f"set early_speaker_fraction to 0 (not {self.early_speaker_fraction}) or call_turns to 0")
        return self

    @property
    def augment(self) -> Augment:
        """The feature extraction's recipe for the training examples (the cache key's augmentation part)."""
        return Augment(copies=self.data.augment_copies, seed=self.seed, telephone_copies=self.data.telephone_copies,
                       live_cut=self.data.live_cut)

    @property
    def epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training config; relative paths in it are relative to the current directory."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return TrainConfig.model_validate(data)


def read_dataset(data: DataConfig, label_set: str) -> list:
    """The examples a config names: its corpus and any more_corpora, one list (keys unique across them)."""
    examples = [example for corpus in [data, *data.more_corpora] for example in read_corpus(corpus, label_set)]
    seen: dict[str, str] = {}
    for example in examples:
        if example.key in seen:
            raise ValueError(f"example key {example.key!r} occurs in {seen[example.key]} and {example.media}: "
                             "the corpora in data and data.more_corpora must not overlap")
        seen[example.key] = str(example.media)
    return examples


def read_corpus(corpus: CorpusConfig, label_set: str) -> list:
    """The examples of one corpus."""
    from emostream.training import datasets  # noqa: PLC0415

    if corpus.dataset == "ravdess":
        return datasets.read_ravdess(corpus.path)
    if corpus.dataset == "tess":
        return datasets.read_tess(corpus.path, label_set)
    if corpus.dataset == "emodb":
        return datasets.read_emodb(corpus.path, label_set)
    if corpus.dataset == "manifest":
        return datasets.read_manifest(corpus.path, label_set)
    if corpus.media is None:
        raise ValueError(f"data.media (the media folder) is needed for dataset {corpus.dataset!r}")
    if corpus.dataset == "mer2023":
        return datasets.read_mer2023(corpus.path, corpus.media)
    return datasets.read_captions(corpus.path, corpus.media, label_set)


def deepspeed_config(config: TrainConfig) -> dict[str, Any]:
    """The DeepSpeed JSON for this run (also written next to the run as deepspeed.json): the ZeRO stage and the
    batch sizes always come from the training config; a `deepspeed` file, when given, sets everything else."""
    if config.deepspeed is not None:
        try:
            extra = json.loads(Path(config.deepspeed).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"deepspeed config {config.deepspeed}: {error}") from error
        return {**extra, "zero_optimization": {**extra.get("zero_optimization", {}), "stage": config.zero_stage},
                "train_micro_batch_size_per_gpu": config.batch_size, "gradient_accumulation_steps": config.gradient_accumulation}
    return {
        "train_micro_batch_size_per_gpu": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": config.zero_stage},
        "bf16": {"enabled": config.precision == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build_model(config: TrainConfig) -> EmotionModel:
    """A fresh model of the config's preset, for its label set, with its preset arguments."""
    return build_preset(config.preset, config.label_set, config.preset_arguments)


def _stage_at(config: TrainConfig, epoch: int) -> tuple[int, StageConfig]:
    first = 0
    for index, stage in enumerate(config.stages):
        if epoch < first + stage.epochs:
            return index, stage
        first += stage.epochs
    return len(config.stages) - 1, config.stages[-1]


def corpus_cross_entropy(logits, truth, classes, weights=None, label_smoothing: float = 0.05):  # type: ignore[no-untyped-def]
    """Cross-entropy of each example over the classes its corpus has; where every class is present it equals
    F.cross_entropy(logits, truth, weight=weights, label_smoothing=label_smoothing).

    logits : shape = (B, n_labels); truth : shape = (B,) class indices; classes : shape = (B, n_labels) bool,
    the classes each example's corpus has (the others' logits are left out of its softmax, and the label
    smoothing spreads over the present classes only); weights : shape = (n_labels,) or None.
    """
    import torch  # noqa: PLC0415

    log_p = torch.log_softmax(logits.masked_fill(~classes, float("-inf")), dim=1).masked_fill(~classes, 0.0)
    w = weights if weights is not None else torch.ones(logits.shape[1], device=logits.device)
    picked = -log_p.gather(1, truth.unsqueeze(1)).squeeze(1) * w[truth]
    spread = -(log_p * w).sum(dim=1) / classes.sum(dim=1)
    return ((1 - label_smoothing) * picked + label_smoothing * spread).sum() / w[truth].sum()


def loss_classes(present, truth, config: TrainConfig):  # type: ignore[no-untyped-def]
    """The classes in each labelled example's cross-entropy, shape = (B, n_labels) bool, from the classes its corpus
    has (`present`, same shape) and its label (`truth`, shape = (B,)), as `config.absent_classes` says."""
    import torch  # noqa: PLC0415

    if config.absent_classes == "left_out":
        return present
    near = torch.from_numpy(near_labels(config.label_set)).to(present.device)  # [k, j]: a clip labelled j may be k
    return present | ~near[:, truth].T


def _loss(model, output, targets, weights, config: TrainConfig, samples, tokenizer):  # type: ignore[no-untyped-def]
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    labelled = targets["label"] >= 0
    loss = torch.zeros((), device=output.logits.device)
    if labelled.any():
        truth = targets["label"][labelled]
        classes = loss_classes(targets["classes"][labelled], truth, config)
        loss = loss + corpus_cross_entropy(output.logits[labelled], truth, classes, weights)
        if config.expert_weight > 0:
            voice = output.voice_logits[labelled]
            for expert in (voice, output.logits[labelled] - voice):
                loss = loss + config.expert_weight * corpus_cross_entropy(expert, truth, classes, weights)
    for name, predicted in (("valence", output.valence), ("arousal", output.arousal)):
        known = torch.isfinite(targets[name])
        if known.any() and config.valence_arousal_weight > 0:
            loss = loss + config.valence_arousal_weight * F.mse_loss(predicted[known], targets[name][known])
    if tokenizer is not None and config.language_weight > 0:
        from emostream.models.llm import language_loss  # noqa: PLC0415

        captioned = [i for i, s in enumerate(samples) if s.target_text]
        if captioned:
            loss = loss + config.language_weight * language_loss(
                model, output.select(captioned), tokenizer,
                [samples[i].bundle.transcript for i in captioned], [samples[i].target_text for i in captioned],
            )
    return loss


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import torch  # noqa: PLC0415

    config = TrainConfig.model_validate(loop_config["config"])
    if not config.use_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"  # before deepspeed is imported
        torch.set_num_threads(1)
    import deepspeed  # noqa: PLC0415
    import ray.train  # noqa: PLC0415

    from emostream.models.llm import add_lora, tokenizer_for  # noqa: PLC0415
    from emostream.models.score import speaker_floor  # noqa: PLC0415
    from emostream.training.data import SpeakerPools, batch, call_statistics, samples_from_rows, voice_statistics  # noqa: PLC0415

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(config.seed)
    keys = set(loop_config["keys"]) if loop_config.get("keys") is not None else None
    rows = cached_rows(Path(loop_config["cache"]), keys)
    validation = set(config.data.validation_speakers)
    model = build_model(config)
    labels = model.config.labels
    _check_audio_width(rows, model.config.audio_embedding, config)
    train_samples = samples_from_rows([r for r in rows if r["speaker"] not in validation], labels, config.label_set)
    val_samples = validation_samples(rows, config, labels)
    if config.initial_model is not None:  # its voice statistics too: those its blocks were trained on
        start_from(model, config.initial_model)
    else:
        mean, std = voice_statistics(train_samples)
        model.audio_adapter.voice_mean.copy_(mean)
        model.audio_adapter.voice_std.copy_(std)
    pools = SpeakerPools(train_samples, speaker_floor(model)) if config.early_speaker_fraction > 0 else None
    if config.data.call_turns:
        train_samples = call_statistics(train_samples, speaker_floor(model), config.data.call_turns)
    tokenizer = tokenizer_for(model) if model.language_model is not None else None
    counts = np.bincount([s.label for s in train_samples if s.label >= 0], minlength=len(labels)).astype(np.float64)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(labels), dtype=torch.float32) if config.class_balance else None

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and loop_config.get("resume_from"):
        checkpoint = ray.train.Checkpoint(loop_config["resume_from"])
    start_epoch, engine, stage_index = 0, None, -1
    resume_dir = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = json.loads((Path(directory) / "progress.json").read_text())
            start_epoch = state["epoch"] + 1
            resume_dir = tempfile.mkdtemp(prefix="emostream-resume-")
            import shutil  # noqa: PLC0415

            shutil.copytree(directory, resume_dir, dirs_exist_ok=True)
    steps_per_epoch = math.ceil(len(train_samples) / world / config.batch_size / config.gradient_accumulation)
    metrics_file = Path(loop_config["run_path"]) / "metrics.csv"
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

        writer = SummaryWriter(str(Path(loop_config["run_path"]) / "tensorboard"))
    for epoch in range(start_epoch, config.epochs):
        index, stage = _stage_at(config, epoch)
        if index != stage_index:  # a new stage: its own trainable set and optimizer
            if stage.lora and model.language_model is not None and not hasattr(model.language_model, "peft_config"):
                add_lora(model)
            for name, parameter in model.named_parameters():
                if "lora_" in name:
                    parameter.requires_grad_(True)
                elif model.language_model is not None and name.startswith("language_model.") and stage.lora:
                    parameter.requires_grad_(False)
                else:
                    parameter.requires_grad_(not any(name.startswith(prefix) for prefix in stage.freeze))
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=stage.learning_rate, weight_decay=config.weight_decay)
            total = steps_per_epoch * stage.epochs
            warmup = max(1, int(config.warmup_fraction * total))
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer,
                lambda step, w=warmup, n=total: min(1.0, (step + 1) / w) * 0.5 * (1 + math.cos(math.pi * min(step, n) / n)),
            )
            engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule, config=deepspeed_config(config))
            stage_index = index
            if resume_dir is not None:
                engine.load_checkpoint(resume_dir)
                resume_dir = None
        assert engine is not None
        engine.train()
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(train_samples))[rank::world]
        started, losses = time.perf_counter(), []
        for first in range(0, len(order), config.batch_size):
            chosen = [train_samples[i] for i in order[first : first + config.batch_size]]
            inputs, targets = batch(chosen, model.config, rng, config.unknown_speaker_fraction, pools, config.early_speaker_fraction)
            inputs, targets = inputs.to(engine.device), {k: v.to(engine.device) for k, v in targets.items()}
            output = engine(inputs)
            loss = _loss(model, output, targets, weights.to(engine.device) if weights is not None else None, config, chosen, tokenizer)
            engine.backward(loss)
            engine.step()
            losses.append(float(loss.detach()))
        seconds = time.perf_counter() - started
        engine.eval()
        metrics = {"epoch": epoch, "stage": stage.name, "loss": float(np.mean(losses)) if losses else float("nan"),
                   "samples_per_second": len(order) / seconds if seconds > 0 else 0.0,
                   **validation_figures(model, val_samples, labels)}
        if rank == 0:
            _log_metrics(metrics_file, writer, metrics)
        with tempfile.TemporaryDirectory() as directory:
            engine.save_checkpoint(directory, tag=f"epoch-{epoch}")
            if rank == 0:
                (Path(directory) / "progress.json").write_text(json.dumps({"epoch": epoch, "stage": stage.name}))
                model.config.save_pretrained(directory)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    if writer is not None:
        writer.close()


def start_from(model, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Load a trained classifier's weights into `model` (TrainConfig.initial_model): every block, head and buffer the
    two share; the model's own language model and projector, which a classifier lacks, stay as built."""
    from emostream.models.model import EmotionEnsemble  # noqa: PLC0415
    from emostream.models.presets import load_model  # noqa: PLC0415

    trained = load_model(path)
    if isinstance(trained, EmotionEnsemble):
        trained = trained.members[0]
    if list(trained.config.labels) != list(model.config.labels):
        raise ValueError(f"initial_model {path}: labels {list(trained.config.labels)}, the run's are {list(model.config.labels)}")
    own = model.state_dict()
    weights = trained.state_dict()
    unfit = sorted(name for name, value in weights.items() if name not in own or own[name].shape != value.shape)
    missing = sorted(name for name in own if name not in weights and not name.startswith(("language_model.", "llm_projection.")))
    if unfit or missing:
        raise ValueError(f"initial_model {path}: its weights do not fit this preset's blocks (not here or another shape: "
                         f"{unfit[:3]}; not in it: {missing[:3]}): was it trained with the same preset_arguments?")
    model.load_state_dict(weights, strict=False)


def _check_audio_width(rows: list[dict[str, Any]], width: int, config: TrainConfig) -> None:
    """The cached Whisper embeddings must have the width the preset reads; the error says what to change."""
    found = next((len(r["audio_embedding"]) for r in rows if r["audio_embedding"] is not None), width)
    if found != width:
        raise ValueError(
            f"the feature cache holds Whisper embeddings of {found} values, the {config.preset} model reads {width}: "
            f"set preset_arguments.audio_embedding: {found}, or extract with the voice.audio_features the model expects "
            "(EMOSTREAM_VOICE__AUDIO_FEATURES=last_layer gives 768, every_layer 3,840 for tiny.en)"
        )


def _log_metrics(path: Path, writer: Any, metrics: dict[str, Any]) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as handle:
        out = csv.DictWriter(handle, fieldnames=list(metrics))
        if new:
            out.writeheader()
        out.writerow(metrics)
    for name, value in metrics.items():
        if isinstance(value, int | float) and name != "epoch":
            writer.add_scalar(name, value, metrics["epoch"])
    log.info("epoch %s: %s", metrics["epoch"], {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


def latest_checkpoint(run_path: Path) -> Path | None:
    """The newest checkpoint folder Ray Train wrote under a run."""
    found = sorted((p for p in run_path.glob("checkpoint_*") if (p / "progress.json").exists()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def consolidate(checkpoint: Path, config: TrainConfig):  # type: ignore[no-untyped-def]
    """The model a checkpoint holds, its ZeRO shards consolidated (LoRA merged into the language model)."""
    import torch  # noqa: PLC0415

    if not config.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from emostream.models.llm import add_lora  # noqa: PLC0415

    model = build_model(config)
    if any(stage.lora for stage in config.stages) and model.language_model is not None:
        add_lora(model)
    tag = (checkpoint / "latest").read_text().strip()
    if not any((checkpoint / tag).glob("zero_pp_rank_*")):  # ZeRO off: the module file holds everything
        state = torch.load(checkpoint / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint  # noqa: PLC0415

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=tag)
        module_state = torch.load(checkpoint / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
        state = {**{k: v for k, v in module_state.items() if k not in state}, **state}  # buffers live only in the module file
    model.load_state_dict(state)
    # LoRA merged: a plain model to reload. A referenced LM keeps its adapters apart, the checkpoint saves only them
    # and loading merges them into the base (EmotionModel.from_pretrained).
    if model.language_model is not None and hasattr(model.language_model, "merge_and_unload") and not model.config.llm_path:
        model.language_model = model.language_model.merge_and_unload()
    return model


def train(config: TrainConfig, examples: list | None = None) -> tuple[Path, dict[str, Any]]:
    """Extract features (cached), train with Ray Train + DeepSpeed (resuming a stopped run), export. Inside ray.init()."""
    from emostream.training.features import extract_features  # noqa: PLC0415

    examples = examples if examples is not None else read_dataset(config.data, config.label_set)
    cache = extract_features(examples, recipe_settings(config), config.feature_cache, config.augment, workers=config.feature_workers)
    return fit(config, cache, {example.key for example in examples})


def recipe_settings(config: TrainConfig, settings: Settings | None = None) -> Settings:
    """The settings the recipe's features are extracted with (default: `load_settings()`'s): with its
    `audio_feature_model`, when it names one, every layer of that Whisper model. Settings that ask for other
    features (voice.audio_features last_layer, or another voice.feature_model_dir) are an error naming both."""
    from emostream.perception.encode import with_feature_model  # noqa: PLC0415
    from emostream.perception.voice.whisper_layers import missing_model_error  # noqa: PLC0415
    from emostream.settings import load_settings  # noqa: PLC0415

    settings = settings if settings is not None else load_settings()
    if config.audio_feature_model is None:
        return settings
    if settings.voice.audio_features == "last_layer":
        raise ValueError(f"{config.name}: the recipe trains on every layer of {config.audio_feature_model}, but "
                         "voice.audio_features is last_layer: leave it unset")
    voice = with_feature_model(settings.voice, config.audio_feature_model, f"recipe {config.name} trains on")
    folder = feature_model_folder(config.audio_feature_model)
    if not (folder / "model.bin").is_file():
        raise missing_model_error(folder, f"model.bin for recipe {config.name}'s audio_feature_model")
    return settings.model_copy(update={"voice": voice.model_copy(update={"audio_features": "every_layer"})})


def fit(config: TrainConfig, cache: Path, keys: set[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Train on a feature cache folder (only the rows of `keys`, when given: a cache may hold other corpora's
    features too) with Ray Train + DeepSpeed (resuming a stopped run) and export with `save_pretrained`.
    Returns the export folder and the last epoch's metrics; for an ensemble, those of its last member, with the
    validation figures (val_*) of the whole ensemble."""
    from emostream.models.model import EmotionEnsemble  # noqa: PLC0415

    if config.ensemble_size == 1:
        model, metrics = _fit_run(config, cache, keys)
    else:
        members = []
        for k in range(config.ensemble_size):
            member = config.model_copy(update={"seed": config.seed + k, "name": f"{config.name}-member-{k}"})
            trained, metrics = _fit_run(member, cache, keys)
            members.append(trained)
        model = EmotionEnsemble.of(members)
        validation = validation_samples(cached_rows(cache, keys), config, model.config.labels)
        metrics = {**metrics, **validation_figures(model, validation, model.config.labels)}
    # after the exported model's own runs: a stopped run has those first, and the folds only calibrate them
    calibration = cross_validate(config, cache, keys) if config.calibration_folds else None
    record_export(model, cache, calibration["temperature"] if calibration is not None else None)
    config.export.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(config.export)
    if calibration is not None:
        (config.export / "cv.json").write_text(json.dumps(calibration, indent=1) + "\n")
        metrics = {**metrics, **{f"cv_{name}": value for name, value in calibration["pooled"].items()}}
    return config.export, metrics


def record_export(model, cache: Path, temperature: float | None) -> None:  # type: ignore[no-untyped-def]
    """Record in the model's config (and each ensemble member's, which score with their own) what serving must know:
    the Whisper features it was trained on (and their Whisper model, when not the transcripts'), and, when its recipe
    was cross-validated, the fitted softmax temperature."""
    voice = trained_voice(cache)
    recorded: dict[str, Any] = {"audio_features": voice.get("audio_features")}
    feature_model = voice.get("feature_model_dir")
    if feature_model is not None:  # every_layer from another Whisper model than the transcripts': serving follows it
        recorded["audio_feature_model"] = recorded_feature_model(Path(feature_model))
    if temperature is not None:
        recorded["calibration_temperature"] = temperature
    for part in [model, *getattr(model, "members", [])]:
        for name, value in recorded.items():
            setattr(part.config, name, value)


def trained_voice(cache: Path) -> dict[str, Any]:
    """The voice settings a feature cache was extracted with (its recipe.json); {} for a cache without one."""
    recipe = cache / "recipe.json"
    return dict(json.loads(recipe.read_text())["settings"]["voice"]) if recipe.is_file() else {}


def cross_validate(config: TrainConfig, cache: Path, keys: set[str] | None) -> dict[str, Any]:
    """The recipe's own speaker-grouped CV (`calibration_folds` fold models, one seed each) and the softmax
    temperature fitted on its held-out predictions (speakers whole-speaker normalised, as backfill does).

    The figures are those of single fold models; the exported ensemble applies the temperature to each member
    before averaging, so its held-out confidence can only be lower than a member's (averaging softens)."""
    return _cross_validate(config, cache, keys)[0]


def _cross_validate(config: TrainConfig, cache: Path, keys: set[str] | None) -> tuple[dict[str, Any], list[Any]]:
    """cross_validate's figures, and its fold models in fold order."""
    from emostream.training.evaluate import predict  # noqa: PLC0415
    from emostream.training.metrics import fit_temperature, held_out_figures  # noqa: PLC0415

    rows = [row for row in cached_rows(cache, keys) if row["variant"] == 0]
    folds = calibration_folds(config, rows)
    held_out: list[tuple[str, int, np.ndarray]] = []  # (corpus, truth, probabilities) per labelled held-out clip
    labels: list[str] = []
    models = []
    for k, fold in enumerate(folds, start=1):
        run, model = fold_model(config, k, fold, cache, keys)
        models.append(model)
        labels = list(model.config.labels)
        samples = [s for s in validation_samples(rows, run, labels) if s.label >= 0]
        corpus = {row["key"]: row["dataset"] for row in rows}
        probabilities, _, _ = predict(model, samples)
        held_out += [(corpus[s.key], s.label, p) for s, p in zip(samples, probabilities, strict=True)]
    truth = np.array([label for _, label, _ in held_out])
    raw = np.stack([p for _, _, p in held_out])
    temperature = fit_temperature(raw, truth)

    def figures(mask: np.ndarray) -> dict[str, float]:
        return {"clips": int(mask.sum()), **held_out_figures(raw[mask], truth[mask], labels, temperature)}

    corpora = np.array([name for name, _, _ in held_out])
    result = {"folds": [sorted(fold) for fold in folds], "temperature": temperature,
              "pooled": figures(np.ones(len(truth), bool)),
              "per_corpus": {name: figures(corpora == name) for name in corpus_order(config, rows) if (corpora == name).any()}}
    log.info("cross-validation over %d speaker folds: %s", len(folds), result)
    return result, models


def calibration_folds(config: TrainConfig, rows: list[dict[str, Any]]) -> list[set[str]]:
    """The speakers each of the recipe's `calibration_folds` folds holds out: the rows' speakers dealt round-robin
    (datasets.splits.speaker_folds), corpus by corpus in the config's order (as bench/cv.py deals them), then any
    other dataset the rows carry. Two recipes over the same speakers get the same folds."""
    from emostream.training.datasets.splits import speaker_folds  # noqa: PLC0415

    order = corpus_order(config, rows)
    return speaker_folds([r["speaker"] for r in rows], [r["dataset"] for r in rows], config.calibration_folds, order)


def corpus_order(config: TrainConfig, rows: list[dict[str, Any]]) -> list[str]:
    """The config's corpora in its order, then any other dataset name the rows carry."""
    named = [corpus.dataset for corpus in [config.data, *config.data.more_corpora]]
    return list(dict.fromkeys(named + sorted({row["dataset"] for row in rows})))


def fold_model(config: TrainConfig, number: int, fold: set[str], cache: Path, keys: set[str] | None):  # type: ignore[no-untyped-def]
    """Fold `number` (from 1) of the recipe's cross-validation: run <name>-fold-<number>, one seed, trained on every
    speaker but `fold`'s (a finished run is reused). Returns the run's config (its data.validation_speakers: the
    fold) and the model."""
    return held_out_model(config, f"{config.name}-fold-{number}", fold, cache, keys)


def held_out_model(config: TrainConfig, name: str, held_out: set[str], cache: Path, keys: set[str] | None):  # type: ignore[no-untyped-def]
    """Run `name`: the recipe, one seed, trained on every speaker of the cached rows of `keys` but `held_out`'s (a
    finished run is reused). Returns the run's config (its data.validation_speakers: `held_out`) and the model."""
    run = config.model_copy(update={"name": name, "ensemble_size": 1, "calibration_folds": 0,
                                    "data": config.data.model_copy(update={"validation_speakers": sorted(held_out)})})
    model, _ = _fit_run(run, cache, keys)
    return run, model


def export_fold_models(config: TrainConfig, folder: Path) -> tuple[Path, set[str], list[tuple[Path, list[str]]]]:
    """The recipe's `calibration_folds` fold models (trained, or reused when finished), each exported into
    folder/fold-<k> as `emostream train` exports a model (the temperature fitted on their held-out predictions), after
    its examples' features are extracted (cached), as `train` extracts them. Returns the feature cache folder, the
    examples' keys, and per fold the export with the speakers it held out. Inside ray.init()."""
    from emostream.training.features import extract_features  # noqa: PLC0415

    if config.calibration_folds < 2:
        raise ValueError(f"{config.name}: the recipe trains no fold models (calibration_folds: {config.calibration_folds})")
    examples = read_dataset(config.data, config.label_set)
    keys = {example.key for example in examples}
    cache = extract_features(examples, recipe_settings(config), config.feature_cache, config.augment, workers=config.feature_workers)
    calibration, models = _cross_validate(config, cache, keys)
    exported = []
    for k, (fold, model) in enumerate(zip(calibration["folds"], models, strict=True), start=1):
        record_export(model, cache, calibration["temperature"])
        model.save_pretrained(folder / f"fold-{k}")
        exported.append((folder / f"fold-{k}", sorted(fold)))
    return cache, keys, exported


@dataclass(frozen=True)
class CorpusFold:
    """A leave-one-corpus-out fold: the model that scores a held-out corpus."""

    trains_on: tuple[str, ...]  # the config's corpora but the held-out one, in the config's order
    held_out: frozenset[str]  # every speaker of the rows of any other corpus: the model never sees them


def corpus_folds(config: TrainConfig, rows: list[dict[str, Any]]) -> dict[str, CorpusFold | None]:
    """Per corpus the rows carry (corpus_order), the fold that scores it: trained on the config's other corpora,
    holding out every speaker of the rest. A corpus the config does not train on is only tested on, so a recipe
    of fewer corpora is scored on the others (a RAVDESS-only recipe: one model, trained on RAVDESS, for TESS and
    EmoDB alike). None where no corpus is left to train on."""
    named = [corpus.dataset for corpus in [config.data, *config.data.more_corpora]]
    present = {row["dataset"] for row in rows}
    if missing := [name for name in named if name not in present]:
        raise ValueError(f"the feature rows hold no clip of {', '.join(missing)}, which the config trains on: "
                         "extract their features into the cache first")
    folds: dict[str, CorpusFold | None] = {}
    for corpus in corpus_order(config, rows):
        trains_on = tuple(name for name in named if name != corpus)
        held_out = frozenset(row["speaker"] for row in rows if row["dataset"] not in trains_on)
        folds[corpus] = CorpusFold(trains_on, held_out) if trains_on else None
    return folds


def corpus_model(config: TrainConfig, fold: CorpusFold, cache: Path, keys: set[str] | None):  # type: ignore[no-untyped-def]
    """A leave-one-corpus-out fold's model: run <name>-on-<corpora>, one seed, trained on every speaker of the corpora
    it trains on (a finished run is reused). Returns the run's config and the model."""
    return held_out_model(config, f"{config.name}-on-{'-'.join(fold.trains_on)}", set(fold.held_out), cache, keys)


def leave_one_corpus_out(config: TrainConfig, cache: Path, keys: set[str] | None) -> dict[str, dict[str, float] | None]:
    """The recipe's leave-one-corpus-out CV (corpus_folds): each held-out corpus scored by a model of this recipe (one
    seed, run <name>-on-<corpora>, reused when finished; one per distinct set of training corpora) on every
    labelled clip of it, each speaker normalised over all its clips (as cross_validate scores). Figures as
    held_out_figures gives them, of the model's own probabilities (no temperature is fitted here); None where no
    corpus is left to train on."""
    from emostream.training.evaluate import predict  # noqa: PLC0415
    from emostream.training.metrics import held_out_figures  # noqa: PLC0415

    rows = [row for row in cached_rows(cache, keys) if row["variant"] == 0]
    models: dict[tuple[str, ...], Any] = {}
    result: dict[str, dict[str, float] | None] = {}
    for corpus, fold in corpus_folds(config, rows).items():
        if fold is None:
            result[corpus] = None
            continue
        if fold.trains_on not in models:
            models[fold.trains_on] = corpus_model(config, fold, cache, keys)
        run, model = models[fold.trains_on]
        labels = list(model.config.labels)
        samples = [s for s in validation_samples([r for r in rows if r["dataset"] == corpus], run, labels) if s.label >= 0]
        probabilities, _, _ = predict(model, samples)
        figures = held_out_figures(probabilities, np.array([s.label for s in samples]), labels, 1.0)
        result[corpus] = {"clips": len(samples), **{name: value for name, value in figures.items() if not name.endswith("_calibrated")}}
        log.info("leave-one-corpus-out, %s held out (trained on %s): %s", corpus, ", ".join(fold.trains_on), result[corpus])
    return result


def cached_rows(cache: Path, keys: set[str] | None) -> list[dict[str, Any]]:
    """The feature rows of a cache folder whose example key is in `keys` (all of them for None): a cache keyed by
    the settings may also hold the features of corpora this run does not name."""
    from emostream.training.features import read_features  # noqa: PLC0415

    return [row for row in read_features(cache) if keys is None or row["key"] in keys]


# Settings a run's weights do not depend on: where things are kept, how many processes read features, what is done
# with the run afterwards. Stage lengths are left out too: a run may be continued with more epochs. The DeepSpeed
# file counts by what it says (its optimizer, scheduler, precision), not by where it is.
_NOT_THE_RECIPE = {"feature_cache", "feature_workers", "deepspeed", "run_dir", "export", "ensemble_size", "calibration_folds"}


def run_recipe(config: TrainConfig) -> dict[str, Any]:
    """What a run's weights depend on, as JSON: the config without `_NOT_THE_RECIPE`, stage lengths and data folders,
    with the DeepSpeed JSON the run trains with (`deepspeed_config`)."""
    recipe = config.model_dump(mode="json", exclude=_NOT_THE_RECIPE)
    recipe["deepspeed"] = deepspeed_config(config)
    for stage in recipe["stages"]:
        del stage["epochs"]
    for corpus in [recipe["data"], *recipe["data"]["more_corpora"]]:
        corpus.pop("path")
        corpus.pop("media", None)
    return recipe


def recipe_differences(recorded: Any, current: Any, name: str = "") -> list[str]:
    """The recorded recipe's settings that the current one changes or lacks, by dotted name (stages[0].learning_rate).
    A setting only the current recipe has is not one: a newer emostream may add settings, at defaults that keep the
    behaviour the run was trained with."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        named = {key: f"{name}.{key}" if name else key for key in recorded}
        return [difference for key, value in recorded.items()
                for difference in (recipe_differences(value, current[key], named[key]) if key in current else [named[key]])]
    if isinstance(recorded, list) and isinstance(current, list) and len(recorded) == len(current):
        return [difference for k, (before, now) in enumerate(zip(recorded, current, strict=True))
                for difference in recipe_differences(before, now, f"{name}[{k}]")]
    return [] if recorded == current else [name]


def check_run_recipe(run_path: Path, config: TrainConfig) -> None:
    """A run folder records the recipe it was started with (recipe.json); reusing or resuming it under another
    recipe would pass off its weights as the new recipe's, so that is an error naming the settings that differ."""
    path = run_path / "recipe.json"
    recipe = run_recipe(config)
    if path.is_file():
        changed = recipe_differences(json.loads(path.read_text()), recipe)
        if changed:
            raise ValueError(f"run {run_path} was trained with another recipe ({', '.join(changed)} differ): give this "
                             "recipe another name or run_dir, or delete that run folder to train it again")
    elif latest_checkpoint(run_path) is None:
        path.write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
    else:
        log.warning("run %s has checkpoints but no recipe.json (it predates recorded recipes): reused as it is", run_path)


def _fit_run(config: TrainConfig, cache: Path, keys: set[str] | None = None):  # type: ignore[no-untyped-def]
    """One Ray Train run (resumed from its latest checkpoint, if any): the consolidated model and the last epoch's metrics."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    if config.deepspeed is not None:  # workers run in their own folders: hand them an absolute path
        config = config.model_copy(update={"deepspeed": config.deepspeed.resolve()})
    if config.initial_model is not None:  # checked here, before any worker starts
        if not (config.initial_model / "config.json").is_file():
            raise ValueError(f"initial_model {config.initial_model}: not a model folder (no config.json): give an "
                             "`emostream train` export")
        config = config.model_copy(update={"initial_model": config.initial_model.resolve()})
    # the same for the preset's checkpoint folders (large: vision_path, audio_path, llm_path)
    folders = {name: str(Path(value).resolve()) for name, value in config.preset_arguments.items() if name.endswith("_path") and value}
    config = config.model_copy(update={"preset_arguments": {**config.preset_arguments, **folders}})
    deepspeed_config(config)  # a bad DeepSpeed file fails here, before any worker starts
    run_dir = config.run_dir.resolve()
    run_path = run_dir / config.name
    run_path.mkdir(parents=True, exist_ok=True)
    check_run_recipe(run_path, config)
    (run_path / "deepspeed.json").write_text(json.dumps(deepspeed_config(config), indent=1))
    resume = latest_checkpoint(run_path)
    if resume is not None and json.loads((resume / "progress.json").read_text())["epoch"] >= config.epochs - 1:
        log.info("run %s finished already: exporting its last checkpoint", config.name)
        return consolidate(resume, config), _last_metrics(run_path / "metrics.csv")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"config": json.loads(config.model_dump_json()), "cache": str(cache.resolve()),
                           "keys": sorted(keys) if keys is not None else None,
                           "run_path": str(run_path), "resume_from": str(resume) if resume else None},
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=config.use_gpu, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=config.name, storage_path=str(run_dir), checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {config.name} produced no checkpoint")
    with result.checkpoint.as_directory() as directory:
        return consolidate(Path(directory), config), dict(result.metrics or {})


def _last_metrics(path: Path) -> dict[str, Any]:
    """The last row of a run's metrics.csv, numbers as numbers."""
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}

    def value(text: str) -> Any:
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    return {name: value(text) for name, text in rows[-1].items()}


def validation_samples(rows: list[dict[str, Any]], config: TrainConfig, labels: list[str]) -> list:
    """The validation speakers' examples as they were recorded (augmented copies only train)."""
    from emostream.training.data import samples_from_rows  # noqa: PLC0415

    validation = set(config.data.validation_speakers)
    return samples_from_rows([r for r in rows if r["speaker"] in validation and r["variant"] == 0], labels, config.label_set)


def validation_figures(model, samples: list, labels: list[str]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """val_war, val_uar and val_f1 of a model on validation samples (none labelled: no figures)."""
    from emostream.training.evaluate import evaluate_samples  # noqa: PLC0415

    if not any(s.label >= 0 for s in samples):
        return {}
    report = evaluate_samples(model, samples, labels)
    return {"val_war": report.war, "val_uar": report.uar, "val_f1": report.weighted_f1}
