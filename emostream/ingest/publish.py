"""Publish a media file to the media topic as a stream of self-contained segments."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaProducer

from emostream.contracts import SegmentHeaders
from emostream.ingest.segmenter import MediaError, MediaSegment, probe, segment_file
from emostream.kafka.clients import producer as make_producer
from emostream.settings import Settings


@dataclass(frozen=True)
class PublishReport:
    stream_id: str
    segments: int  # media segments sent (the end-of-stream marker not counted)
    media_seconds: float
    bytes: int
    wall_seconds: float


def segment_headers(stream_id: str, segment: MediaSegment, channels: tuple[str, ...] | None,
                    end_of_stream: bool = False) -> SegmentHeaders:
    return SegmentHeaders(
        stream_id=stream_id, seq=segment.seq, start=segment.start, duration=segment.duration,
        timestamp_offset=segment.timestamp_offset, content_type=segment.content_type,
        channels=channels if segment.audio_channels else None, end_of_stream=end_of_stream, sent_at=time.time(),
    )


def end_of_stream_headers(stream_id: str, seq: int, start: float) -> SegmentHeaders:
    """An empty end marker: `content_type` is required by the contract, any supported one does."""
    return SegmentHeaders(stream_id=stream_id, seq=seq, start=start, content_type="audio/wav",
                          end_of_stream=True, sent_at=time.time())


def publish(
    path: str | Path,
    stream_id: str,
    settings: Settings,
    realtime: bool = False,
    segment_seconds: float | None = None,
    channels: tuple[str, ...] | None = None,
    on_segment: Callable[[MediaSegment], None] | None = None,
    producer: KafkaProducer | None = None,
) -> PublishReport:
    """Send `path` to `settings.kafka.media_topic` keyed by `stream_id`, then an end-of-stream marker.

    `realtime` paces segments to the media clock, as a live source would send them.
    `channels` names the audio channels in order (e.g. ("agent", "customer")).
    Raises MediaError for unreadable input, a wrong channel map or an oversized segment.
    """
    info = probe(path)
    if channels is not None and info.has_audio and len(channels) != info.audio_channels:
        raise MediaError(
            f"{path}: --channels names {len(channels)} channels ({','.join(channels)}) "
            f"but the audio has {info.audio_channels}"
        )
    kafka = settings.kafka
    own_producer = producer is None
    producer = producer or make_producer(kafka)
    seconds = segment_seconds or settings.ingest.segment_seconds
    started = time.monotonic()
    sent = total_bytes = 0
    end = 0.0
    try:
        for segment in segment_file(path, seconds, settings.ingest.max_segment_seconds, info):
            if len(segment.payload) > kafka.max_message_bytes:
                raise MediaError(
                    f"{path}: segment {segment.seq} is {len(segment.payload)} bytes, over kafka.max_message_bytes "
                    f"({kafka.max_message_bytes}); use shorter --segment-seconds or raise the topic's limit"
                )
            if realtime:  # a live source has a segment only once its last sample was captured
                delay = started + segment.start + segment.duration - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            headers = segment_headers(stream_id, segment, channels)
            producer.send(kafka.media_topic, key=stream_id.encode(), value=segment.payload,
                          headers=headers.to_kafka())
            sent += 1
            total_bytes += len(segment.payload)
            end = max(end, segment.start + segment.duration)
            if on_segment is not None:
                on_segment(segment)
        marker = end_of_stream_headers(stream_id, sent, end)
        producer.send(kafka.media_topic, key=stream_id.encode(), value=b"", headers=marker.to_kafka())
        producer.flush()
    finally:
        if own_producer:
            producer.close()
    return PublishReport(stream_id=stream_id, segments=sent, media_seconds=end, bytes=total_bytes,
                         wall_seconds=time.monotonic() - started)
