"""Who is speaking: voice embeddings (resemblyzer) and online speaker clustering for mono audio.

resemblyzer (Apache-2.0) carries its GE2E voice encoder's weights in the wheel:
256 values per utterance, unit length, close for the same voice. When channels
do not separate the speakers (a mono meeting recording), each utterance's
embedding joins the nearest known speaker if it is similar enough, or starts a
new one: ids are stable for the stream and never renumbered.
"""

from __future__ import annotations

import numpy as np

from emostream.media.decode import SAMPLE_RATE

MIN_EMBED_SECONDS = 0.5  # resemblyzer needs this much audio for a usable embedding


class VoiceEmbedder:
    """resemblyzer's voice encoder. One instance per thread."""

    def __init__(self) -> None:
        import torch  # noqa: PLC0415
        from resemblyzer import VoiceEncoder  # noqa: PLC0415 (heavy; loaded on use)

        self._encoder = VoiceEncoder(device=torch.device("cpu"), verbose=False)

    def __call__(self, audio: np.ndarray) -> np.ndarray | None:
        """audio : shape = (n_samples,) float32 at 16 kHz. Returns shape = (256,), unit length, or None when too short."""
        if len(audio) < MIN_EMBED_SECONDS * SAMPLE_RATE:
            return None
        return np.asarray(self._encoder.embed_utterance(audio.astype(np.float32)), dtype=np.float32)


class OnlineDiarizer:
    """Incremental clustering of one stream's utterance voice embeddings into speakers."""

    def __init__(self, threshold: float, max_speakers: int) -> None:
        self.threshold = threshold  # cosine similarity needed to join a speaker
        self.max_speakers = max_speakers  # beyond this, utterances join the nearest speaker
        self.centroids: list[np.ndarray] = []
        self.counts: list[int] = []

    def assign(self, embedding: np.ndarray | None) -> tuple[int, float]:
        """The speaker index (0, 1, …) for this utterance and its similarity to that speaker (0 for a new one).

        An utterance too short to embed goes to the most recent speaker... unless there is none yet.
        """
        if embedding is None:
            return (self._last if self.centroids else self._new(None)), 0.0
        if self.centroids:
            similarities = np.array([float(np.dot(c, embedding)) for c in self.centroids])
            best = int(np.argmax(similarities))
            if similarities[best] >= self.threshold or len(self.centroids) >= self.max_speakers:
                self._join(best, embedding)
                return best, float(similarities[best])
        return self._new(embedding), 0.0

    def _new(self, embedding: np.ndarray | None) -> int:
        self.centroids.append(embedding if embedding is not None else np.zeros(256, np.float32))
        self.counts.append(1 if embedding is not None else 0)
        self._last = len(self.centroids) - 1
        return self._last

    def _join(self, index: int, embedding: np.ndarray) -> None:
        count = self.counts[index]
        mixed = self.centroids[index] * count + embedding
        self.centroids[index] = mixed / (np.linalg.norm(mixed) or 1.0)
        self.counts[index] = count + 1
        self._last = index
