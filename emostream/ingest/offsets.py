"""Offsets in flight per partition: what may be committed is everything below the lowest unfinished one."""

from __future__ import annotations

from kafka import TopicPartition


class OffsetTracker:
    """Per partition, the offsets still in flight; the commit point is the lowest of them."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        self._pending.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        self._pending.get(tp, set()).discard(offset)

    def commit_points(self) -> dict[TopicPartition, int]:
        return {tp: min(self._pending[tp]) if self._pending.get(tp) else nxt for tp, nxt in self._next.items()}

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
