"""The emotion model's configuration: one `transformers.PretrainedConfig` for every preset."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

FACE_FEATURES = 128 + 7 + 11  # per analysed frame: FER features, FER probabilities, geometry in track σ
AUDIO_EMBEDDING = 2 * 384  # Whisper tiny encoder's last layer, mean and std pooled (voice.audio_features: last_layer)
SPEAKER_EMBEDDING = 256  # resemblyzer voice embedding
PROSODY_FEATURES = 2 * 11  # prosody statistics (scaled) and their per-speaker z-scores
TEXT_EMBEDDING = 384  # all-MiniLM-L6-v2


class EmotionConfig(PretrainedConfig):
    """Sizes of every block, the label set, and where pretrained parts come from.

    Pretrained encoders and the LLM are named by local paths (`*_path`) and loaded by the preset
    functions; their architectures are stored here (`*_config`) so a saved checkpoint rebuilds
    without those paths.
    """

    model_type = "emostream-emotion"

    def __init__(
        self,
        labels: tuple[str, ...] | list[str] = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
        label_set: str = "ravdess8",
        hidden_size: int = 64,  # width of every token inside the model
        num_heads: int = 4,
        fusion_layers: int = 2,  # transformer layers over all modality tokens
        qformer_layers: int = 1,
        num_queries: int = 4,  # tokens per utterance out of the Q-Former
        memory_size: int = 8,  # earlier utterances of the stream the Q-Former can read
        audio_tokens: int = 2,  # tokens the audio adapter makes from one utterance
        temporal_kernel: int = 5,  # analysed frames seen by the local branch's temporal convolution
        frame_size: int = 64,  # pixels: thumbnails are resized to this square for the global branch
        max_face_frames: int = 64,  # analysed face frames per utterance kept (evenly spaced)
        max_frames: int = 4,  # thumbnails per utterance
        dropout: float = 0.1,
        modality_dropout: float = 0.0,  # training only: chance of hiding each present modality
        # The transcript's words were trained on words that carry emotion: otherwise (RAVDESS's two sentences) they are
        # masked out of the fusion and the explanation at scoring (models/score.py). Checkpoints saved before: False.
        words_carry_emotion: bool = False,
        visual_tokens: bool = True,  # let the Q-Former's tokens (faces, thumbnails, stream memory) into the fusion
        vision_config: dict[str, Any] | None = None,  # a Hugging Face vision model for thumbnails (else a small CNN)
        audio_config: dict[str, Any] | None = None,  # a Hugging Face audio encoder on raw audio (else Whisper features only)
        llm_config: dict[str, Any] | None = None,  # a causal LM for open-vocabulary words and explanations
        # Where the LM's base weights come from when they are referenced rather than saved in every checkpoint: a
        # checkpoint folder, or "smollm2-135m-instruct" (the converted SmolLM2, models/smollm.py). None: saved inside.
        llm_path: str | None = None,
        llm_lora: dict[str, Any] | None = None,  # the LoRA adapters' settings (rank, alpha, target_modules) once added
        llm_prompt: str = "Describe the speaker's emotion in a few words, then explain why.",
        ensemble_size: int = 1,  # > 1: a checkpoint of that many models trained alike from different seeds, averaged
        # Whisper values per utterance the model reads: 768 for tiny.en's last layer, 3,840 for its every layer
        # (voice.audio_features: every_layer); checkpoints saved before this field read 768.
        audio_embedding: int = AUDIO_EMBEDDING,
        # voice.audio_features of the features it was trained on (training records it): serving follows it
        # (perception/encode.voice_for_model). None: a preset, or a checkpoint from before the field (768: last_layer).
        audio_features: str | None = None,
        # Softmax temperature of the logits, fitted by training on speaker-grouped held-out folds (train.calibration_folds),
        # so that "72%" means about 72% on speakers the model did not train on. 1: as trained. (Not `temperature`:
        # transformers reads that name as a generation setting.)
        calibration_temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.labels = list(labels)
        self.label_set = label_set
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.fusion_layers = fusion_layers
        self.qformer_layers = qformer_layers
        self.num_queries = num_queries
        self.memory_size = memory_size
        self.audio_tokens = audio_tokens
        self.temporal_kernel = temporal_kernel
        self.frame_size = frame_size
        self.max_face_frames = max_face_frames
        self.max_frames = max_frames
        self.dropout = dropout
        self.modality_dropout = modality_dropout
        self.words_carry_emotion = words_carry_emotion
        self.visual_tokens = visual_tokens
        self.vision_config = vision_config
        self.audio_config = audio_config
        self.llm_config = llm_config
        self.llm_path = llm_path
        self.llm_lora = llm_lora
        self.llm_prompt = llm_prompt
        self.ensemble_size = ensemble_size
        self.audio_embedding = audio_embedding
        self.audio_features = audio_features
        self.calibration_temperature = calibration_temperature
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be a multiple of num_heads {num_heads}")
        if not self.labels:
            raise ValueError("labels must name at least one emotion")
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be at least 1, not {ensemble_size}")
        if calibration_temperature <= 0:
            raise ValueError(f"calibration_temperature must be positive, not {calibration_temperature}")
        if audio_embedding < 1:
            raise ValueError(f"audio_embedding must be at least 1, not {audio_embedding}")

    @property
    def voice_features(self) -> int:
        """Width of the voice vector: the Whisper embedding and the voice embedding side by side (inputs.voice_vector)."""
        return self.audio_embedding + SPEAKER_EMBEDDING
