"""Fusion of experts: an utterance's label comes from every modality present, each read by an expert of its own.

The experts
-----------
- **The emotion model**, on what it was trained to read: the voice; the words only where it was trained on words
  that carry emotion (`EmotionConfig.words_carry_emotion`); the face only where its visual tokens were trained
  (`visual_tokens`). For `lite`, trained on RAVDESS speech, that is the voice alone: the *voice expert*.
- **The face expert**: the expression network's probabilities (FER7) averaged over the speaking face's frames of the
  utterance, each weighted by its detection quality (`perception.utterance.face_evidence`). It joins whenever the model
  keeps faces out of its own fusion and the face has a frame good enough to read.

The rule: a product of experts
------------------------------
    p(y | voice, face) ∝ p_voice(y) · L_face(y) ** FACE_WEIGHT,    L_face(y) = Σ_c A[y, c] · p_face(c)

A = `labels.mapping_matrix(model's label set, "fer7")`: how each of the model's labels shows on a face, in the face
expert's classes. Labels the face set shares map 1:1; calm, which no face set has, shows as neutral 0.8 / happy 0.2
(`labels.NEAREST`), so the face can neither veto calm nor tell calm from neutral, which it cannot see.

Why a product is sound without paired face-and-voice data: if the voice and the face are independent given the
emotion, Bayes gives p(y | v, f) ∝ p(y | v) · p(f | y), and p(f | y) ∝ p(y | f) / p(y): each expert is trained on
its own data, none needs the other's. Two approximations, stated in the model card: the face expert's training
prior is not divided out (FER-2013's classes run from 1.5 % disgust to 25 % happy; dividing would multiply the rarest,
least reliable readings up to tenfold), and voice and face are not truly independent (one person makes both). With
calibrated experts the weight is the rule's own, 1: there is no labelled talking-face video here to fit another.

Audio-only input (or a face-less utterance) gets the voice expert's probabilities exactly, not a re-normalised copy.
Valence and arousal are the voice expert's, moved by as much as the face moves the label distribution's place on
the circumplex (`labels.expected_valence_arousal`).
"""

from __future__ import annotations

import numpy as np
import torch

from emostream.labels import LABEL_SETS, expected_valence_arousal, mapping_matrix
from emostream.models.config import EmotionConfig

FACE_WEIGHT = 1.0  # the product rule's own weight for calibrated experts; nothing here could fit another
LIKELIHOOD_FLOOR = 1e-4  # the face's likelihood of a label is floored before the log: one misread face never vetoes a label
PROBABILITY_FLOOR = 1e-12  # the model's probabilities before the log (a softmax underflows to 0 only at extreme logits)
FACE_SET = "fer7"  # the face expert's classes as frames carry them (perception.faces.analyze maps ferplus8 into these)


def face_map(config: EmotionConfig) -> torch.Tensor | None:
    """A (shape = (n_labels, 7)): each of the model's labels in the face expert's classes; None when the face expert
    does not join: the model reads faces itself (trained visual tokens) or its labels are not a known label set."""
    if config.visual_tokens or config.label_set not in LABEL_SETS or list(LABEL_SETS[config.label_set]) != list(config.labels):
        return None
    return torch.tensor(mapping_matrix(config.label_set, FACE_SET), dtype=torch.float32)


def face_log_likelihood(expression: torch.Tensor, face_map: torch.Tensor) -> torch.Tensor:
    """log L_face, shape = (B, n_labels), from the face expert's probabilities, shape = (B, 7)."""
    return torch.log((expression @ face_map.T).clamp(min=LIKELIHOOD_FLOOR))


def fuse(model_probabilities: torch.Tensor, model_present: torch.Tensor, face_log_likelihood: torch.Tensor,
         face_present: torch.Tensor) -> torch.Tensor:
    """The fused probabilities, shape = (B, n_labels).

    model_probabilities : the model's, shape = (B, n_labels); model_present : (B,) bool, it read any modality (a model
    given nothing answers its bias, which is no evidence); face_present : (B,) bool. Rows without a face are the
    model's probabilities, bit for bit; rows with only a face are the face's likelihood, normalised.
    """
    model_log = torch.log(model_probabilities.clamp(min=PROBABILITY_FLOOR)) * model_present.unsqueeze(1).float()
    fused = torch.softmax(model_log + FACE_WEIGHT * face_log_likelihood, dim=-1)
    return torch.where(face_present.unsqueeze(1), fused, model_probabilities)


def fused_valence_arousal(valence: float, arousal: float, voice: np.ndarray, fused: np.ndarray, label_set: str) -> tuple[float, float]:
    """The voice expert's valence and arousal, moved as far as fusion moved the labels' circumplex expectation."""
    before, after = expected_valence_arousal(voice, label_set), expected_valence_arousal(fused, label_set)
    return (float(np.clip(valence + after[0] - before[0], -1, 1)), float(np.clip(arousal + after[1] - before[1], -1, 1)))
