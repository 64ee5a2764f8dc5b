"""Leave-one-corpus-out CV of the model recipe (train.corpus_folds, train.leave_one_corpus_out): whole corpora held out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from emostream.labels import LABEL_SETS
from emostream.training.data import samples_from_rows, voice_statistics
from emostream.training.datasets import Example
from emostream.training.features import bundle_row
from emostream.training.train import (
    CorpusFold,
    TrainConfig,
    consolidate,
    corpus_folds,
    latest_checkpoint,
    leave_one_corpus_out,
    load_train_config,
    read_dataset,
)
from tests.model_helpers import random_bundle

DEFAULT_RECIPE = Path(__file__).parents[1] / "deployments" / "train-lite.yaml"
LABELS = LABEL_SETS["ravdess8"]


def real_rows(shared_data: Path) -> tuple[TrainConfig, list[dict[str, Any]]]:
    """The default recipe with its corpora in `shared_data`, and one row (speaker, corpus) per real labelled clip."""
    config = load_train_config(DEFAULT_RECIPE)
    folders = {"ravdess": "ravdess-speech-16k", "tess": "tess-16k", "emodb": "emodb-16k"}
    data = config.data.model_copy(update={
        "path": shared_data / folders[config.data.dataset],
        "more_corpora": [c.model_copy(update={"path": shared_data / folders[c.dataset]}) for c in config.data.more_corpora]})
    config = config.model_copy(update={"data": data})
    return config, [{"speaker": e.speaker, "dataset": e.dataset} for e in read_dataset(data, config.label_set)]


def assert_whole_corpora_held_out(folds: dict[str, CorpusFold | None], rows: list[dict[str, Any]]) -> None:
    """Every speaker of a held-out corpus is held out, and no speaker of a corpus its model trains on."""
    speakers = {name: {r["speaker"] for r in rows if r["dataset"] == name} for name in {r["dataset"] for r in rows}}
    for corpus, fold in folds.items():
        if fold is None:
            continue
        assert corpus not in fold.trains_on
        assert speakers[corpus] <= fold.held_out, f"{corpus}: speakers left to train on"
        trained = set().union(*(speakers[name] for name in fold.trains_on))
        assert trained and not trained & fold.held_out, f"{corpus}: a training corpus's speakers are held out"
        assert trained | fold.held_out == set().union(*speakers.values())  # nobody is left out of both


def test_the_default_recipe_holds_out_each_corpus_whole_and_trains_on_the_two_others(shared_data: Path) -> None:
    config, rows = real_rows(shared_data)
    folds = corpus_folds(config, rows)
    assert_whole_corpora_held_out(folds, rows)
    assert {corpus: (fold.trains_on, len(fold.held_out)) for corpus, fold in folds.items() if fold} == {
        "ravdess": (("tess", "emodb"), 18), "tess": (("ravdess", "emodb"), 2), "emodb": (("ravdess", "tess"), 10)}


def test_a_ravdess_only_recipe_is_one_model_tested_on_both_other_corpora(shared_data: Path) -> None:
    config, rows = real_rows(shared_data)
    ravdess_only = config.model_copy(update={"data": config.data.model_copy(update={"more_corpora": []})})
    folds = corpus_folds(ravdess_only, rows)
    assert_whole_corpora_held_out(folds, rows)
    assert folds["ravdess"] is None  # nothing left to train on: "-" in the table
    assert folds["tess"] == folds["emodb"] and folds["tess"] is not None and folds["tess"].trains_on == ("ravdess",)
    assert len(folds["tess"].held_out) == 12  # TESS's 2 and EmoDB's 10 speakers


def test_the_check_fails_on_a_fold_that_trains_on_a_speaker_of_the_held_out_corpus(shared_data: Path) -> None:
    config, rows = real_rows(shared_data)
    fold = corpus_folds(config, rows)["tess"]
    assert fold is not None
    leaky = CorpusFold(fold.trains_on, fold.held_out - {"tess-OAF"})
    with pytest.raises(AssertionError, match="speakers left to train on"):
        assert_whole_corpora_held_out({"tess": leaky}, rows)


def test_a_corpus_the_config_trains_on_must_have_rows(shared_data: Path) -> None:
    config, rows = real_rows(shared_data)
    with pytest.raises(ValueError, match="no clip of tess, which the config trains on"):
        corpus_folds(config, [r for r in rows if r["dataset"] != "tess"])


def two_corpus_cache(folder: Path) -> Path:
    """Feature rows of two small corpora (ravdess: 2 speakers, tess: 1) whose voice features carry the label, each
    corpus shifted apart so a model's voice statistics tell which rows it trained on."""
    rng = np.random.default_rng(0)
    directions = rng.normal(0, 1, (len(LABELS), 768)).astype(np.float32)
    rows = []
    for dataset, speaker, shift in (("ravdess", "ravdess-01", 0.0), ("ravdess", "ravdess-02", 0.0), ("tess", "tess-OAF", 3.0)):
        for k in range(16):
            label = k % len(LABELS)
            bundle = random_bundle(speaker, start=float(k), seed=k, face=False, frames=False, text=False)
            object.__setattr__(bundle, "audio_embedding", directions[label] + shift + rng.normal(0, 0.5, 768).astype(np.float32))
            # RAVDESS rows need RAVDESS names
            name = f"03-01-{label + 1:02d}-01-01-01-{speaker[-2:]}.wav" if dataset == "ravdess" else "x.wav"
            example = Example(media=Path("/data", name).absolute(), start=None, end=None, speaker=speaker, label=LABELS[label],
                              valence=None, arousal=None, transcript=None, explanation=None, open_vocabulary=(),
                              dataset=dataset, key=f"{speaker}-{k}")
            rows.append(bundle_row(bundle, example, 0))
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")
    (folder / "recipe.json").write_text(json.dumps({"settings": {"voice": {"audio_features": "last_layer"}}}))
    return folder


@pytest.mark.broker  # starts Ray: run in the loopback-only namespace like the broker tests
@pytest.mark.slow  # two short Ray Train runs
def test_each_held_out_corpus_is_scored_by_a_model_trained_on_the_other_only(tmp_path: Path, ray_local) -> None:  # type: ignore[no-untyped-def]
    cache = two_corpus_cache(tmp_path / "cache")
    config = TrainConfig.model_validate({
        "preset": "tiny", "data": {"path": str(tmp_path), "more_corpora": [{"dataset": "tess", "path": str(tmp_path)}]},
        "workers": 1, "batch_size": 8, "zero_stage": 0, "stages": [{"name": "all", "epochs": 1, "learning_rate": 3e-3}],
        "run_dir": str(tmp_path / "runs"), "name": "loco", "export": str(tmp_path / "export"), "unknown_speaker_fraction": 0.0})
    figures = leave_one_corpus_out(config, cache, None)
    assert {name: f["clips"] for name, f in figures.items() if f} == {"ravdess": 32, "tess": 16}
    assert all(0 <= f["war"] <= 1 and 0 <= f["ece"] <= 1 and "ece_calibrated" not in f for f in figures.values() if f)
    rows = pq.read_table(cache / "part-0.parquet").to_pylist()
    for held_out, trained_on in (("ravdess", "tess"), ("tess", "ravdess")):
        run = config.model_copy(update={"name": f"loco-on-{trained_on}"})
        model = consolidate(latest_checkpoint(tmp_path / "runs" / run.name), run)
        # the voice statistics the run computed are those of the other corpus's rows alone
        mean, _ = voice_statistics(samples_from_rows([r for r in rows if r["dataset"] == trained_on], model.config.labels, "ravdess8"))
        torch.testing.assert_close(model.audio_adapter.voice_mean, mean)
        assert held_out not in trained_on
