"""Whisper results started from drafts, kept by the live job until their utterances close.

A session hands out a draft when an utterance's closing pause begins (`StreamSession.drafts`);
the job sends its audio to the audio encoder at once and keeps the pending response here,
keyed by the stream and the exact audio. When the utterance closes with that audio, the scorer
takes the response (waiting for it if Whisper is still at work) instead of running Whisper
again. The job holds the responses, not a Serve replica, so any number of audio-encoder
replicas can serve drafts and closed utterances alike.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class PreparedResults(Generic[T]):
    """Results kept per (stream, exact audio): bounded, in memory only, each handed out once; thread-safe."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._results: OrderedDict[tuple[str, bytes], T] = OrderedDict()
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # "prepared"; closed utterances "used" one or "missed"; "failed" results

    def put(self, stream_id: str, audio: np.ndarray, result: T) -> None:
        with self._lock:
            self._results[stream_id, _fingerprint(audio)] = result
            self.counts["prepared"] += 1
            while len(self._results) > self.capacity:
                self._results.popitem(last=False)  # the oldest: its utterance went on, or its stream ended

    def take(self, stream_id: str, audio: np.ndarray) -> T | None:
        with self._lock:
            result = self._results.pop((stream_id, _fingerprint(audio)), None)
            self.counts["used" if result is not None else "missed"] += 1
            return result

    def failed(self) -> None:
        """A result taken turned out to be an error (its utterance is encoded again)."""
        with self._lock:
            self.counts["failed"] += 1

    def __len__(self) -> int:
        return len(self._results)


def _fingerprint(audio: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(audio, np.float32).tobytes(), digest_size=16).digest()
