"""Which visible face is speaking: the one whose mouth opening follows the loudness of the utterance.

For each face track, its mouth-opening measure at the analysed frames is
correlated (Pearson) with the utterance audio's loudness around the same
instants. The best-correlated face, if it correlates clearly, is the speaker's
face; every other visible face is a listener.
"""

from __future__ import annotations

import numpy as np

from emostream.media.decode import SAMPLE_RATE
from emostream.perception.faces.geometry import GEOMETRY_NAMES

MOUTH_OPEN = GEOMETRY_NAMES.index("mouth_open")
LOUDNESS_WINDOW = 0.1  # seconds of audio around each frame time whose RMS is that frame's loudness
MIN_FRAMES = 5  # fewer analysed frames of a face in the utterance give no score
MIN_SPEAKER_SCORE = 0.2  # a face below this correlation is not taken for the speaker


def loudness_at(audio: np.ndarray, audio_start: float, times: np.ndarray) -> np.ndarray:
    """RMS of `audio` (shape = (n,), 16 kHz, starting at audio_start) in a short window around each time."""
    half = int(LOUDNESS_WINDOW * SAMPLE_RATE / 2)
    centres = np.round((times - audio_start) * SAMPLE_RATE).astype(int)
    values = []
    for c in centres:
        window = audio[max(c - half, 0) : max(c + half, 0)]
        values.append(float(np.sqrt(np.mean(window**2))) if len(window) else 0.0)
    return np.array(values)


def active_speaker_score(audio: np.ndarray, audio_start: float, times: np.ndarray, geometry: np.ndarray) -> float:
    """Correlation in [-1, 1] of one face's mouth opening with the audio's loudness; NaN when it cannot be told."""
    if len(times) < MIN_FRAMES:
        return float("nan")
    loudness = loudness_at(audio, audio_start, times)
    mouth = geometry[:, MOUTH_OPEN]
    if np.std(loudness) < 1e-6 or np.std(mouth) < 1e-6:
        return float("nan")
    return float(np.corrcoef(mouth, loudness)[0, 1])


def speaking_face(scores: dict[int, float]) -> int | None:
    """The track id of the speaking face, or None when no face follows the voice clearly."""
    scored = {track: s for track, s in scores.items() if np.isfinite(s)}
    if not scored:
        return None
    best = max(scored, key=lambda track: scored[track])
    return best if scored[best] >= MIN_SPEAKER_SCORE else None
