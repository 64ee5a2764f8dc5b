"""Put each stream's segments back in `seq` order, with bounded memory.

Kafka keeps one stream in order on its partition, but producers retry and
restart: segments can come twice, late or not at all. The orderer holds a
bounded number of early segments per stream, releases them as soon as the
missing ones arrive, declares a gap when one is still missing after
`gap_timeout` (or the buffer is full), and says why it rejects the rest.

Gaps are decided on the stream's own media clock (each push's `media_time`):
a missing segment is given up once the stream's later segments reach
`gap_timeout` seconds of media past the point where it went missing. That
depends only on the stream's records, so a replay decides the same, however
loaded the job is. Wall time (`clock`) is used only where nothing else moves:
a stream with a hole that sends nothing more is given up `gap_timeout` after
its last segment, once the caller says it has read everything there is
(`tick(caught_up=True)`), and idle streams are forgotten after `idle_timeout`.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from emostream.contracts import DeadLetterReason

T = TypeVar("T")

RECENT_SEQS = 1024  # delivered seqs remembered per stream to tell a duplicate from a late segment
ENDED_STREAMS = 10_000  # ended streams remembered to reject what comes after their end
OPEN_STREAMS = 10_000  # streams ordered at once; past it the least recently active one without a hole is forgotten


@dataclass(frozen=True)
class Gap:
    stream_id: str
    first_missing: int
    next_present: int  # segments first_missing … next_present-1 never came


@dataclass(frozen=True)
class Rejection:
    reason: DeadLetterReason
    detail: str


@dataclass
class Outcome(Generic[T]):
    released: list[T] = field(default_factory=list)  # in seq order, ready to process
    rejected: Rejection | None = None  # why the pushed item was not taken
    dropped: list[tuple[T, Rejection]] = field(default_factory=list)  # buffered items given up on
    gaps: list[Gap] = field(default_factory=list)


@dataclass
class _Stream(Generic[T]):
    next_seq: int
    last_activity: float  # wall clock of the last push
    media_clock: float = 0.0  # the latest media time pushed
    waiting_since: float | None = None  # media clock when the segment at next_seq started to be missing
    buffer: dict[int, tuple[T, bool]] = field(default_factory=dict)  # seq → (item, end_of_stream)
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_SEQS))


class StreamOrderer(Generic[T]):
    def __init__(self, buffer_limit: int = 32, gap_timeout: float = 10.0, idle_timeout: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.buffer_limit = buffer_limit
        self.gap_timeout = gap_timeout
        self.idle_timeout = idle_timeout
        self.clock = clock
        self._streams: OrderedDict[str, _Stream[T]] = OrderedDict()  # least recently active first
        self._ended: OrderedDict[str, tuple[int, float]] = OrderedDict()  # stream → (final seq, ended at)

    @property
    def buffered(self) -> int:
        return sum(len(s.buffer) for s in self._streams.values())

    def streams(self) -> list[str]:
        return list(self._streams)

    def push(self, stream_id: str, seq: int, item: T, end_of_stream: bool = False,
             media_time: float | None = None) -> Outcome[T]:
        """`media_time`: where the item lies on the stream's media clock (a segment's start); without it, gaps are
        declared only by `tick` or a full buffer."""
        now = self.clock()
        outcome: Outcome[T] = Outcome()
        if stream_id in self._ended:
            final = self._ended[stream_id][0]
            outcome.rejected = Rejection(DeadLetterReason.AFTER_END_OF_STREAM,
                                         f"stream {stream_id!r} ended at seq {final}; got seq {seq}")
            return outcome
        # A stream starts at the first seq seen (a consumer may join mid-stream).
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = _Stream(next_seq=seq, last_activity=now)
            self._bound_streams()
        self._streams.move_to_end(stream_id)
        stream.last_activity = now
        if seq in stream.buffer or seq in stream.recent:
            outcome.rejected = Rejection(DeadLetterReason.DUPLICATE_SEQ,
                                         f"stream {stream_id!r} seq {seq} was already received")
            return outcome
        if seq < stream.next_seq:
            outcome.rejected = Rejection(DeadLetterReason.TOO_LATE,
                                         f"stream {stream_id!r} seq {seq} came after the stream moved on to seq {stream.next_seq}")
            return outcome
        if media_time is not None:
            stream.media_clock = max(stream.media_clock, media_time)
        stream.buffer[seq] = (item, end_of_stream)
        if len(stream.buffer) > self.buffer_limit:
            self._skip_gap(stream_id, stream, outcome)
        self._release(stream_id, stream, outcome, now)
        if (stream_id in self._streams and stream.waiting_since is not None
                and stream.media_clock - stream.waiting_since >= self.gap_timeout):
            self._skip_gap(stream_id, stream, outcome)  # the stream moved on `gap_timeout` of media without it
            self._release(stream_id, stream, outcome, now)
        return outcome

    def tick(self, caught_up: bool = True) -> Outcome[T]:
        """Give up holes in streams that sent nothing for `gap_timeout` (wall clock) while the caller has read
        everything there is (`caught_up`: a slow job is not a quiet stream), or for `idle_timeout` in any case;
        forget idle streams."""
        now = self.clock()
        outcome: Outcome[T] = Outcome()
        for stream_id, stream in list(self._streams.items()):
            quiet = now - stream.last_activity
            if stream.buffer and (quiet >= self.idle_timeout or (caught_up and quiet >= self.gap_timeout)):
                self._skip_gap(stream_id, stream, outcome)
                self._release(stream_id, stream, outcome, now)
            elif not stream.buffer and quiet >= self.idle_timeout:
                del self._streams[stream_id]
        while self._ended and now - next(iter(self._ended.values()))[1] >= self.idle_timeout:
            self._ended.popitem(last=False)
        return outcome

    def forget(self, stream_ids: list[str]) -> None:
        """Drop streams whose partition moved to another consumer."""
        for stream_id in stream_ids:
            self._streams.pop(stream_id, None)

    def _bound_streams(self) -> None:
        """Past OPEN_STREAMS, forget the least recently active streams with nothing buffered (one that sends again
        starts over at its next seq, as a stream joined mid-way does)."""
        excess = len(self._streams) - OPEN_STREAMS
        for stream_id in [s for s, stream in self._streams.items() if not stream.buffer][:max(excess, 0)]:
            del self._streams[stream_id]

    def _skip_gap(self, stream_id: str, stream: _Stream[T], outcome: Outcome[T]) -> None:
        present = min(stream.buffer)
        if present > stream.next_seq:
            outcome.gaps.append(Gap(stream_id, stream.next_seq, present))
            stream.next_seq = present

    def _release(self, stream_id: str, stream: _Stream[T], outcome: Outcome[T], now: float) -> None:
        progressed = False
        while stream.next_seq in stream.buffer:
            item, end_of_stream = stream.buffer.pop(stream.next_seq)
            stream.recent.append(stream.next_seq)
            outcome.released.append(item)
            progressed = True
            if end_of_stream:
                for seq in sorted(stream.buffer):
                    late, _ = stream.buffer.pop(seq)
                    outcome.dropped.append((late, Rejection(
                        DeadLetterReason.AFTER_END_OF_STREAM,
                        f"stream {stream_id!r} ended at seq {stream.next_seq}; got seq {seq}")))
                self._end(stream_id, stream.next_seq, now)
                return
            stream.next_seq += 1
        if not stream.buffer:
            stream.waiting_since = None
        elif progressed or stream.waiting_since is None:
            stream.waiting_since = stream.media_clock

    def _end(self, stream_id: str, final_seq: int, now: float) -> None:
        del self._streams[stream_id]
        self._ended[stream_id] = (final_seq, now)
        while len(self._ended) > ENDED_STREAMS:
            self._ended.popitem(last=False)
