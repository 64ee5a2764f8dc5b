"""Explanations built from measured cues, never invented.

Each cue is a measurement of this utterance (a prosody value in the speaker's
standard deviations, how long a facial action lasted, the face's expression
probability, a micro-expression) with a human-readable form. Which modality
drove the decision is measured too: the predicted label's probability drops
when that modality is hidden from the fused decision (occlusion, models/score.py).
The explanation names the label, the modality that mattered most, and its
strongest cues. Only modalities that count are cited (words the model was not
trained to read are not), and the face is never credited for a label its
expression contradicts: then it is named as the evidence the others outweighed.
"""

from __future__ import annotations

import math

import numpy as np

from emostream.contracts import Cue
from emostream.labels import LABEL_SETS, corresponding_label
from emostream.perception.faces.geometry import GEOMETRY_NAMES
from emostream.perception.utterance import UtteranceBundle

NOTABLE_SIGMA = 1.0  # a prosody or face measure this far from its own norm is worth naming
SPEAKING_RATE_FAST = 5.5  # syllables/s; absolute anchors used until the speaker's own norm is known
SPEAKING_RATE_SLOW = 2.5
FACE_ACTIVE_SIGMA = 1.0  # a facial action counts as "on" in frames where it is this far above the track's mean
MIN_FACE_SECONDS = 0.15  # shorter spells are left to the micro-expression detector
CUES_IN_SENTENCE = 3

VOICE_WORDS = {  # prosody field -> (above the norm, below the norm)
    "f0_mean": ("pitch {:+.1f} σ above this speaker's norm", "pitch {:+.1f} σ below this speaker's norm"),
    "f0_range": ("livelier intonation ({:+.1f} σ)", "flatter intonation ({:+.1f} σ)"),
    "energy_mean": ("louder than usual ({:+.1f} σ)", "quieter than usual ({:+.1f} σ)"),
    "speaking_rate": ("faster speech ({:+.1f} σ)", "slower speech ({:+.1f} σ)"),
    "pause_seconds": ("more pausing ({:+.1f} σ)", "fewer pauses ({:+.1f} σ)"),
}
FACE_WORDS = {
    "brow_raise": "brows raised", "brow_lower": "brows lowered", "eye_aperture": "eyes widened",
    "lip_corner_pull": "smiling (lip corners pulled)", "lip_corner_depress": "lip corners pulled down",
    "mouth_open": "mouth opened wide", "lip_press": "lips pressed", "nose_wrinkle": "nose wrinkled",
}


def voice_cues(bundle: UtteranceBundle) -> list[Cue]:
    cues = []
    for name, (up, down) in VOICE_WORDS.items():
        z = bundle.prosody_z.get(name, float("nan"))
        if math.isfinite(z) and abs(z) >= NOTABLE_SIGMA:
            cues.append(Cue(modality="voice", name=name, value=round(z, 2), detail=(up if z > 0 else down).format(z)))
    rate = bundle.prosody.speaking_rate
    if not any(c.name == "speaking_rate" for c in cues) and math.isfinite(rate):
        if rate >= SPEAKING_RATE_FAST:
            cues.append(Cue(modality="voice", name="speaking_rate", value=round(rate, 2), detail=f"fast speech ({rate:.1f} syllables/s)"))
        elif rate <= SPEAKING_RATE_SLOW:
            cues.append(Cue(modality="voice", name="speaking_rate", value=round(rate, 2), detail=f"slow speech ({rate:.1f} syllables/s)"))
    return sorted(cues, key=lambda c: -abs(c.value))


def face_cues(bundle: UtteranceBundle) -> list[Cue]:
    face = bundle.face
    if face is None or not len(face.times):
        return []
    evidence = bundle.face_evidence
    if evidence is None:  # every frame too poor to read (perception/utterance.py MIN_FRAME_QUALITY): the face says nothing
        return []
    top = evidence.label
    cues = [Cue(modality="face", name=f"expression:{top}", value=round(float(evidence.probabilities.max()), 3),
                detail=f"face looks {top} ({evidence.probabilities.max():.2f}, {evidence.frames:.3g} frames)")]
    step = float(np.median(np.diff(face.times))) if len(face.times) > 1 else 0.0
    for name, words in FACE_WORDS.items():
        active = face.geometry_z[:, GEOMETRY_NAMES.index(name)] >= FACE_ACTIVE_SIGMA
        seconds = float(active.sum()) * step
        if seconds >= MIN_FACE_SECONDS:
            cues.append(Cue(modality="face", name=name, value=round(seconds, 2), detail=f"{words} for {seconds:.1f} s"))
    for micro in face.micro_expressions:
        words = FACE_WORDS.get(micro.measure, micro.measure.replace("_", " "))
        cues.append(Cue(modality="face", name=f"micro:{micro.measure}", value=round(micro.amplitude, 2),
                        detail=f"a brief flicker ({words}, {micro.offset - micro.onset:.2f} s, {micro.amplitude:+.1f} σ)"))
    return cues


def word_cues(bundle: UtteranceBundle) -> list[Cue]:
    if not bundle.transcript:
        return []
    quoted = bundle.transcript if len(bundle.transcript) <= 80 else bundle.transcript[:77] + "…"
    return [Cue(modality="words", name="transcript", value=float(len(bundle.transcript.split())), detail=f'the words "{quoted}"')]


def face_agrees(label: str, label_set: str, bundle: UtteranceBundle) -> bool:
    """The face's most probable expression is the label's concept (False for a label no face set has, e.g. calm)."""
    evidence = bundle.face_evidence
    if evidence is None or label_set not in LABEL_SETS:
        return False
    return corresponding_label(evidence.label, "fer7", label_set) == label


def explain(label: str, probability: float, bundle: UtteranceBundle, without: dict[str, float], label_set: str,
            counted: set[str]) -> tuple[str, list[Cue]]:
    """The explanation sentence and the cues it rests on.

    without : modality ("voice", "face", "words") -> the label's probability when that modality is hidden.
    counted : the modalities that count for this utterance (present, and read by a trained path); only their cues are given.
    """
    measured = {"voice": voice_cues(bundle), "face": face_cues(bundle), "words": word_cues(bundle)}
    by_modality = {m: cues for m, cues in measured.items() if m in counted}
    cues = [cue for cues in by_modality.values() for cue in cues]
    against = "face" in by_modality and by_modality["face"] and not face_agrees(label, label_set, bundle)
    # A modality drove the label only if hiding it lowers the label's probability, and a face only if it shows the label.
    ranked = sorted((m for m in without if m in counted and without[m] < probability and not (m == "face" and against)),
                    key=lambda m: without[m])
    sentence = f"{label} ({probability:.0%})"
    if ranked:
        lead = ranked[0]
        named = [c.detail for c in by_modality[lead][:CUES_IN_SENTENCE]]  # none when no measure is notable
        sentence += f", mostly from the {lead} (without it: {without[lead]:.0%})" + (": " + "; ".join(named) if named else "")
        others = [c.detail for m in ranked[1:] for c in by_modality[m][:1]]
        if others:
            sentence += "; also " + "; ".join(others)
    else:
        cited = [c.detail for c in cues if not (c.modality == "face" and against)][:1]
        sentence += ": no single modality stands out" + (f" ({cited[0]})" if cited else "")
    if against:
        sentence += f"; outweighed: {by_modality['face'][0].detail}"
    return sentence + ".", cues
