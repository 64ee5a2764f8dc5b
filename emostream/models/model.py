"""The emotion model: global-local visual encoder, utterance-aware Q-Former, audio and text adapters,
a fusion transformer with emotion and valence/arousal heads, and an optional causal LLM.

Reads like the diagram in ARCHITECTURE.md §3:

    thumbnails ─► global tokens ─┐
    face frames ─► local tokens ─┴► cross-attention ─► visual tokens ─┐
                                         stream memory (earlier utterances) ─┴► Q-Former ─► query tokens ─┐
    Whisper embedding + prosody ─► audio tokens ─────────────────────────────────────────────────────────┤
    sentence embedding ─► text token ────────────────────────────────────────────────────────────────────┴► fusion ─► heads
                                                                                     └► LLM (words, explanation)

Any modality may be missing for any utterance; its tokens are masked out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel

from emostream.models.config import FACE_FEATURES, PROSODY_FEATURES, TEXT_EMBEDDING, EmotionConfig
from emostream.models.inputs import ModelInputs


def time_embedding(times: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of times in seconds (periods from 0.1 s to ~100 s), shape = (*times.shape, dim)."""
    half = dim // 2
    periods = 0.1 * (1000.0 ** (torch.arange(half, device=times.device, dtype=torch.float32) / max(half - 1, 1)))
    angles = times.unsqueeze(-1) * (2 * math.pi / periods)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def usable_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Key-padding mask safe for attention (rows with no key get one dummy key) and which rows had any key."""
    any_key = mask.any(dim=1)
    safe = mask.clone()
    safe[~any_key, 0] = True
    return ~safe, any_key  # nn.MultiheadAttention wants True where a key is padding


class SmallFrameEncoder(nn.Module):
    """Thumbnails to one vector each: a small CNN, for presets without a pretrained vision model."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, hidden, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images : shape = (N, 3, S, S) in [0, 1]; returns shape = (N, hidden)."""
        return self.layers(images * 2 - 1).flatten(1)


class PretrainedFrameEncoder(nn.Module):
    """Thumbnails through a Hugging Face vision model (ViT, CLIP vision, SigLIP vision …), pooled."""

    def __init__(self, vision_config: dict, hidden: int) -> None:
        super().__init__()
        self.model = AutoModel.from_config(AutoConfig.for_model(**vision_config))
        width = getattr(self.model.config, "hidden_size", None) or self.model.config.vision_config.hidden_size
        self.projection = nn.Linear(width, hidden)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.model(pixel_values=(images - 0.5) / 0.5)
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            pooled = output.last_hidden_state.mean(dim=1)
        return self.projection(pooled)


class GlobalLocalVisualEncoder(nn.Module):
    """Global tokens (thumbnails at their times) and local tokens (the speaking face over time, with its
    frame-to-frame change and a temporal convolution: the micro-expression signal), joined by the local
    tokens attending to the global ones."""

    def __init__(self, config: EmotionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.hidden = d
        self.frame_encoder = PretrainedFrameEncoder(config.vision_config, d) if config.vision_config else SmallFrameEncoder(d)
        self.local_in = nn.Linear(FACE_FEATURES, d)
        self.change_in = nn.Linear(FACE_FEATURES, d)  # first differences between analysed frames
        self.temporal = nn.Conv1d(d, d, config.temporal_kernel, padding=config.temporal_kernel // 2)
        self.norm_local = nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, config.num_heads, dropout=config.dropout, batch_first=True)

    def forward(self, inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns visual tokens, shape = (B, T + F, d), and their mask, shape = (B, T + F)."""
        batch, frames = inputs.frames.shape[:2]
        face_mask = inputs.face_mask.unsqueeze(-1).float()
        face = inputs.face * face_mask
        change = torch.diff(face, dim=1, prepend=face[:, :1]) * face_mask
        local = self.local_in(face) + self.change_in(change) + time_embedding(inputs.face_times, self.hidden)
        local = local + self.temporal(local.transpose(1, 2)).transpose(1, 2)
        local = local * face_mask
        images = inputs.frames.flatten(0, 1)
        global_ = self.frame_encoder(images).view(batch, frames, -1) + time_embedding(inputs.frame_times, self.hidden)
        global_ = global_ * inputs.frame_mask.unsqueeze(-1).float()
        padding, has_frames = usable_mask(inputs.frame_mask)
        attended, _ = self.cross(self.norm_local(local), global_, global_, key_padding_mask=padding)
        local = local + attended * has_frames.view(-1, 1, 1).float()
        return torch.cat([local, global_], dim=1), torch.cat([inputs.face_mask, inputs.frame_mask], dim=1)


class QFormerLayer(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attention = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(queries)
        queries = queries + self.self_attention(x, x, x)[0]
        padding, has_keys = usable_mask(key_mask)
        attended = self.cross_attention(self.norm2(queries), keys, keys, key_padding_mask=padding)[0]
        queries = queries + attended * has_keys.view(-1, 1, 1).float()
        return queries + self.feed_forward(self.norm3(queries))


class UtteranceQFormer(nn.Module):
    """Learned queries read this utterance's visual tokens and the stream's memory of earlier utterances,
    giving `num_queries` tokens per utterance whatever its length."""

    def __init__(self, config: EmotionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.queries = nn.Parameter(torch.randn(1, config.num_queries, d) * 0.02)
        self.memory_position = nn.Parameter(torch.randn(1, config.memory_size, d) * 0.02)
        self.layers = nn.ModuleList(QFormerLayer(d, config.num_heads, config.dropout) for _ in range(config.qformer_layers))

    def forward(self, visual: torch.Tensor, visual_mask: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        keys = torch.cat([visual, memory + self.memory_position], dim=1)
        key_mask = torch.cat([visual_mask, memory_mask], dim=1)
        queries = self.queries.expand(visual.shape[0], -1, -1)
        for layer in self.layers:
            queries = layer(queries, keys, key_mask)
        return queries


class AudioAdapter(nn.Module):
    """Voice features (Whisper + voice embedding, standardised over the training set and per speaker) and
    prosody -> `audio_tokens` tokens (+ one from a pretrained audio encoder, if any)."""

    def __init__(self, config: EmotionConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.count = config.audio_tokens
        # Training-set statistics of the voice features, set by training and saved with the checkpoint.
        self.register_buffer("voice_mean", torch.zeros(config.voice_features))
        self.register_buffer("voice_std", torch.ones(config.voice_features))
        width = 2 * config.voice_features + PROSODY_FEATURES + 1
        self.features = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(width, 2 * d), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(2 * d, d * self.count),
        )
        self.encoder = AutoModel.from_config(AutoConfig.for_model(**config.audio_config)) if config.audio_config else None
        self.encoder_projection = nn.Linear(self.encoder.config.hidden_size, d) if self.encoder is not None else None

    @property
    def tokens(self) -> int:
        return self.count + (1 if self.encoder is not None else 0)

    def voice_features(self, inputs: ModelInputs) -> torch.Tensor:
        """The adapter's input, shape = (B, 2 * config.voice_features + PROSODY_FEATURES + 1)."""
        known = inputs.voice_z_known.float().unsqueeze(1)
        # Speaker-normalised features when the speaker's statistics are known, training-set-standardised ones
        # only until then: raw voice features also say who is speaking, which does not carry to new speakers.
        standard = (inputs.voice - self.voice_mean) / self.voice_std * (1 - known)
        return torch.cat([standard, inputs.voice_z * known, inputs.prosody, known], dim=1)

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        features = self.voice_features(inputs)
        tokens = self.features(features).view(features.shape[0], self.count, -1)
        if self.encoder is not None:
            if inputs.raw_audio is None or inputs.raw_audio_mask is None:
                raise ValueError("this preset has an audio encoder: collate(..., raw_audio=True)")
            mask = inputs.raw_audio_mask.float()
            mean = (inputs.raw_audio * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
            var = (((inputs.raw_audio - mean) * mask) ** 2).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
            normalised = (inputs.raw_audio - mean) / (var.sqrt() + 1e-5) * mask  # wav2vec2-style input normalisation
            hidden = self.encoder(input_values=normalised).last_hidden_state
            tokens = torch.cat([tokens, self.encoder_projection(hidden.mean(dim=1)).unsqueeze(1)], dim=1)
        return tokens


@dataclass
class EmotionOutput:
    logits: torch.Tensor  # shape = (B, n_labels): the deep path's plus voice_logits
    probabilities: torch.Tensor  # shape = (B, n_labels), softmax of logits (a face expert joins at scoring: models/fusion.py)
    valence: torch.Tensor  # shape = (B,), in [-1, 1]
    arousal: torch.Tensor  # shape = (B,)
    memory: torch.Tensor  # shape = (B, memory_size, d): each stream's memory after this utterance
    memory_mask: torch.Tensor  # shape = (B, memory_size) bool
    tokens: torch.Tensor  # shape = (B, n_tokens, d): fused tokens (the LLM's multimodal input)
    token_mask: torch.Tensor  # shape = (B, n_tokens) bool
    voice_logits: torch.Tensor  # shape = (B, n_labels), the linear read-out of the voice features alone (0 without audio)

    def select(self, rows: slice | list[int]) -> EmotionOutput:
        """The outputs of some of the batch's utterances."""
        return EmotionOutput(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


class EmotionModel(PreTrainedModel):
    config_class = EmotionConfig
    base_model_prefix = "emotion"
    main_input_name = "inputs"

    def __init__(self, config: EmotionConfig) -> None:
        super().__init__(config)
        d, n_labels = config.hidden_size, len(config.labels)
        self.visual_encoder = GlobalLocalVisualEncoder(config)
        self.qformer = UtteranceQFormer(config)
        self.audio_adapter = AudioAdapter(config)
        self.text_adapter = nn.Sequential(nn.LayerNorm(TEXT_EMBEDDING), nn.Linear(TEXT_EMBEDDING, d))
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.modality = nn.Embedding(4, d)  # 0 cls, 1 visual queries, 2 audio, 3 text
        layer = nn.TransformerEncoderLayer(d, config.num_heads, 4 * d, config.dropout, activation="gelu", batch_first=True, norm_first=True)
        self.fusion = nn.TransformerEncoder(layer, config.fusion_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.emotion_head = nn.Linear(d, n_labels)
        # A linear read-out of the voice features straight to the labels, beside the deep path (wide and deep):
        # on 8-class RAVDESS a linear model on these features alone reaches ~80% on unseen speakers.
        self.voice_head = nn.Linear(2 * config.voice_features + PROSODY_FEATURES + 1, n_labels)
        self.valence_arousal_head = nn.Linear(d, 2)
        self.language_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config.llm_config)) if config.llm_config else None
        self.llm_projection = nn.Linear(d, self.language_model.config.hidden_size) if self.language_model is not None else None
        self.post_init()
        self._base_fingerprint: torch.Tensor | None = None  # of a referenced LM's base weights, when they were loaded
        self._lora_merged = False  # a referenced LM's adapters were merged into its base at load
        if config.llm_path:
            # A referenced LM's base weights are not in the checkpoint (load_language_model reads them) and its
            # adapters are read by from_pretrained itself, after the base.
            self._keys_to_ignore_on_load_missing = {r"^language_model\."}
            self._keys_to_ignore_on_load_unexpected = {r"^language_model\..*lora_"}

    def load_language_model(self) -> None:
        """Load the base weights of the LM the config references (`llm_path`), with its own buffers and generation
        settings, in place of the one built from `llm_config`."""
        if not self.config.llm_path:
            raise ValueError("this model's language model is saved inside its checkpoint (config.llm_path is None)")
        folder = language_model_folder(self.config.llm_path)
        self.language_model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        self._base_fingerprint = self._language_model_fingerprint()

    def _language_model_fingerprint(self) -> torch.Tensor:
        """One sum per base weight of the LM (adapters left out): tells whether training changed the base."""
        assert self.language_model is not None
        return torch.stack([p.detach().double().sum() for n, p in self.language_model.named_parameters() if "lora_" not in n])

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any) -> EmotionModel:  # type: ignore[override]
        """`PreTrainedModel.from_pretrained`; a referenced LM gets its base weights from `llm_path` and its LoRA
        adapters from the checkpoint, merged in (a plain LM generates faster)."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if model.config.llm_path:
            model.load_language_model()
            if model.config.llm_lora:
                from safetensors.torch import load_file  # noqa: PLC0415

                from emostream.models.llm import add_lora  # noqa: PLC0415

                saved = load_file(str(Path(pretrained_model_name_or_path) / "model.safetensors"))
                adapters = {k.removeprefix("language_model."): v for k, v in saved.items() if k.startswith("language_model.")}
                add_lora(model, **model.config.llm_lora)
                assert model.language_model is not None
                missing, unexpected = model.language_model.load_state_dict(adapters, strict=False)
                if unexpected or any("lora_" in k for k in missing) or not adapters:
                    raise ValueError(f"{pretrained_model_name_or_path}: its LoRA adapters do not fit the language model at "
                                     f"{model.config.llm_path} (missing {len([k for k in missing if 'lora_' in k])}, "
                                     f"unexpected {len(unexpected)}): was it trained on another base?")
                model.language_model = model.language_model.merge_and_unload()
                model._lora_merged = True
            model.eval()
        return model

    def save_pretrained(self, save_directory: str | Path, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """`PreTrainedModel.save_pretrained`; a referenced LM's base weights stay out (only its adapters are saved),
        so a checkpoint is a few MB however large the LM."""
        if self.config.llm_path and "state_dict" not in kwargs:
            if self._lora_merged:
                raise ValueError("this model's LoRA adapters were merged into its referenced language model at load, so "
                                 "they cannot be saved apart from it: save the model training produced instead")
            if self._base_fingerprint is None or not torch.equal(self._language_model_fingerprint(), self._base_fingerprint):
                raise ValueError(f"the base weights of the referenced language model ({self.config.llm_path}) changed in "
                                 "training and would be lost: freeze language_model, or train it through LoRA (stage lora: true)")
            kwargs["state_dict"] = {k: v for k, v in self.state_dict().items() if not k.startswith("language_model.") or "lora_" in k}
        super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and module.weight.shape[0] <= 4096 and module in self._own_modules():
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _own_modules(self) -> set[nn.Module]:
        skip = set(self.language_model.modules()) if self.language_model is not None else set()
        return {m for m in self.modules() if m not in skip}

    def empty_memory(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """A stream's memory before its first utterance: shapes (batch, memory_size, d) and (batch, memory_size)."""
        size, d = self.config.memory_size, self.config.hidden_size
        return torch.zeros(batch, size, d, device=self.device), torch.zeros(batch, size, dtype=torch.bool, device=self.device)

    def _hide_modalities(self, inputs: ModelInputs) -> ModelInputs:
        """Training: hide each present modality with probability `modality_dropout`, keeping at least one."""
        p = self.config.modality_dropout
        if not self.training or p <= 0:
            return inputs
        present = torch.stack([inputs.has_audio, inputs.face_mask.any(1) | inputs.frame_mask.any(1), inputs.has_text], dim=1)
        keep = (torch.rand(present.shape, device=present.device) >= p) & present
        lost_all = ~keep.any(1) & present.any(1)
        keep[lost_all] = present[lost_all]
        return ModelInputs(**{
            **inputs.__dict__,
            "has_audio": keep[:, 0],
            "face_mask": inputs.face_mask & keep[:, 1:2],
            "frame_mask": inputs.frame_mask & keep[:, 1:2],
            "has_text": keep[:, 2],
        })

    def forward(self, inputs: ModelInputs, memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None) -> EmotionOutput:
        """inputs : a collated batch; memory, memory_mask : each utterance's stream memory (empty if None)."""
        inputs = self._hide_modalities(inputs)
        batch = len(inputs)
        if memory is None or memory_mask is None:
            memory, memory_mask = self.empty_memory(batch)
        # With visual_tokens off, the Q-Former's tokens are masked out of the fusion and change nothing, so
        # inference skips them (three quarters of the default's scoring time). Training still computes them: the
        # retrain command then reproduces the committed weights (the same random draws, the same decay of the
        # unused weights).
        uses_visual = bool(self.config.visual_tokens) or self.training
        if uses_visual:
            visual, visual_mask = self.visual_encoder(inputs)
            queries = self.qformer(visual, visual_mask, memory, memory_mask)
            has_visual_context = (visual_mask.any(1) | memory_mask.any(1)) & bool(self.config.visual_tokens)
        else:
            queries = self.cls.new_zeros(batch, self.config.num_queries, self.config.hidden_size)
            has_visual_context = torch.zeros(batch, dtype=torch.bool, device=self.cls.device)
        audio = self.audio_adapter(inputs)
        text = self.text_adapter(inputs.text).unsqueeze(1)
        kinds = [0] + [1] * queries.shape[1] + [2] * audio.shape[1] + [3]
        tokens = torch.cat([self.cls.expand(batch, -1, -1), queries, audio, text], dim=1)
        tokens = tokens + self.modality(torch.tensor(kinds, device=tokens.device))
        mask = torch.cat([
            torch.ones(batch, 1, dtype=torch.bool, device=tokens.device),
            has_visual_context.unsqueeze(1).expand(-1, queries.shape[1]),
            inputs.has_audio.unsqueeze(1).expand(-1, audio.shape[1]),
            inputs.has_text.unsqueeze(1),
        ], dim=1)
        fused = self.norm(self.fusion(tokens, src_key_padding_mask=~mask))
        summary = fused[:, 0]
        logits = self.emotion_head(summary)
        voice_logits = self.voice_head(self.audio_adapter.voice_features(inputs)) * inputs.has_audio.unsqueeze(1).float()
        logits = logits + voice_logits
        valence, arousal = torch.tanh(self.valence_arousal_head(summary)).unbind(dim=1)
        probabilities = F.softmax(logits / self.config.calibration_temperature, dim=-1)  # calibrated
        if uses_visual:  # the stream's memory rolls: drop the oldest slot, append this utterance's query summary
            remembered = queries.mean(dim=1, keepdim=True).detach()
            memory = torch.cat([memory[:, 1:], remembered], dim=1)
            memory_mask = torch.cat([memory_mask[:, 1:], torch.ones(batch, 1, dtype=torch.bool, device=tokens.device)], dim=1)
        return EmotionOutput(logits, probabilities, valence, arousal, memory, memory_mask, fused, mask, voice_logits)


def language_model_folder(reference: str) -> Path:
    """The checkpoint folder of a referenced LM: the converted SmolLM2 by its name, or a folder."""
    from emostream.models import smollm  # noqa: PLC0415

    if reference == smollm.NAME:
        return smollm.checkpoint_path()
    folder = Path(reference)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no language model at {folder} (llm_path): expected {smollm.NAME!r} or a checkpoint folder "
                                "with config.json")
    return folder


class EmotionEnsemble(PreTrainedModel):
    """`config.ensemble_size` emotion models trained alike from different seeds: the probabilities, valence and
    arousal are the means of the members'. Each member keeps its own stream memory, so memory has a member axis:
    shape = (B, K, memory_size, d). Classifiers only: a language model's generations do not average."""

    config_class = EmotionConfig
    base_model_prefix = "ensemble"
    main_input_name = "inputs"
    language_model = None

    def __init__(self, config: EmotionConfig) -> None:
        super().__init__(config)
        if config.llm_config:
            raise ValueError("an ensemble averages classifiers: presets with a language model cannot be ensembled")
        self.members = nn.ModuleList(EmotionModel(config) for _ in range(config.ensemble_size))
        self.post_init()

    @classmethod
    def of(cls, members: list[EmotionModel]) -> EmotionEnsemble:
        """The ensemble of trained models of one architecture, trained on one training set."""
        first = members[0]
        for member in members[1:]:
            if member.config.to_diff_dict() != first.config.to_diff_dict():
                raise ValueError("ensemble members must share one configuration")
            mine, theirs = member.audio_adapter, first.audio_adapter
            if not (torch.equal(mine.voice_mean, theirs.voice_mean) and torch.equal(mine.voice_std, theirs.voice_std)):
                raise ValueError("ensemble members must be trained on one training set (their voice statistics differ)")
        config = EmotionConfig.from_dict({**first.config.to_dict(), "ensemble_size": len(members)})
        ensemble = cls(config)
        for target, member in zip(ensemble.members, members, strict=True):
            target.load_state_dict(member.state_dict())
        return ensemble

    def _init_weights(self, module: nn.Module) -> None:
        """The members initialise their own weights."""

    @property
    def audio_adapter(self) -> AudioAdapter:
        """The first member's; every member holds the same training-set voice statistics (see `of`)."""
        return self.members[0].audio_adapter

    def empty_memory(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        memory, mask = self.members[0].empty_memory(batch)
        size = len(self.members)
        return memory.unsqueeze(1).repeat(1, size, 1, 1), mask.unsqueeze(1).repeat(1, size, 1)

    def forward(self, inputs: ModelInputs, memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None) -> EmotionOutput:
        if memory is None or memory_mask is None:
            memory, memory_mask = self.empty_memory(len(inputs))
        outputs = [member(inputs, memory[:, k], memory_mask[:, k]) for k, member in enumerate(self.members)]

        def mean(name: str) -> torch.Tensor:
            return torch.stack([getattr(output, name) for output in outputs]).mean(dim=0)

        def stacked(name: str) -> torch.Tensor:  # along the member axis
            return torch.stack([getattr(output, name) for output in outputs], dim=1)

        def joined(name: str) -> torch.Tensor:  # along the token axis
            return torch.cat([getattr(output, name) for output in outputs], dim=1)

        return EmotionOutput(
            logits=mean("logits"), probabilities=mean("probabilities"), valence=mean("valence"), arousal=mean("arousal"),
            memory=stacked("memory"), memory_mask=stacked("memory_mask"), tokens=joined("tokens"), token_mask=joined("token_mask"),
            voice_logits=mean("voice_logits"),
        )


# What the scorer and the evaluation take: one model or an ensemble of them.
ScoringModel = EmotionModel | EmotionEnsemble
