"""Publish a media file to the media topic as a stream of self-contained segments.

`KafkaProducer.flush` returns when every send has finished, delivered or not: `publish` checks each send's result
and raises `PublishError` naming the first segment the broker did not take.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import KafkaError

from emostream.kafka.clients import CheckedSends
from emostream.kafka.clients import producer as make_producer
from emostream.media.records import MediaRecord, media_records
from emostream.media.segmenter import MediaError
from emostream.settings import Settings


class PublishError(RuntimeError):
    """Records of the stream were not delivered to the media topic: the stream there is incomplete."""


@dataclass(frozen=True)
class PublishReport:
    stream_id: str
    segments: int  # media segments sent (the end-of-stream marker not counted)
    media_seconds: float
    bytes: int
    wall_seconds: float


def publish(
    path: str | Path,
    stream_id: str,
    settings: Settings,
    realtime: bool = False,
    segment_seconds: float | None = None,
    channels: tuple[str, ...] | None = None,
    on_segment: Callable[[MediaRecord], None] | None = None,
    producer: KafkaProducer | None = None,
) -> PublishReport:
    """Send `path` to `settings.kafka.media_topic` keyed by `stream_id`, then an end-of-stream marker.

    `realtime` paces segments to the media clock, as a live source would send them.
    `channels` names the audio channels in order (e.g. ("agent", "customer")).
    Raises MediaError for unreadable input, a wrong channel map or an oversized segment, and PublishError when
    the producer or the broker refused a record.
    """
    kafka = settings.kafka
    own_producer = producer is None
    producer = producer or make_producer(kafka)
    started = time.monotonic()
    sent = total_bytes = 0
    end = 0.0
    sends: CheckedSends[int] = CheckedSends(producer)  # labelled by the record's seq
    try:
        for record in media_records(path, stream_id, settings.ingest, channels, segment_seconds):
            if record.payload:
                if len(record.payload) > kafka.max_message_bytes:
                    raise MediaError(
                        f"{path}: segment {record.headers.seq} is {len(record.payload)} bytes, over kafka.max_message_bytes "
                        f"({kafka.max_message_bytes}); use shorter --segment-seconds or raise the topic's limit"
                    )
                if realtime:  # a live source has a segment only once its last sample was captured
                    delay = started + record.end - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            headers = record.headers.model_copy(update={"sent_at": time.time()})
            try:
                sends.send(record.headers.seq, kafka.media_topic, stream_id.encode(), record.payload,
                           headers=headers.to_kafka())
            except KafkaError as error:  # refused before it was queued (too large, buffer full past max_block_ms)
                raise PublishError(f"{path}: the producer refused segment {record.headers.seq} of stream {stream_id!r} "
                                   f"for {kafka.media_topic}: {error!r}") from error
            if record.payload:
                sent += 1
                total_bytes += len(record.payload)
                end = max(end, record.end)
                if on_segment is not None:
                    on_segment(record)
        records, failed = sends.flush()
        if failed:
            seq, error = failed[0]
            raise PublishError(
                f"{path}: {len(failed)} of {records} records of stream {stream_id!r} were not delivered to "
                f"{kafka.media_topic} at {kafka.bootstrap_servers}, the first segment {seq}: {error!r}. Publish the file "
                f"again once the broker is reachable (under a new stream id: the job has seen part of this one)")
    finally:
        if own_producer:
            producer.close()
    return PublishReport(stream_id=stream_id, segments=sent, media_seconds=end, bytes=total_bytes,
                         wall_seconds=time.monotonic() - started)
