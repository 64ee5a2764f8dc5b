"""The large preset loads its vision encoder, audio encoder and LLM from local Hugging Face folders (tiny random ones here)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel, Wav2Vec2Config, Wav2Vec2Model

from emostream.models.inputs import collate
from emostream.models.llm import bundled_tokenizer, generate
from emostream.models.presets import large, load_model
from tests.model_helpers import random_bundle


def tiny_checkpoints(folder: Path) -> tuple[ViTModel, Wav2Vec2Model, GPT2LMHeadModel]:
    """Tiny random vision, audio and language models saved as Hugging Face folders <folder>/vision, audio, llm."""
    torch.manual_seed(0)
    vision = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
                                patch_size=8))
    audio = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=2))
    llm = GPT2LMHeadModel(GPT2Config(vocab_size=50363, n_embd=32, n_layer=1, n_head=2, n_positions=512))
    for name, part in (("vision", vision), ("audio", audio), ("llm", llm)):
        part.save_pretrained(folder / name)
    return vision, audio, llm


def test_large_preset_from_local_checkpoints(tmp_path: Path) -> None:
    vision, _, llm = tiny_checkpoints(tmp_path)
    model = large(tmp_path / "vision", tmp_path / "audio", tmp_path / "llm", label_set="merr9", hidden_size=32).eval()
    # the pretrained weights really came from the folders
    torch.testing.assert_close(model.visual_encoder.frame_encoder.model.embeddings.patch_embeddings.projection.weight,
                               vision.embeddings.patch_embeddings.projection.weight)
    torch.testing.assert_close(model.language_model.transformer.wte.weight, llm.transformer.wte.weight)
    assert model.config.frame_size == 32 and len(model.config.labels) == 9
    bundles = [random_bundle(seed=1, seconds=1.0), random_bundle(seed=2, seconds=0.6, face=False)]
    inputs = collate(bundles, model.config, raw_audio=True)
    output = model(inputs)
    assert output.probabilities.shape == (2, 9) and model.audio_adapter(inputs).shape[1] == model.config.audio_tokens + 1
    assert generate(model, output, bundled_tokenizer(), [b.transcript for b in bundles], max_new_tokens=4)[0]
    model.save_pretrained(tmp_path / "large")  # and it round-trips without the original folders
    reloaded = load_model(tmp_path / "large").eval()
    torch.testing.assert_close(reloaded(inputs).probabilities, output.probabilities)
