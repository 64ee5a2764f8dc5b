"""The mllm preset fine-tuned with LoRA on a few real RAVDESS clips: features through the product's extraction job,
Ray Train + DeepSpeed ZeRO-2 on CPU, the loss goes down, the export reloads (adapters merged into SmolLM2) and
writes an answer that parses."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from emostream.models.instructions import parse_answer
from emostream.models.llm import generate, tokenizer_for
from emostream.models.presets import load_model
from emostream.settings import load_settings
from emostream.training.data import batch, samples_from_rows
from emostream.training.datasets import read_ravdess
from emostream.training.features import extract_features, read_features
from emostream.training.train import TrainConfig, fit
from tests.test_smollm import installed_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.broker]  # minutes; starts Ray: run in the loopback-only namespace

# Two actors, six emotions each, strong where RAVDESS has it: different words and different measured cues.
CLIPS = ("03-01-01-01-01-01", "03-01-02-02-01-01", "03-01-03-02-01-01", "03-01-04-02-01-01", "03-01-05-02-01-01",
         "03-01-06-02-01-01")
ACTORS = (1, 2)


def test_lora_fine_tune_on_real_clips_lowers_the_loss_and_the_export_answers_in_shape(
        tmp_path: Path, shared_data: Path, ray_local) -> None:  # type: ignore[no-untyped-def]
    installed_checkpoint()
    wanted = {f"{clip}-{actor:02d}" for clip in CLIPS for actor in ACTORS}
    examples = [e for e in read_ravdess(shared_data / "ravdess-speech-16k") if e.key in wanted]
    assert len(examples) == len(wanted)
    cache = extract_features(examples, load_settings(), tmp_path / "features", workers=1)
    config = TrainConfig.model_validate({
        "preset": "mllm", "data": {"path": str(shared_data / "ravdess-speech-16k")}, "workers": 1, "batch_size": 4,
        "zero_stage": 2, "run_dir": str(tmp_path / "runs"), "name": "mllm", "export": str(tmp_path / "export"),
        "unknown_speaker_fraction": 0.0, "warmup_fraction": 0.0,
        "stages": [{"name": "align", "epochs": 1, "learning_rate": 3e-3, "freeze": ["language_model"]},
                   {"name": "lora", "epochs": 4, "learning_rate": 3e-3, "lora": True}],
    })
    exported, _ = fit(config, cache)
    losses = [float(row["loss"]) for row in csv.DictReader((tmp_path / "runs" / "mllm" / "metrics.csv").open())]
    assert len(losses) == 5 and losses[-1] < 0.7 * losses[0], losses

    model = load_model(exported).eval()
    assert model.config.llm_path == "smollm2-135m-instruct" and not hasattr(model.language_model, "peft_config")
    assert (exported / "model.safetensors").stat().st_size < 50e6  # the adapters, not SmolLM2's 540 MB
    samples = samples_from_rows(read_features(cache), model.config.labels, model.config.label_set)[:2]
    inputs, _ = batch(samples, model.config)
    with torch.no_grad():
        output = model(inputs)
    texts = generate(model, output, tokenizer_for(model), [s.bundle.transcript for s in samples], max_new_tokens=48)
    answers = [parse_answer(text) for text in texts]
    assert all(answers), texts
    assert all(a is not None and a.emotion in model.config.labels for a in answers), texts
