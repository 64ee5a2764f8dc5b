"""Utterance-level encoders: speech recognition, audio embedding and text embedding.

These run once per utterance, after the session closed it. The live job runs
them in Ray Serve (the "audio encoder (with ASR)" and "text encoder"
deployments); tests and the command line call them in-process.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from emostream.perception.utterance import UtteranceBundle
from emostream.perception.voice.asr import AUDIO_FEATURES, AudioFeatures, Recognised, Transcriber
from emostream.perception.voice.text import SentenceEmbedder
from emostream.perception.voice.whisper_base import feature_model_folder
from emostream.settings import Settings, VoiceSettings


def transcribe(bundles: list[UtteranceBundle], transcriber: Transcriber, voice: VoiceSettings) -> list[UtteranceBundle]:
    """Whisper over the utterances (batched): transcript (unless ASR is off), words per second and audio embedding."""
    if not bundles:
        return []
    started = time.perf_counter()
    results = transcriber.recognise([bundle.audio for bundle in bundles], transcribe=voice.asr)
    return with_recognition(bundles, results, voice, (time.perf_counter() - started) / len(bundles))


def with_recognition(bundles: list[UtteranceBundle], results: list[Recognised], voice: VoiceSettings,
                     seconds: float) -> list[UtteranceBundle]:
    """The bundles with their Whisper results: transcript, words per second, audio embedding, and the time taken."""
    return [
        replace(
            bundle,
            transcript=result.text if voice.asr else None,
            words_per_second=len(result.text.split()) / bundle.duration if voice.asr and bundle.duration > 0 else float("nan"),
            audio_embedding=result.audio_embedding,
            timings={**bundle.timings, "asr": seconds},
        )
        for bundle, result in zip(bundles, results, strict=True)
    ]


def embed_text(bundles: list[UtteranceBundle], sentences: SentenceEmbedder | None) -> list[UtteranceBundle]:
    """Sentence embeddings of the transcripts (None: text embeddings are off); bundles that have one keep it."""
    todo = [i for i, bundle in enumerate(bundles) if needs_text_encoding(bundle)]
    started = time.perf_counter()
    embeddings = dict(zip(todo, embed_transcripts([bundles[i].transcript for i in todo], sentences), strict=True))
    seconds = (time.perf_counter() - started) / max(len(todo), 1)
    return [
        replace(bundle, text_embedding=embeddings[i], timings={**bundle.timings, "text": seconds}) if i in embeddings else bundle
        for i, bundle in enumerate(bundles)
    ]


def embed_transcripts(transcripts: list[str | None], sentences: SentenceEmbedder | None) -> list[np.ndarray | None]:
    """A sentence embedding per transcript; None for an empty one, or for all when text embeddings are off."""
    spoken = [i for i, text in enumerate(transcripts) if text]
    vectors = sentences([transcripts[i] for i in spoken]) if sentences is not None and spoken else []
    embeddings = dict(zip(spoken, vectors, strict=False))
    return [embeddings.get(i) for i in range(len(transcripts))]


def needs_audio_encoding(bundle: UtteranceBundle) -> bool:
    """No Whisper result yet (a drafted utterance comes with one)."""
    return bundle.audio_embedding is None


def needs_text_encoding(bundle: UtteranceBundle) -> bool:
    """A transcript without its sentence embedding (a drafted utterance may come with both)."""
    return bool(bundle.transcript) and bundle.text_embedding is None


def model_config(model: str | Path | None) -> dict[str, Any]:
    """The saved config of the emotion model in folder `model` (its config.json). None: the embedded default's; a
    preset name: none ({}: fresh weights, every field at its default)."""
    from emostream.models.presets import DEFAULT_CHECKPOINT, PRESETS  # noqa: PLC0415

    if model is not None and str(model) in PRESETS:
        return {}
    path = Path(model if model is not None else DEFAULT_CHECKPOINT) / "config.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"no emotion model config at {path}: {error}") from error


def model_audio_features(model: str | Path | None) -> AudioFeatures:
    """The Whisper features a scoring model reads (None: the embedded default; a preset name: fresh weights of the
    default width, last_layer). A checkpoint records them in its config (`audio_features`, set by training); one
    saved before that reads 768 values, the last layer."""
    return recorded_audio_features(model_config(model), model)


def recorded_audio_features(config: dict[str, Any], model: str | Path | None) -> AudioFeatures:
    """model_audio_features from the model's config as read (`model` names it in the error)."""
    kind = config.get("audio_features") or ("last_layer" if config.get("audio_embedding", 768) == 768 else None)
    if kind not in AUDIO_FEATURES:
        raise ValueError(f"the emotion model at {model if model is not None else 'the embedded default'} does not say "
                         f"which Whisper features it reads (audio_features {kind!r}, audio_embedding "
                         f"{config.get('audio_embedding')}): set voice.audio_features to the kind it was trained on")
    return kind


def voice_for_model(voice: VoiceSettings, model: str | Path | None) -> VoiceSettings:
    """The voice settings with the Whisper features the scoring model was trained on: unset, they follow the model (the
    kind, and the Whisper model they come from when its config records one: `audio_feature_model`); set to others,
    the model would read features it was not trained on, which is an error naming the fix."""
    config = model_config(model)
    kind = recorded_audio_features(config, model)
    if voice.audio_features is None:
        voice = voice.model_copy(update={"audio_features": kind})
    if voice.audio_features != kind:
        raise ValueError(f"voice.audio_features is {voice.audio_features}, but the emotion model "
                         f"{model or 'emostream-lite (the default)'} was trained on {kind} features: leave "
                         f"voice.audio_features unset (it follows the model), or set it to {kind}, or use a model "
                         f"trained on {voice.audio_features}")
    recorded = config.get("audio_feature_model")
    if recorded is None:  # the features of the transcripts' Whisper model, or of voice.feature_model_dir as set
        return voice
    return with_feature_model(voice, recorded, f"the emotion model {model} was trained on")


def with_feature_model(voice: VoiceSettings, feature_model: str, user: str) -> VoiceSettings:
    """The voice settings reading the features of Whisper `feature_model` (a recorded name or folder:
    `feature_model_folder`), which `user` ("the emotion model X was trained on", "recipe X trains on") needs:
    voice.feature_model_dir set to its folder when unset; set to another folder, an error naming both."""
    folder = feature_model_folder(feature_model)
    if voice.feature_model_dir is None:
        return voice.model_copy(update={"feature_model_dir": folder})
    if Path(voice.feature_model_dir).resolve() != folder.resolve():
        raise ValueError(f"voice.feature_model_dir is {voice.feature_model_dir}, but {user} the features of "
                         f"{feature_model} ({folder}): leave voice.feature_model_dir unset (it follows the model)")
    return voice


def model_reads_words(model: str | Path | None) -> bool:
    """Whether a scoring model reads the transcript's sentence embedding: only one trained on words that carry emotion
    (`EmotionConfig.words_carry_emotion`); the scorer masks them out of any other (models/score.py `as_scored`).
    None: the embedded default; a preset name: fresh weights, whose configs leave the field at False."""
    return bool(model_config(model).get("words_carry_emotion", False))


def scoring_voice(settings: Settings) -> VoiceSettings:
    """The voice settings that serve the settings' models: the Whisper features the scoring model reads
    (`voice_for_model`), and sentence embeddings of the transcripts only if a model reads them: the scorer when it
    reads words (`model_reads_words`), or a describer (`serve.describer`: it reads every input it is given,
    models/llm.py `describe`). Transcripts stay either way. Training extracts features with `voice_for_model`
    instead: the model it trains may read words whatever the served one does."""
    voice = voice_for_model(settings.voice, settings.serve.model)
    if not voice.text_embeddings or settings.serve.describer is not None or model_reads_words(settings.serve.model):
        return voice
    return voice.model_copy(update={"text_embeddings": False})


def speech_recogniser(voice: VoiceSettings) -> Transcriber:
    """Whisper as the settings ask for it (model, threads, beam, language, which audio features: resolved against
    the scoring model first, `voice_for_model`; the every-layer features' own model, if any)."""
    if voice.audio_features is None:
        raise ValueError("voice.audio_features is unset: resolve it against the scoring model first (voice_for_model)")
    return Transcriber(voice.asr_model_dir, threads=voice.asr_threads, beam_size=voice.asr_beam_size, language=voice.asr_language,
                       audio_features=voice.audio_features, feature_model_dir=voice.feature_model_dir)


def text_embedder(voice: VoiceSettings) -> SentenceEmbedder | None:
    """The sentence embedder the settings ask for (None when there are no transcripts to embed)."""
    return SentenceEmbedder() if embeds_text(voice) else None


def embeds_text(voice: VoiceSettings) -> bool:
    """Whether utterances get text embeddings: there are transcripts, and embeddings are asked for."""
    return voice.asr and voice.text_embeddings


class UtteranceEncoder:
    """Adds transcript, words per second, audio embedding and text embedding (if `embeds_text(voice)`) to bundles.
    One per thread. `sentences`: a loaded sentence embedder to use, when the settings ask for text embeddings."""

    def __init__(self, voice: VoiceSettings, transcriber: Transcriber | None = None, sentences: SentenceEmbedder | None = None) -> None:
        self.voice = voice
        self.transcriber = transcriber or speech_recogniser(voice)
        self.sentences = text_embedder(voice) if sentences is None or not embeds_text(voice) else sentences

    def __call__(self, bundles: list[UtteranceBundle]) -> list[UtteranceBundle]:
        return embed_text(transcribe(bundles, self.transcriber, self.voice), self.sentences)
