"""Training with real Ray Train + DeepSpeed on CPU workers: loss goes down, stop and resume, export, LLM captions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from emostream.labels import LABEL_SETS
from emostream.models.llm import bundled_tokenizer, generate
from emostream.models.model import EmotionEnsemble
from emostream.models.presets import load_model, tiny
from emostream.models.score import EmotionScorer, StreamContexts
from emostream.training.data import SpeakerPools, batch, samples_from_rows
from emostream.training.datasets import Example
from emostream.training.features import bundle_row, read_features
from emostream.training.train import TrainConfig, _loss, fit, recipe_differences, run_recipe, start_from
from tests.model_helpers import random_bundle

pytestmark = pytest.mark.broker  # starts Ray: run in the loopback-only namespace like the broker tests

LABELS = LABEL_SETS["ravdess8"]


def synthetic_cache(folder: Path, speakers: int = 4, per_speaker: int = 16, captions: bool = False) -> Path:
    """Feature rows whose voice features carry the label (learnable), written like the extraction job does."""
    rng = np.random.default_rng(0)
    directions = rng.normal(0, 1, (len(LABELS), 768)).astype(np.float32)
    rows = []
    for s in range(speakers):
        for k in range(per_speaker):
            label = (s + k) % len(LABELS)
            bundle = random_bundle(f"spk{s}", start=float(k), seed=100 * s + k, face=False, frames=False, text=False)
            object.__setattr__(bundle, "audio_embedding", directions[label] + rng.normal(0, 0.5, 768).astype(np.float32))
            example = Example(media=Path("/data/x.wav").absolute(), start=None, end=None, speaker=f"spk{s}", label=LABELS[label],
                              valence=None, arousal=None, transcript=None,
                              explanation=f"the voice sounds {LABELS[label]}" if captions else None,
                              open_vocabulary=(LABELS[label],) if captions else (), dataset="synthetic", key=f"s{s}-{k}")
            rows.append(bundle_row(bundle, example, 0))
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")
    return folder


def config(tmp_path: Path, epochs: int, **changes: object) -> TrainConfig:
    return TrainConfig.model_validate({
        "preset": "tiny", "data": {"path": str(tmp_path), "validation_speakers": ["spk3"]}, "workers": 2, "batch_size": 8,
        "zero_stage": 2, "stages": [{"name": "all", "epochs": epochs, "learning_rate": 3e-3}], "run_dir": str(tmp_path / "runs"),
        "name": "test-run", "export": str(tmp_path / "export"), "unknown_speaker_fraction": 0.0, **changes,
    })


def fixed_batch_loss(model, cache: Path, cfg: TrainConfig) -> float:  # type: ignore[no-untyped-def]
    samples = samples_from_rows([r for r in read_features(cache) if r["speaker"] != "spk3"], model.config.labels, "ravdess8")[:32]
    model.eval()
    with torch.no_grad():
        inputs, targets = batch(samples, model.config)
        return float(_loss(model, model(inputs), targets, None, cfg, samples, None))


def test_two_workers_zero2_train_stop_resume_and_export(tmp_path: Path, ray_local) -> None:  # type: ignore[no-untyped-def]
    cache = synthetic_cache(tmp_path / "cache")
    recipe = {"expert_weight": 1.0, "early_speaker_fraction": 0.5}  # the lite default's
    first = config(tmp_path, epochs=2, **recipe)
    torch.manual_seed(first.seed)
    before = fixed_batch_loss(tiny(), cache, first)
    fit(first, cache)  # "stopped" after its second epoch's checkpoint
    resumed = config(tmp_path, epochs=4, **recipe)
    exported, metrics = fit(resumed, cache)
    epochs = [int(row["epoch"]) for row in csv.DictReader((tmp_path / "runs" / "test-run" / "metrics.csv").open())]
    assert epochs == [0, 1, 2, 3]  # the second run continued at epoch 2, it did not start over
    model = load_model(exported)
    assert model.audio_adapter.voice_std.mean() != 1.0  # training statistics travel with the checkpoint
    after = fixed_batch_loss(model, cache, resumed)
    assert after < before * 0.8, (before, after)
    events = EmotionScorer(model, "tiny", "test").score([random_bundle(seed=1)], StreamContexts())
    assert events[0].label in LABELS and metrics["epoch"] == 3


def test_a_runs_recipe_is_what_its_weights_depend_on(tmp_path: Path) -> None:
    recipe = run_recipe(config(tmp_path, epochs=2))
    assert recipe == run_recipe(config(tmp_path, epochs=5, export=str(tmp_path / "elsewhere"), feature_workers=4))  # longer: resumable
    assert "path" not in recipe["data"] and recipe["data"]["validation_speakers"] == ["spk3"]
    assert recipe != run_recipe(config(tmp_path, epochs=2, weight_decay=0.5))
    assert recipe != run_recipe(config(tmp_path, epochs=2, workers=1))  # another effective batch
    slower = run_recipe(config(tmp_path, epochs=2, weight_decay=0.5, stages=[{"name": "all", "epochs": 2, "learning_rate": 1e-3}]))
    assert recipe_differences(recipe, slower) == ["weight_decay", "stages[0].learning_rate"]
    recorded = {key: value for key, value in recipe.items() if key != "absent_classes"}  # a run recorded before a setting existed
    recorded["data"] = {key: value for key, value in recipe["data"].items() if key != "call_turns"}
    assert recipe_differences(recorded, recipe) == []
    assert recipe_differences(recipe, recorded) == ["data.call_turns", "absent_classes"]  # a setting the run had is gone
    # A DeepSpeed file counts by what it says, not by where it is.
    for name, learning_rate in (("a.json", 1e-3), ("b.json", 1e-3), ("c.json", 2e-3)):
        (tmp_path / name).write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": learning_rate}}}))
    adamw = run_recipe(config(tmp_path, epochs=2, deepspeed=str(tmp_path / "a.json")))
    assert adamw == run_recipe(config(tmp_path, epochs=2, deepspeed=str(tmp_path / "b.json")))
    assert recipe_differences(adamw, run_recipe(config(tmp_path, epochs=2, deepspeed=str(tmp_path / "c.json")))) == [
        "deepspeed.optimizer.params.lr"]
    assert "optimizer" not in recipe["deepspeed"] and recipe_differences(recipe, adamw) != []


def test_an_ensemble_trains_each_member_from_its_own_seed_and_exports_their_average(tmp_path: Path, ray_local) -> None:  # type: ignore[no-untyped-def]
    cache = synthetic_cache(tmp_path / "cache")
    cfg = config(tmp_path, epochs=2, workers=1, zero_stage=0, ensemble_size=2)
    exported, metrics = fit(cfg, cache)
    runs = [tmp_path / "runs" / f"test-run-member-{k}" / "metrics.csv" for k in range(2)]
    assert [len(list(csv.DictReader(run.open()))) for run in runs] == [2, 2]
    model = load_model(exported)
    assert isinstance(model, EmotionEnsemble) and len(model.members) == 2
    first, second = (member.emotion_head.weight for member in model.members)
    assert not torch.equal(first, second)  # different seeds: different models
    assert 0 <= metrics["val_war"] <= 1 and metrics["epoch"] == 1
    # Run again: the finished member runs are exported as they are, not trained further.
    fit(cfg, cache)
    assert [len(list(csv.DictReader(run.open()))) for run in runs] == [2, 2]
    torch.testing.assert_close(load_model(exported).members[1].emotion_head.weight, second, rtol=0, atol=0)
    # Another recipe under a finished run's name is refused, naming what differs, before anything trains.
    with pytest.raises(ValueError, match=r"another recipe \(absent_classes, weight_decay differ\)"):
        fit(config(tmp_path, epochs=2, workers=1, zero_stage=0, ensemble_size=2, weight_decay=0.5, absent_classes="near_only"), cache)
    assert [len(list(csv.DictReader(run.open()))) for run in runs] == [2, 2]
    with pytest.raises(ValueError, match="cannot be ensembled"):  # refused before any training
        config(tmp_path, epochs=2, preset="tiny-llm", ensemble_size=2)


@pytest.mark.slow  # four short Ray Train runs: two fold models, two members
def test_calibration_folds_cross_validate_fit_a_temperature_and_the_export_applies_it(tmp_path: Path, ray_local) -> None:  # type: ignore[no-untyped-def]
    cache = synthetic_cache(tmp_path / "cache")
    (cache / "recipe.json").write_text(json.dumps({"settings": {"voice": {"audio_features": "last_layer"}}}))
    cfg = config(tmp_path, epochs=2, workers=1, zero_stage=0, ensemble_size=2, calibration_folds=2,
                 data={"path": str(tmp_path), "validation_speakers": []})
    exported, metrics = fit(cfg, cache)
    cv = json.loads((exported / "cv.json").read_text())
    assert sorted(map(len, cv["folds"])) == [2, 2] and sorted(sum(cv["folds"], [])) == [f"spk{s}" for s in range(4)]
    assert [len(list(csv.DictReader((tmp_path / "runs" / f"test-run-fold-{k}" / "metrics.csv").open()))) for k in (1, 2)] == [2, 2]
    pooled = cv["pooled"]
    assert pooled["clips"] == 64 and set(cv["per_corpus"]) == {"synthetic"}
    assert 0 <= pooled["ece"] <= 1 and 0 <= pooled["ece_calibrated"] <= 1 and metrics["cv_war"] == pooled["war"]
    assert 0.2 <= cv["temperature"] <= 5

    model = load_model(exported).eval()
    assert model.config.audio_features == "last_layer"  # what the features were: serving follows it
    assert [m.config.calibration_temperature for m in [model, *model.members]] == [cv["temperature"]] * 3
    samples = samples_from_rows(read_features(cache)[:8], model.config.labels, "ravdess8")
    inputs, _ = batch(samples, model.config)
    with torch.no_grad():
        member = model.members[0](inputs)
    torch.testing.assert_close(member.probabilities, torch.softmax(member.logits / cv["temperature"], dim=1))
    with pytest.raises(ValueError, match="at least 2 speaker folds"):
        config(tmp_path, epochs=1, calibration_folds=1, data={"path": str(tmp_path)})
    with pytest.raises(ValueError, match="leave data.validation_speakers empty"):
        config(tmp_path, epochs=1, calibration_folds=2)


def test_a_run_starts_from_a_trained_classifier_and_its_frozen_blocks_stay_as_trained(tmp_path: Path, ray_local) -> None:  # type: ignore[no-untyped-def]
    cache = synthetic_cache(tmp_path / "cache", speakers=2, per_speaker=8, captions=True)
    data = {"path": str(tmp_path), "validation_speakers": []}
    classifier, _ = fit(config(tmp_path, epochs=2, workers=1, zero_stage=0, data=data), cache)
    blocks = ["cls", "visual_encoder", "qformer", "audio_adapter", "text_adapter", "modality", "fusion", "norm", "emotion_head",
              "voice_head", "valence_arousal_head"]
    describer = config(tmp_path, epochs=2, preset="tiny-llm", workers=1, zero_stage=0, data=data, name="describer",
                       export=str(tmp_path / "describer"), initial_model=str(classifier),
                       stages=[{"name": "read", "epochs": 2, "learning_rate": 3e-3, "lora": True, "freeze": blocks}])
    exported, _ = fit(describer, cache)
    trained, read = load_model(classifier).state_dict(), load_model(exported).state_dict()
    for name, value in trained.items():  # every block, head and voice statistic: the classifier's, untouched
        torch.testing.assert_close(read[name], value, rtol=0, atol=0, msg=name)
    torch.manual_seed(describer.seed)
    fresh = tiny(llm=True).state_dict()
    assert not torch.equal(read["llm_projection.weight"], fresh["llm_projection.weight"])  # what reads them learnt

    with pytest.raises(ValueError, match="not a model folder"):  # refused before any worker starts
        fit(describer.model_copy(update={"initial_model": tmp_path / "nowhere"}), cache)
    wide = tiny(llm=True, audio_embedding=3840)
    with pytest.raises(ValueError, match="do not fit this preset's blocks"):
        start_from(wide, classifier)


def test_llm_captions_train_with_lora_and_the_merged_export_generates(tmp_path: Path, ray_local) -> None:  # type: ignore[no-untyped-def]
    cache = synthetic_cache(tmp_path / "cache", speakers=2, per_speaker=8, captions=True)
    cfg = config(tmp_path, epochs=3, preset="tiny-llm", workers=1, zero_stage=0, data={"path": str(tmp_path), "validation_speakers": []},
                 stages=[{"name": "align", "epochs": 1, "learning_rate": 3e-3, "freeze": ["language_model"]},
                         {"name": "lora", "epochs": 2, "learning_rate": 3e-3, "lora": True}])
    exported, _ = fit(cfg, cache)
    losses = [float(row["loss"]) for row in csv.DictReader((tmp_path / "runs" / "test-run" / "metrics.csv").open())]
    assert losses[-1] < losses[0], losses
    model = load_model(exported).eval()
    assert model.language_model is not None and not hasattr(model.language_model, "peft_config")  # LoRA merged in
    bundle = random_bundle(seed=3, face=False, frames=False, text=False)
    from emostream.models.inputs import collate

    texts = generate(model, model(collate([bundle], model.config)), bundled_tokenizer(), [None], max_new_tokens=6)
    assert texts[0]


def test_early_speaker_statistics_leave_the_utterance_itself_out(tmp_path: Path) -> None:
    rows = [r for r in read_features(synthetic_cache(tmp_path / "cache", speakers=1, per_speaker=5)) if r["speaker"] == "spk0"]
    shared = np.asarray(rows[1]["audio_embedding"], np.float32)
    rng = np.random.default_rng(0)
    for k, row in enumerate(rows):  # four near-identical utterances and one a whole unit away from them
        row["audio_embedding"] = (shared + (1.0 if k == 0 else rng.normal(0, 0.01, shared.shape))).tolist()
    samples = samples_from_rows(rows, LABELS, "ravdess8")
    pools = SpeakerPools(samples, floor=np.full(1024, 1e-3))
    for seed in range(10):
        z = pools.early_z(samples[0], np.random.default_rng(seed))
        assert np.median(np.abs(z[:768])) > 20  # counted in its own statistics it would stay within 2 (5 values)
    inputs, _ = batch(samples, tiny().config, np.random.default_rng(0), 0.0, pools, early_fraction=1.0)
    full = np.stack([s.speaker_z for s in samples])
    assert not np.allclose(inputs.voice_z.numpy(), np.clip(full, -5, 5)) and bool(inputs.voice_z_known.all())
    hidden, _ = batch(samples, tiny().config, np.random.default_rng(0), 1.0, pools, early_fraction=1.0)
    assert not hidden.voice_z_known.any()
