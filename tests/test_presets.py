"""The preset registry (emostream.models.presets.PRESETS): the one list training configs, serving and the CLI use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pydantic import ValidationError

from emostream.labels import LABEL_SETS
from emostream.models.inputs import collate
from emostream.models.presets import PRESETS, build_preset, check_preset, load_model, preset_names
from emostream.models.score import load_scorer
from emostream.training.train import TrainConfig, build_model, load_train_config
from tests.model_helpers import random_bundle
from tests.test_large_preset import tiny_checkpoints
from tests.test_smollm import installed_checkpoint


def arguments_for(name: str, folder: Path) -> dict[str, Any]:
    """What a config passes each preset: large gets tiny local checkpoints and a small hidden size, the others nothing
    (mllm needs SmolLM2 converted at install time)."""
    if name == "mllm":
        installed_checkpoint()
    if name != "large":
        return {}
    tiny_checkpoints(folder)
    return {"vision_path": str(folder / "vision"), "audio_path": str(folder / "audio"), "llm_path": str(folder / "llm"),
            "hidden_size": 32}


def test_the_registry_lists_every_preset_with_its_arguments() -> None:
    assert preset_names() == ["tiny", "tiny-llm", "lite", "mllm", "large"]
    assert PRESETS["large"].arguments == ("vision_path", "audio_path", "llm_path", "hidden_size")
    assert PRESETS["lite"].arguments == PRESETS["mllm"].arguments == ("audio_embedding",)  # mllm reads lite's features
    assert all(PRESETS[name].arguments == () for name in ("tiny", "tiny-llm"))


@pytest.mark.parametrize("name", preset_names())
def test_every_registered_preset_builds_and_scores(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_preset(name, "mer2023_6", arguments_for(name, tmp_path)).eval()
    assert model.config.label_set == "mer2023_6" and tuple(model.config.labels) == LABEL_SETS["mer2023_6"]
    assert (model.language_model is not None) == (name in ("tiny-llm", "mllm", "large"))
    bundles = [random_bundle(seed=1, seconds=1.0), random_bundle(seed=2, seconds=0.6, face=False)]
    with torch.no_grad():
        output = model(collate(bundles, model.config, raw_audio=name == "large"))
    assert output.probabilities.shape == (2, 6)
    torch.testing.assert_close(output.probabilities.sum(dim=1), torch.ones(2))


def test_each_preset_keeps_its_own_numbers() -> None:
    sizes = {name: build_preset(name).config.hidden_size for name in ("tiny", "lite")}
    assert sizes == {"tiny": 32, "lite": 96}
    assert build_preset("large").config.label_set == "merr9"  # its default label set, without arguments


@pytest.mark.parametrize("name", preset_names())
def test_a_training_config_can_name_each_preset(name: str, tmp_path: Path) -> None:
    arguments = arguments_for(name, tmp_path)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"preset": name, "preset_arguments": arguments, "label_set": "ravdess8",
                                    "data": {"path": str(tmp_path)}, "stages": [{"name": "all", "epochs": 1}]}))
    config = load_train_config(path)
    model = build_model(config)
    assert config.preset == name and model.config.label_set == "ravdess8" and len(model.config.labels) == 8
    if name == "large":
        assert model.config.hidden_size == 32 and model.language_model is not None


@pytest.mark.parametrize("name", preset_names())
def test_serving_can_name_each_preset(name: str) -> None:
    # serve.model and --model are a folder or a preset name; a preset is built with its default arguments
    if name == "mllm":
        installed_checkpoint()  # skipped without SmolLM2
    scorer = load_scorer(name)
    expected = "merr9" if name == "large" else "ravdess8"  # each preset's own default label set
    assert scorer.model.config.label_set == expected and scorer.info.name == f"emostream-{expected}"


def test_unknown_preset_or_argument_names_the_known_ones(tmp_path: Path) -> None:
    known = "known presets: tiny, tiny-llm, lite, mllm, large"
    with pytest.raises(ValueError, match=f"unknown preset 'huge'; {known}"):
        build_preset("huge")
    with pytest.raises(ValidationError, match=f"unknown preset 'huge'; {known}"):
        TrainConfig.model_validate({"preset": "huge", "data": {"path": str(tmp_path)}, "stages": [{"name": "all", "epochs": 1}]})
    with pytest.raises(FileNotFoundError, match=r"expected a preset \(tiny, tiny-llm, lite, mllm, large\) or a folder"):
        load_model(tmp_path / "huge")
    with pytest.raises(ValueError, match=r"preset 'tiny' has no argument\(s\) hidden_size; it takes none besides the label set"):
        check_preset("tiny", {"hidden_size": 8})
    with pytest.raises(ValueError, match=r"preset 'lite' has no argument\(s\) hidden_size; it takes audio_embedding"):
        check_preset("lite", {"hidden_size": 8})
    with pytest.raises(ValidationError, match=r"preset 'large' has no argument\(s\) vision; it takes vision_path, audio_path"):
        TrainConfig.model_validate({"preset": "large", "preset_arguments": {"vision": "x"}, "data": {"path": str(tmp_path)},
                                    "stages": [{"name": "all", "epochs": 1}]})
    with pytest.raises(ValidationError, match="a preset with a language model cannot be ensembled"):
        TrainConfig.model_validate({"preset": "large", "preset_arguments": {"llm_path": "x"}, "ensemble_size": 2,
                                    "data": {"path": str(tmp_path)}, "stages": [{"name": "all", "epochs": 1}]})


def test_listing_presets_loads_neither_torch_nor_transformers() -> None:
    # the CLI builds --help and choices from preset_names(): it must not pay for the models
    code = "import sys; from emostream.models.presets import preset_names; preset_names(); " \
           "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
