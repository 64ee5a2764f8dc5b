"""The emotion model reads the Whisper embedding width its config names (768 last layer, 3,840 every layer)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.models.inputs import collate
from emostream.models.presets import build_preset, load_model
from emostream.models.score import EmotionScorer, StreamContexts
from emostream.perception.encode import model_audio_features, speech_recogniser, voice_for_model
from emostream.perception.voice.whisper_base import whisper_base_dir
from emostream.settings import load_settings
from emostream.spine import Spine
from emostream.training.train import TrainConfig, recipe_settings, record_export
from tests.model_helpers import random_bundle

EVERY_LAYER = 3840  # tiny.en: 5 hidden states x 384 values, mean and std pooled
BASE_EVERY_LAYER = 7168  # Whisper base: 7 hidden states x 512


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


def saved_model(folder: Path, width: int, audio_features: str | None) -> Path:
    """A lite model reading `width` Whisper values, saved as training exports it (recording `audio_features`)."""
    model = build_preset("lite", arguments={"audio_embedding": width})
    model.config.audio_features = audio_features
    model.save_pretrained(folder)
    return folder


def test_unset_audio_features_follow_the_checkpoint_and_a_mismatch_names_the_fix(tmp_path: Path) -> None:
    every = saved_model(tmp_path / "every", EVERY_LAYER, "every_layer")
    unset = load_settings().voice
    assert unset.audio_features is None
    assert voice_for_model(unset, every).audio_features == "every_layer"
    assert voice_for_model(load_settings(voice={"audio_features": "every_layer"}).voice, every).audio_features == "every_layer"
    with pytest.raises(ValueError, match=r"voice\.audio_features is last_layer.*trained on every_layer.*leave voice\.audio_features unset"):
        voice_for_model(load_settings(voice={"audio_features": "last_layer"}).voice, every)
    # a checkpoint saved before the config recorded the kind reads 768 values: the last layer
    assert model_audio_features(saved_model(tmp_path / "old", 768, None)) == "last_layer"
    assert model_audio_features("tiny") == "last_layer"  # a preset: fresh weights of the default width
    with pytest.raises(ValueError, match=r"does not say which Whisper features.*set voice\.audio_features"):
        model_audio_features(saved_model(tmp_path / "unknown", EVERY_LAYER, None))
    with pytest.raises(FileNotFoundError, match="no emotion model config"):
        model_audio_features(tmp_path / "absent")
    with pytest.raises(ValueError, match=r"voice\.audio_features is unset.*voice_for_model"):
        speech_recogniser(unset)


def test_a_spine_serving_an_every_layer_model_encodes_every_layer_without_being_told(tmp_path: Path, shared_data: Path) -> None:
    every = saved_model(tmp_path / "every", EVERY_LAYER, "every_layer")
    settings = load_settings(serve={"model": str(every)})
    spine = Spine(settings)
    assert spine.encode.voice.audio_features == "every_layer"  # type: ignore[attr-defined]
    clip = shared_data / "ravdess-speech-16k" / "Actor_01" / "03-01-05-02-01-01-01.flac"
    events = list(spine.file_events(clip))
    assert events and all(set(e.probabilities) == set(load_model(every).config.labels) for e in events)
    with pytest.raises(ValueError, match=r"trained on every_layer"):
        Spine(load_settings(voice={"audio_features": "last_layer"}, serve={"model": str(every)}))


def test_a_model_trained_on_another_whisper_models_features_is_served_with_them(tmp_path: Path) -> None:
    """Training records the features' Whisper model (Whisper base by name: each machine installs it in its own place);
    serving follows it when voice.feature_model_dir is unset, and a different one set is an error naming the fix."""
    cache = tmp_path / "cache"
    cache.mkdir()
    voice = {"audio_features": "every_layer", "feature_model_dir": str(whisper_base_dir())}
    (cache / "recipe.json").write_text(json.dumps({"settings": {"voice": voice}}))
    model = build_preset("lite", arguments={"audio_embedding": BASE_EVERY_LAYER})
    record_export(model, cache, None)
    assert (model.config.audio_features, model.config.audio_feature_model) == ("every_layer", "whisper-base")
    model.save_pretrained(tmp_path / "base")
    served = voice_for_model(load_settings().voice, tmp_path / "base")
    assert (served.audio_features, served.feature_model_dir) == ("every_layer", whisper_base_dir())
    with pytest.raises(ValueError, match=r"voice\.feature_model_dir is .*trained on the features of whisper-base.*unset"):
        voice_for_model(load_settings(voice={"feature_model_dir": tmp_path}).voice, tmp_path / "base")
    # a model of the transcripts' own features records none, and leaves the setting as it is
    (cache / "recipe.json").write_text(json.dumps({"settings": {"voice": {"audio_features": "every_layer", "feature_model_dir": None}}}))
    plain = build_preset("lite", arguments={"audio_embedding": EVERY_LAYER})
    record_export(plain, cache, None)
    assert getattr(plain.config, "audio_feature_model", None) is None
    assert voice_for_model(load_settings().voice, saved_model(tmp_path / "every", EVERY_LAYER, "every_layer")).feature_model_dir is None


def test_a_recipe_names_the_whisper_model_of_its_features(tmp_path: Path) -> None:
    """`audio_feature_model` in a training config makes its extraction read every layer of that Whisper model, whatever
    the served model reads; settings asking for other features, or a model not installed, are errors naming them."""
    recipe = {"preset": "lite", "preset_arguments": {"audio_embedding": BASE_EVERY_LAYER}, "data": {"path": "/data"},
              "stages": [{"name": "all", "epochs": 1}], "name": "base-voice"}
    config = TrainConfig.model_validate({**recipe, "audio_feature_model": "whisper-base"})
    voice = recipe_settings(config, load_settings()).voice
    assert (voice.audio_features, voice.feature_model_dir) == ("every_layer", whisper_base_dir())
    assert recipe_settings(config, load_settings(voice={"feature_model_dir": str(whisper_base_dir())})).voice == voice
    with pytest.raises(ValueError, match=r"voice\.feature_model_dir is .*recipe base-voice trains on the features of whisper-base.*unset"):
        recipe_settings(config, load_settings(voice={"feature_model_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match=r"every layer of whisper-base.*last_layer"):
        recipe_settings(config, load_settings(voice={"audio_features": "last_layer"}))
    missing = TrainConfig.model_validate({**recipe, "audio_feature_model": str(tmp_path / "absent")})
    with pytest.raises(FileNotFoundError, match=r"absent: no model\.bin for recipe base-voice's audio_feature_model.*whisper_base"):
        recipe_settings(missing, load_settings())
    unnamed = TrainConfig.model_validate(recipe)  # no feature model named: the settings' own features
    assert recipe_settings(unnamed, load_settings()) == load_settings()
