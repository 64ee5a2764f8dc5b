"""Which media offsets the live job may commit, and the commit itself (the delivery guarantee of `sinks.base`).

Per partition, the commit point is the lowest offset not yet finished. A segment's offset is *held* from the
moment its stream's session gets it until the stream ended and every event of the stream was handed to the
sink; dead letters and skipped records finish at once. So the commit never passes the first segment of an open
stream: after a crash, open streams replay from their start through fresh sessions, which find the same
utterances (deterministic ids).

Streams that ended (or were closed as idle) with all their events out, but have records after the commit
point, are named in the commit's metadata with their last record's offset: on replay, a named stream's records
up to that offset are skipped, and anything after it (an idle stream that resumed) is processed as the new
session it was. The metadata is bounded (`live.commit_metadata_bytes`, Kafka's `offset.metadata.max.bytes`):
a stream whose first record lies before the commit point *must* be named (replaying its tail alone would make
other utterances), so when it does not fit the commit point stays at its first record instead; a stream wholly
after the point may be left out, and is then replayed whole with the same utterance ids.

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

from emostream.contracts import SourceCoordinates
from emostream.ingest.offsets import OffsetTracker
from emostream.sinks.base import Sink

METADATA_BYTES = 4096  # Kafka's default offset.metadata.max.bytes
EMPTY_METADATA = '{"ended":{}}'


@dataclass(frozen=True)
class Held:
    """A segment's offset, held until its stream ended and every event of the stream was sent."""

    tp: TopicPartition
    offset: int
    start: float  # stream seconds covered by the segment
    end: float
    sent_ms: int  # producer wall clock of the segment, for end-to-end latency
    value_bytes: int = 0  # size of the record's value (for a dead letter naming it)

    @property
    def source(self) -> SourceCoordinates:
        return SourceCoordinates(topic=self.tp.topic, partition=self.tp.partition, offset=self.offset)


@dataclass
class _Ended:
    """A stream (on one partition) whose events are all out."""

    first: int | None  # offset of its first record; None: skipped on replay, so it began before the last commit
    last: int  # offset of its last record: replay skips the stream's records up to here


class Committer(Protocol):
    """Where offsets are committed: a KafkaConsumer in the job's group, or a fake in tests."""

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None: ...

    def committed(self, partition: TopicPartition, metadata: bool = False) -> OffsetAndMetadata | int | None: ...

    def close(self) -> None: ...


def ended_before_commit(committer: Committer, partitions: Iterable[TopicPartition]) -> dict[str, int]:
    """Streams whose events were all sent, with the offset up to which their records are skipped on replay."""
    skip: dict[str, int] = {}
    for tp in partitions:
        committed = committer.committed(tp, metadata=True)
        if isinstance(committed, OffsetAndMetadata) and committed.metadata:
            ended = json.loads(committed.metadata).get("ended")
            if isinstance(ended, dict):
                skip.update(ended)
    return skip


def _entry_bytes(stream_id: str, last: int) -> int:
    """Bytes a stream adds to the metadata: `"name":last,` (JSON escapes keep it ASCII: characters are bytes)."""
    return len(json.dumps(stream_id)) + len(str(last)) + 2


class CommitLedger:
    def __init__(self, skip: dict[str, int] | None = None, metadata_bytes: int = METADATA_BYTES) -> None:
        self.skip = skip or {}  # stream → last offset whose events were all sent before a crash
        self.metadata_bytes = metadata_bytes
        self._offsets = OffsetTracker()
        self._held: dict[str, deque[Held]] = defaultdict(deque)  # per open stream, in seq order
        self._ended: dict[TopicPartition, dict[str, _Ended]] = defaultdict(dict)
        self._lock = threading.Lock()

    def read(self, tp: TopicPartition, offset: int) -> None:
        """A record was read: its offset is in flight until finished, held and delivered."""
        with self._lock:
            self._offsets.add(tp, offset)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        """A record needs nothing more (dead-lettered)."""
        with self._lock:
            self._offsets.done(tp, offset)

    def skips(self, stream_id: str | None, tp: TopicPartition, offset: int) -> bool:
        """Whether a record read on replay belongs to a stream whose events were all sent before the crash; if so it
        is finished, and the stream stays named in the metadata until the commit passes its last skipped record."""
        last = self.skip.get(stream_id) if stream_id is not None else None
        if last is None or offset > last:
            return False
        with self._lock:
            self._offsets.done(tp, offset)
            self._ended[tp][stream_id] = _Ended(None, last)  # type: ignore[index]
        return True

    def hold(self, stream_id: str, held: Held) -> None:
        """A segment went to its stream's session: held until the stream's events are out."""
        with self._lock:
            self._held[stream_id].append(held)

    def release(self, stream_id: str, through: Held | None = None) -> list[Held]:
        """The stream ended (or its session was closed): its held segments up to `through` (default: all), to be
        delivered with its last events. Segments after `through` were held for the session that follows."""
        with self._lock:
            held = self._held.get(stream_id)
            if held is None:
                return []
            released = []
            while held and (through is None or held[0].offset <= through.offset):
                released.append(held.popleft())
            if not held:
                del self._held[stream_id]
            return released

    def delivered(self, stream_id: str, released: list[Held], ended: bool) -> None:
        """The events behind `released` were handed to the sink: their offsets are finished."""
        with self._lock:
            for held in released:
                self._offsets.done(held.tp, held.offset)
                if not ended:
                    continue
                known = self._ended[held.tp].get(stream_id)
                if known is None:
                    self._ended[held.tp][stream_id] = _Ended(held.offset, held.offset)
                else:  # an idle stream that resumed and closed again
                    first = None if known.first is None else min(known.first, held.offset)
                    self._ended[held.tp][stream_id] = _Ended(first, max(known.last, held.offset))

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

    def held_during(self, stream_id: str, start: float, end: float) -> list[Held]:
        """The stream's held segments that overlap `start`…`end` seconds (for dead letters naming their source)."""
        with self._lock:
            return [h for h in self._held.get(stream_id, ()) if h.start < end and h.end > start]

    def commit_points(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Per partition: the offset to commit and, as metadata, the ended streams with records after it.

        A partition whose must-name streams do not fit is left out (its last commit stands)."""
        with self._lock:
            out = {}
            for tp, point in self._offsets.commit_points().items():
                ended = self._ended[tp]
                named = self._named(ended, point)
                while isinstance(named, int):  # a stream that straddles the point did not fit: commit at its start
                    point = named
                    named = self._named(ended, point)
                if named is None:
                    continue
                for stream in [s for s, e in ended.items() if e.last < point]:
                    del ended[stream]  # wholly before the commit: never replayed
                metadata = json.dumps({"ended": named}, separators=(",", ":")) if named else ""
                out[tp] = OffsetAndMetadata(point, metadata, -1)
            return out

    def _named(self, ended: dict[str, _Ended], point: int) -> dict[str, int] | int | None:
        """The streams to name for a commit at `point`; or, when one that straddles the point does not fit, the
        lower point to try (its first record); or None when it began before the last commit (keep that commit)."""
        named: dict[str, int] = {}
        size = len(EMPTY_METADATA)
        # earliest first: the streams that straddle the point come before those wholly after it
        after = [(s, e) for s, e in ended.items() if e.last >= point]
        for stream, entry in sorted(after, key=lambda item: -1 if item[1].first is None else item[1].first):
            size += _entry_bytes(stream, entry.last)
            if size <= self.metadata_bytes:
                named[stream] = entry.last
            elif entry.first is None:
                return None
            elif entry.first < point:
                return entry.first
            else:  # it and every later stream start at or after the point: replayed whole, with the same ids
                break
        return named


def commit(ledger: CommitLedger, sink: Sink, committer: Committer) -> dict[TopicPartition, OffsetAndMetadata]:
    """Commit what may be committed: the sink is flushed first, and a failed flush (SinkError) commits nothing.

    The points are taken before the flush: an offset is finished only after its events were handed to the sink,
    so the flush covers every event behind them."""
    points = ledger.commit_points()
    if points:
        sink.flush()
        committer.commit(points)
    return points
