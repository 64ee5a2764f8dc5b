"""Running mean and standard deviation of a vector series: per face track (geometry) and per speaker (voice)."""

from __future__ import annotations

import numpy as np


class RunningStats:
    """Mean and variance of a vector series, updated one value at a time (Welford)."""

    def __init__(self, size: int, floor: np.ndarray | float = 1e-2) -> None:
        self.count = 0
        self.mean = np.zeros(size)
        self._m2 = np.zeros(size)
        self.floor = np.broadcast_to(np.asarray(floor, dtype=np.float64), (size,))  # smallest standard deviation used

    def add(self, values: np.ndarray) -> None:
        self.count += 1
        delta = values - self.mean
        # New arrays, not in-place: statistics that travelled through Ray (a stream's context sent to the
        # scorer and back) come back as read-only views of the object store.
        self.mean = self.mean + delta / self.count
        self._m2 = self._m2 + delta * (values - self.mean)

    @property
    def std(self) -> np.ndarray:
        variance = self._m2 / max(self.count - 1, 1)
        return np.maximum(np.sqrt(variance), self.floor)

    def z(self, values: np.ndarray) -> np.ndarray:
        """values in standard deviations from the running mean (0 until two values were seen)."""
        if self.count < 2:
            return np.zeros_like(values, dtype=np.float32)
        return ((values - self.mean) / self.std).astype(np.float32)
