"""Training on several corpora at once: a clip is asked only for the classes its corpus has, speakers stay apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emostream.labels import LABEL_SETS, near_labels
from emostream.models.presets import tiny
from emostream.training.data import batch, samples_from_rows
from emostream.training.datasets import Example, corpus_classes
from emostream.training.features import bundle_row
from emostream.training.train import (
    DataConfig,
    TrainConfig,
    _check_audio_width,
    _loss,
    build_model,
    cached_rows,
    corpus_cross_entropy,
    load_train_config,
    loss_classes,
    read_dataset,
)
from tests.model_helpers import random_bundle

LABELS = LABEL_SETS["ravdess8"]


def test_where_every_class_is_present_it_is_torchs_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    logits, truth = torch.randn(16, 8, generator=generator), torch.randint(0, 8, (16,), generator=generator)
    weights = torch.rand(8, generator=generator) + 0.5
    every = torch.ones(16, 8, dtype=torch.bool)
    expected = F.cross_entropy(logits, truth, weight=weights, label_smoothing=0.05)
    assert torch.allclose(corpus_cross_entropy(logits, truth, every, weights), expected, atol=1e-6)
    assert torch.allclose(corpus_cross_entropy(logits, truth, every, None, 0.0), F.cross_entropy(logits, truth), atol=1e-6)


def test_a_class_the_corpus_lacks_is_left_out_of_its_softmax() -> None:
    logits = torch.tensor([[1.0, 5.0, 0.5, 0.0, 0.0, 0.0, 0.0, -1.0]], requires_grad=True)
    tess = torch.tensor([corpus_classes("tess", "ravdess8")])  # no calm (index 1)
    loss = corpus_cross_entropy(logits, torch.tensor([0]), tess, None, 0.0)
    loss.backward()
    assert logits.grad[0, 1] == 0  # a large calm logit is not pushed down by a corpus that has no calm
    kept = [i for i in range(8) if i != 1]
    assert torch.allclose(loss, F.cross_entropy(logits[:, kept], torch.tensor([0])))


def test_near_only_leaves_an_absent_class_out_only_where_the_label_could_have_been_it() -> None:
    near = near_labels("ravdess8")
    assert [LABELS[j] for j in np.flatnonzero(near[LABELS.index("calm")])] == ["neutral", "happy"]  # labels.NEAREST's
    assert [LABELS[j] for j in np.flatnonzero(near[LABELS.index("surprised")])] == ["happy", "fearful"]
    truth = torch.tensor([LABELS.index(label) for label in ("neutral", "angry", "happy", "fearful", "sad")])
    present = torch.tensor([corpus_classes(dataset, "ravdess8") for dataset in ("tess", "tess", "emodb", "emodb", "ravdess")])
    recipe = {"preset": "tiny", "data": {"path": "/data"}, "stages": [{"name": "all", "epochs": 1}]}
    left_out = TrainConfig.model_validate(recipe)
    assert torch.equal(loss_classes(present, truth, left_out), present)  # the default: absent from every clip's loss
    classes = loss_classes(present, truth, TrainConfig.model_validate({**recipe, "absent_classes": "near_only"}))
    calm, surprised = LABELS.index("calm"), LABELS.index("surprised")
    assert classes[:, calm].tolist() == [False, True, False, True, True]  # a neutral TESS clip may have been calm; an angry one was not
    assert classes[:, surprised].tolist() == [True, True, False, False, True]  # EmoDB's happy and fearful clips may have been surprised
    assert torch.equal(classes & present, present)  # a class the corpus has is never left out


def test_corpus_classes_follow_the_label_mapping() -> None:
    assert corpus_classes("ravdess", "ravdess8") == (True,) * 8
    assert [label for label, has in zip(LABELS, corpus_classes("tess", "ravdess8"), strict=True) if not has] == ["calm"]
    assert [label for label, has in zip(LABELS, corpus_classes("emodb", "ravdess8"), strict=True) if not has] == ["calm", "surprised"]
    assert corpus_classes("manifest", "ravdess8") is None


def test_emodb_boredom_trains_valence_and_arousal_only() -> None:
    rows = []
    for k, (dataset, label) in enumerate([("emodb", None), ("emodb", "sad"), ("tess", "happy"), ("ravdess", "calm")]):
        name = "03-01-02-01-01-01-01.wav" if dataset == "ravdess" else "x.wav"  # RAVDESS rows carry RAVDESS names
        example = Example(media=Path("/data", name).absolute(), start=None, end=None, speaker=f"{dataset}-1", label=label,
                          valence=-0.4 if label is None else None, arousal=-0.6 if label is None else None, transcript=None,
                          explanation=None, open_vocabulary=(), dataset=dataset, key=f"clip-{k}")
        rows.append(bundle_row(random_bundle(seed=k, face=False, frames=False, text=False), example, 0))
    samples = samples_from_rows(rows, LABELS, "ravdess8")
    model = tiny().eval()
    inputs, targets = batch(samples, model.config)
    assert targets["label"].tolist() == [-1, LABELS.index("sad"), LABELS.index("happy"), LABELS.index("calm")]
    assert targets["classes"][:, LABELS.index("calm")].tolist() == [False, False, False, True]
    assert torch.isfinite(targets["valence"][0]) and torch.isfinite(targets["arousal"][0])
    config = TrainConfig.model_validate({"preset": "tiny", "data": {"path": "/data"}, "stages": [{"name": "all", "epochs": 1}]})
    output = model(inputs)
    loss = _loss(model, output, targets, None, config, samples, None)
    only_boredom = _loss(model, output.select([0]), {k: v[:1] for k, v in targets.items()}, None, config, samples[:1], None)
    assert torch.isfinite(loss) and only_boredom > 0  # the unlabelled clip still teaches valence and arousal


def test_three_corpora_in_one_config_keep_their_speakers_apart(shared_data: Path) -> None:
    data = DataConfig.model_validate({
        "dataset": "ravdess", "path": shared_data / "ravdess-speech-16k",
        "more_corpora": [{"dataset": "tess", "path": shared_data / "tess-16k"}, {"dataset": "emodb", "path": shared_data / "emodb-16k"}],
    })
    examples = read_dataset(data, "ravdess8")
    by_corpus = {name: {e.speaker for e in examples if e.dataset == name} for name in ("ravdess", "tess", "emodb")}
    assert [len(by_corpus[name]) for name in by_corpus] == [18, 2, 10]
    assert len(examples) == 1080 + 1400 + 535 and len({e.key for e in examples}) == len(examples)
    assert sum(len(speakers) for speakers in by_corpus.values()) == len({e.speaker for e in examples})  # no id shared
    assert np.sum([e.label is None for e in examples]) == 81  # EmoDB's boredom: no ravdess8 class


def test_a_cache_of_another_embedding_width_is_refused_before_training() -> None:
    example = Example(media=Path("/data/x.wav").absolute(), start=None, end=None, speaker="ravdess-01", label="sad",
                      valence=None, arousal=None, transcript=None, explanation=None, open_vocabulary=(), dataset="ravdess", key="a")
    rows = [bundle_row(random_bundle(face=False, frames=False, text=False), example, 0)]  # 768 values: last layer
    config = TrainConfig.model_validate({"preset": "lite", "preset_arguments": {"audio_embedding": 3840}, "data": {"path": "/data"},
                                         "stages": [{"name": "all", "epochs": 1}]})
    with pytest.raises(ValueError, match="768 values, the lite model reads 3840: set preset_arguments.audio_embedding: 768"):
        _check_audio_width(rows, 3840, config)
    _check_audio_width(rows, 768, config)


def test_the_default_recipe_trains_on_three_corpora_with_the_every_layer_embedding() -> None:
    config = load_train_config(Path(__file__).parents[1] / "deployments" / "train-lite.yaml")  # the default's recipe
    assert build_model(config).config.audio_embedding == 3840
    assert [config.data.dataset, *(corpus.dataset for corpus in config.data.more_corpora)] == ["ravdess", "tess", "emodb"]


def test_a_run_reads_only_its_own_examples_from_a_shared_cache(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for k, dataset in enumerate(["ravdess", "ravdess", "emodb"]):
        name = "03-01-02-01-01-01-01.wav" if dataset == "ravdess" else "x.wav"  # RAVDESS rows carry RAVDESS names
        example = Example(media=Path("/data", name).absolute(), start=None, end=None, speaker=f"{dataset}-1", label="sad",
                          valence=None, arousal=None, transcript=None, explanation=None, open_vocabulary=(), dataset=dataset,
                          key=f"clip-{k}")
        rows.append(bundle_row(random_bundle(seed=k, face=False, frames=False, text=False), example, 0))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part-0.parquet")
    assert [row["key"] for row in cached_rows(tmp_path, {"clip-0", "clip-1"})] == ["clip-0", "clip-1"]
    assert len(cached_rows(tmp_path, None)) == 3
