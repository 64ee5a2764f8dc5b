"""Each kind of bad input gives one dead-letter event, and the stream's next good segment still decodes."""

import time
from pathlib import Path

import pytest
from kafka import KafkaProducer

from emostream.ingest.consumer import SegmentConsumer
from emostream.ingest.ordering import Gap
from emostream.kafka.clients import producer
from emostream.media.decode import DecodedSegment
from emostream.media.records import end_of_stream_headers, segment_headers
from emostream.media.segmenter import MediaSegment, segment_file
from emostream.settings import Settings
from tests.kafka_helpers import consume_streams, read_topic

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def video_segments(wolfgang: Path) -> list[MediaSegment]:
    return list(segment_file(wolfgang, 2.0))[:3]


def send(out: KafkaProducer, settings: Settings, stream: str, value: bytes, headers: list[tuple[str, bytes]],
         key: str | None = None) -> None:
    out.send(settings.kafka.media_topic, key=(key or stream).encode(), value=value, headers=headers)


def good(segment: MediaSegment, stream: str, seq: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    headers = segment_headers(stream, segment, None).model_copy(update={"seq": seq})
    return segment.payload, headers.to_kafka()


def end(stream: str, seq: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    return b"", end_of_stream_headers(stream, seq, 100.0).to_kafka()


def headers_of(stream: str, seq: int, **changes: str) -> list[tuple[str, bytes]]:
    base = {"emostream-stream-id": stream, "emostream-seq": str(seq), "emostream-start": "0",
            "emostream-content-type": "video/mp2t", **changes}
    return [(name, value.encode()) for name, value in base.items() if value]


CASES = {
    # name: (reason, detail fragment, how to build the bad message from a good segment)
    "corrupt": ("corrupt_segment", "corrupt", lambda seg, s: (bytes(range(256)) * 40, headers_of(s, 1))),
    "truncated": ("truncated_segment", "decodes to", lambda seg, s: (seg.payload[: len(seg.payload) // 4], good(seg, s, 1)[1])),
    "unknown-content-type": ("unsupported_content_type", "unsupported content type 'video/x-flv'",
                             lambda seg, s: (seg.payload, headers_of(s, 1, **{"emostream-content-type": "video/x-flv"}))),
    "empty": ("empty_value", "empty value", lambda seg, s: (b"", headers_of(s, 1))),
    "missing-headers": ("bad_headers", "emostream-seq is missing",
                        lambda seg, s: (seg.payload, headers_of(s, 1, **{"emostream-seq": ""}))),
    "malformed-headers": ("bad_headers", "emostream-start = 'soon'",
                          lambda seg, s: (seg.payload, headers_of(s, 1, **{"emostream-start": "soon"}))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_segment_is_dead_lettered_and_the_stream_goes_on(
    settings: Settings, video_segments: list[MediaSegment], case: str
) -> None:
    reason, detail, build = CASES[case]
    stream = f"cam-{case}"
    out = producer(settings.kafka)
    send(out, settings, stream, *good(video_segments[0], stream, 0))
    send(out, settings, stream, *build(video_segments[1], stream))
    if reason in ("corrupt_segment", "truncated_segment"):
        next_seq = 2  # the bad segment took seq 1 in the stream's order
    else:
        next_seq = 1  # rejected before ordering: seq 1 is still expected
    send(out, settings, stream, *good(video_segments[2], stream, next_seq))
    send(out, settings, stream, *end(stream, next_seq + 1))
    out.flush()
    out.close()

    received, stats = consume_streams(settings, {stream})
    assert stats.dead_letters == {reason: 1}
    assert [s.seq for s in received[stream]] == [0, next_seq, next_seq + 1]
    assert len(received[stream][1].frames) == 72  # the next good segment decoded whole
    [event] = read_topic(settings, settings.kafka.deadletter_topic, expect=1)
    assert event["reason"] == reason and detail in event["detail"]
    assert event["source"]["topic"] == settings.kafka.media_topic and event["source"]["offset"] == 1
    assert event["value_bytes"] > 0 or reason == "empty_value"


def test_oversized_duplicate_and_too_late_segments(settings: Settings, video_segments: list[MediaSegment]) -> None:
    limit = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"max_message_bytes": 290_000}),
        "ingest": settings.ingest.model_copy(update={"gap_timeout_seconds": 1.0}),
    })
    received: list[DecodedSegment] = []
    reader = SegmentConsumer(limit, received.append)
    out = producer(limit.kafka)
    try:
        send(out, limit, "s", *good(video_segments[0], "s", 0))
        send(out, limit, "s", b"x" * 300_000, headers_of("s", 1))  # oversized
        send(out, limit, "s", *good(video_segments[1], "s", 1))
        send(out, limit, "s", *good(video_segments[1], "s", 1))  # duplicate
        send(out, limit, "s", *good(video_segments[2], "s", 3))  # seq 2 is missing: a gap after 1 s
        out.flush()
        deadline = time.monotonic() + 30
        reader.run(until=lambda: bool(reader.stats.gaps) or time.monotonic() > deadline)
        assert reader.stats.gaps == [Gap("s", 2, 3)]
        send(out, limit, "s", *good(video_segments[2], "s", 2))  # comes after the stream moved on: too late
        send(out, limit, "s", *end("s", 4))
        out.flush()
        reader.run(until=lambda: any(s.end_of_stream for s in received) or time.monotonic() > deadline)
    finally:
        out.close()
        reader.close()
    assert [s.seq for s in received] == [0, 1, 3, 4]
    assert reader.stats.dead_letters == {"oversized": 1, "duplicate_seq": 1, "too_late": 1}
    events = read_topic(limit, limit.kafka.deadletter_topic, expect=3)
    assert sorted((e["reason"], e["source"]["offset"]) for e in events) == [
        ("duplicate_seq", 3), ("oversized", 1), ("too_late", 5)]


def test_key_and_stream_id_must_agree(settings: Settings, video_segments: list[MediaSegment]) -> None:
    out = producer(settings.kafka)
    send(out, settings, "k", *good(video_segments[0], "k", 0), key="other")
    send(out, settings, "k", *good(video_segments[0], "k", 0))
    send(out, settings, "k", *end("k", 1))
    out.flush()
    out.close()
    received, stats = consume_streams(settings, {"k"})
    assert stats.dead_letters == {"bad_headers": 1}
    [event] = read_topic(settings, settings.kafka.deadletter_topic, expect=1)
    assert "message key 'other' differs from emostream-stream-id 'k'" in event["detail"]
