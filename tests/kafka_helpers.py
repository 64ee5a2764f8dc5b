"""Test helpers that read back what went through the broker."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable

from emostream.ingest.consumer import ConsumerStats, SegmentConsumer
from emostream.kafka.clients import consumer
from emostream.media.decode import DecodedSegment
from emostream.settings import Settings


def consume_streams(settings: Settings, streams: set[str], timeout: float = 60.0
                    ) -> tuple[dict[str, list[DecodedSegment]], ConsumerStats]:
    """Run a SegmentConsumer until every stream in `streams` has ended; segments grouped by stream."""
    received, stats = consume_until(
        settings, lambda got: streams <= {s.stream_id for s in got if s.end_of_stream}, timeout)
    by_stream: dict[str, list[DecodedSegment]] = defaultdict(list)
    for segment in received:
        by_stream[segment.stream_id].append(segment)
    return dict(by_stream), stats


def consume_until(settings: Settings, done: Callable[[list[DecodedSegment]], bool], timeout: float = 60.0
                  ) -> tuple[list[DecodedSegment], ConsumerStats]:
    """Run a SegmentConsumer until `done(received)` is true, then close it (committing its offsets)."""
    received: list[DecodedSegment] = []
    reader = SegmentConsumer(settings, received.append)
    deadline = time.monotonic() + timeout
    try:
        reader.run(until=lambda: done(received) or time.monotonic() > deadline)
    finally:
        reader.close()
    assert done(received), f"condition not met within {timeout} s; got seqs {[s.seq for s in received]}"
    return received, reader.stats


def read_topic(settings: Settings, topic: str, expect: int, timeout: float = 20.0) -> list[dict]:
    """The first `expect` JSON events of `topic` (fewer if the timeout passes)."""
    reader = consumer(settings.kafka, [topic], group_id=None)
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(events) < expect and time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=200).values():
                events.extend(json.loads(r.value) for r in records)
    finally:
        reader.close()
    return events
