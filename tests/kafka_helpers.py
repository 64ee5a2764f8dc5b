"""Test helpers that read back what went through the broker."""

from __future__ import annotations

import json
import time
from collections import defaultdict

from emostream.ingest.consumer import ConsumerStats, SegmentConsumer
from emostream.kafka.clients import consumer
from emostream.perception.decode import DecodedSegment
from emostream.settings import Settings


def consume_streams(settings: Settings, streams: set[str], timeout: float = 60.0
                    ) -> tuple[dict[str, list[DecodedSegment]], ConsumerStats]:
    """Run a SegmentConsumer until every stream in `streams` has ended (or the timeout)."""
    received: dict[str, list[DecodedSegment]] = defaultdict(list)
    ended: set[str] = set()

    def handle(segment: DecodedSegment) -> None:
        received[segment.stream_id].append(segment)
        if segment.end_of_stream:
            ended.add(segment.stream_id)

    reader = SegmentConsumer(settings, handle)
    deadline = time.monotonic() + timeout
    try:
        reader.run(until=lambda: streams <= ended or time.monotonic() > deadline)
    finally:
        reader.close()
    assert streams <= ended, f"streams {streams - ended} did not end within {timeout} s; got {dict(received)}"
    return dict(received), reader.stats


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
