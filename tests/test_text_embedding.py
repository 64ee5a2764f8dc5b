"""Sentence embeddings of transcripts are made only for a served model that reads them; transcripts stay either way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from emostream.models.inputs import collate
from emostream.models.presets import build_preset, load_model
from emostream.perception.encode import UtteranceEncoder, model_reads_words, scoring_voice
from emostream.perception.voice.text import EMBEDDING_SIZE
from emostream.serve.app import Ingress, TextEncoder
from emostream.settings import load_settings
from tests.model_helpers import random_bundle
from tests.speech_helpers import read_mono

INGRESS = Ingress.func_or_class.__bases__[0]  # the user class: serve.ingress subclasses it to add its ASGI app


def saved_tiny(folder: Path, words: bool) -> Path:
    """A tiny random model (last-layer Whisper features), saved as training exports it, reading words or not."""
    model = build_preset("tiny")
    model.config.audio_features = "last_layer"
    model.config.words_carry_emotion = words
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("words", [False, True])
def test_text_embeddings_follow_whether_the_served_model_reads_words(words: bool, tmp_path: Path, models,  # type: ignore[no-untyped-def]
                                                                     librivox: list[Path]) -> None:
    folder = saved_tiny(tmp_path / "tiny", words)
    assert model_reads_words(folder) is words
    voice = scoring_voice(load_settings(serve={"model": str(folder)}))
    assert voice.text_embeddings is words and voice.audio_features == "last_layer"
    encoder = UtteranceEncoder(voice, models["transcriber"], models["sentences"])  # as the Spine builds it
    assert (encoder.sentences is not None) is words  # the given embedder serves only a model that reads words
    clip = read_mono(librivox[0])
    bundle = dataclasses.replace(random_bundle(text=False), audio=clip, audio_embedding=None, end=len(clip) / 16000)
    (encoded,) = encoder([bundle])
    assert encoded.transcript  # the words still reach the events
    model = load_model(folder)
    if words:
        assert encoded.text_embedding is not None and encoded.text_embedding.shape == (EMBEDDING_SIZE,)
        assert bool(collate([encoded], model.config).has_text[0])  # the model reads them
    else:
        assert encoded.text_embedding is None


def test_the_default_model_and_presets_skip_text_embeddings_a_describer_or_the_settings_decide(tmp_path: Path) -> None:
    assert not model_reads_words(None) and not model_reads_words("tiny")  # words masked by the scorer (as_scored)
    assert scoring_voice(load_settings()).text_embeddings is False
    assert scoring_voice(load_settings()).audio_features is not None  # resolved as voice_for_model does
    # a describer reads every input it is given (models/llm.describe): the embeddings are made for it
    assert scoring_voice(load_settings(serve={"describer": str(tmp_path)})).text_embeddings is True
    # switched off in the settings, a model that reads words gets none
    words = saved_tiny(tmp_path / "words", True)
    assert scoring_voice(load_settings(voice={"text_embeddings": False}, serve={"model": str(words)})).text_embeddings is False


@pytest.mark.parametrize("words", [False, True])
def test_serve_embeds_text_only_for_a_model_that_reads_words(words: bool, tmp_path: Path) -> None:
    blob = load_settings(serve={"model": str(saved_tiny(tmp_path / "tiny", words))}).model_dump_json()
    assert (TextEncoder.func_or_class(blob).sentences is not None) is words
    assert INGRESS(blob, None, None, None, None).embeds_text is words  # no call to the TextEncoder for nothing
