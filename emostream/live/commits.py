"""Which media offsets the live job may commit, and the commit itself (the delivery guarantee of `sinks.base`).

Per partition, the commit point is the lowest offset not yet finished. A segment's offset is *held* from the
moment its stream's session gets it until the stream ended and every event of the stream was handed to the
sink; dead letters and skipped records finish at once. So the commit never passes the first segment of an open
stream: after a crash, open streams replay from their start through fresh sessions, which find the same
utterances (deterministic ids). Streams that ended with all their events out, but lie after the commit point,
are named in the commit's metadata and skipped on replay.

Pure bookkeeping, thread-safe: unit-tested without a broker (tests/test_commits.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from emostream.ingest.offsets import OffsetTracker
from emostream.sinks.base import Sink

MAX_ENDED_IN_METADATA = 40  # ended streams named per partition in the commit metadata (Kafka allows ~4 KB)


@dataclass(frozen=True)
class Held:
    """A segment's offset, held until its stream ended and every event of the stream was sent."""

    tp: TopicPartition
    offset: int
    start: float  # stream seconds covered by the segment
    end: float
    sent_ms: int  # producer wall clock of the segment, for end-to-end latency


class Committer(Protocol):
    """Where offsets are committed: a KafkaConsumer in the job's group, or a fake in tests."""

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None: ...

    def committed(self, partition: TopicPartition, metadata: bool = False) -> OffsetAndMetadata | int | None: ...

    def close(self) -> None: ...


def ended_before_commit(committer: Committer, partitions: Iterable[TopicPartition]) -> set[str]:
    """Streams that ended, with all their events sent, after the last commit point (from its metadata)."""
    skip: set[str] = set()
    for tp in partitions:
        committed = committer.committed(tp, metadata=True)
        if isinstance(committed, OffsetAndMetadata) and committed.metadata:
            skip.update(json.loads(committed.metadata).get("ended", []))
    return skip


class CommitLedger:
    def __init__(self, skip: set[str] | None = None) -> None:
        self.skip = skip or set()  # streams whose events were all sent before a crash: finished as they are read
        self._offsets = OffsetTracker()
        self._held: dict[str, deque[Held]] = defaultdict(deque)  # per open stream, in seq order
        self._ended: dict[TopicPartition, dict[str, int]] = defaultdict(dict)  # ended stream -> its last offset
        self._lock = threading.Lock()

    def read(self, tp: TopicPartition, offset: int) -> None:
        """A record was read: its offset is in flight until finished, held and delivered."""
        with self._lock:
            self._offsets.add(tp, offset)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        """A record needs nothing more (dead-lettered, or its stream was skipped)."""
        with self._lock:
            self._offsets.done(tp, offset)

    def hold(self, stream_id: str, held: Held) -> None:
        """A segment went to its stream's session: held until the stream's events are out."""
        with self._lock:
            self._held[stream_id].append(held)

    def release(self, stream_id: str) -> list[Held]:
        """The stream ended: its held segments, to be delivered with its last events."""
        with self._lock:
            return list(self._held.pop(stream_id, ()))

    def delivered(self, stream_id: str, released: list[Held], ended: bool) -> None:
        """The events behind `released` were handed to the sink: their offsets are finished."""
        with self._lock:
            for held in released:
                self._offsets.done(held.tp, held.offset)
                if ended:
                    self._ended[held.tp][stream_id] = max(self._ended[held.tp].get(stream_id, -1), held.offset)

    def open_streams(self) -> int:
        with self._lock:
            return len(self._held)

    def sent_at(self, stream_id: str, end: float) -> float:
        """Wall-clock time at which the stream's media reached `end` (from the sending time of its segment)."""
        with self._lock:
            for held in reversed(self._held.get(stream_id, ())):
                if held.start <= end <= held.end + 1e-6:
                    return held.sent_ms / 1000 - (held.end - end)
        return time.time()

    def commit_points(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Per partition: the offset to commit and, as metadata, the ended streams that lie after it."""
        with self._lock:
            points = self._offsets.commit_points()
            out = {}
            for tp, point in points.items():
                ended = self._ended[tp]
                for stream in [s for s, last in ended.items() if last < point]:
                    del ended[stream]  # wholly before the commit: never replayed
                names = sorted(ended, key=ended.__getitem__)[-MAX_ENDED_IN_METADATA:]
                out[tp] = OffsetAndMetadata(point, json.dumps({"ended": names}) if names else "", -1)
            return out


def commit(ledger: CommitLedger, sink: Sink, committer: Committer) -> dict[TopicPartition, OffsetAndMetadata]:
    """Commit what may be committed: the sink is flushed first, and a failed flush (SinkError) commits nothing.

    The points are taken before the flush: an offset is finished only after its events were handed to the sink,
    so the flush covers every event behind them."""
    points = ledger.commit_points()
    if points:
        sink.flush()
        committer.commit(points)
    return points
