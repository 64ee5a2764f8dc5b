"""The emotion model reads the Whisper embedding width its config names (768 last layer, 3,840 every layer)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.models.inputs import collate
from emostream.models.presets import build_preset, load_model
from emostream.models.score import EmotionScorer, StreamContexts
from tests.model_helpers import random_bundle

EVERY_LAYER = 3840  # tiny.en: 5 hidden states x 384 values, mean and std pooled


def every_layer_bundle(seed: int):  # type: ignore[no-untyped-def]
    bundle = random_bundle(seed=seed)
    return replace(bundle, audio_embedding=np.random.default_rng(seed).normal(0, 1, EVERY_LAYER).astype(np.float32))


def test_a_wider_audio_embedding_trains_saves_and_loads(tmp_path: Path) -> None:
    model = build_preset("lite", arguments={"audio_embedding": EVERY_LAYER}).eval()
    assert model.audio_adapter.voice_mean.shape == (EVERY_LAYER + 256,)
    inputs = collate([every_layer_bundle(0), every_layer_bundle(1)], model.config)
    assert inputs.voice.shape == (2, EVERY_LAYER + 256)
    with torch.no_grad():
        before = model(inputs).probabilities
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    assert loaded.config.audio_embedding == EVERY_LAYER
    with torch.no_grad():
        assert torch.allclose(loaded(inputs).probabilities, before)


def test_an_embedding_of_the_wrong_width_names_the_setting_to_change_in_collate_and_the_scorer() -> None:
    model = build_preset("lite", arguments={"audio_embedding": EVERY_LAYER})
    with pytest.raises(ValueError, match=r"768 values, the model reads 3840.*voice\.audio_features"):
        collate([random_bundle()], model.config)
    with pytest.raises(ValueError, match=r"768 values, the model reads 3840.*voice\.audio_features"):
        EmotionScorer(model, "lite-every-layer", "test").score([random_bundle()], StreamContexts())
