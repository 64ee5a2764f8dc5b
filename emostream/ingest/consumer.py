"""Read the media topic and hand each stream's segments to a callback, in order.

Bad input never stops a stream: each problem becomes one event on the
dead-letter topic (reason, detail, topic/partition/offset) and the next good
segment goes on. An offset is committed only once its message and every
message before it on the partition was processed or dead-lettered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from emostream.contracts import DeadLetterEvent, DeadLetterReason, SourceCoordinates
from emostream.ingest.offsets import OffsetTracker
from emostream.ingest.ordering import Gap, Rejection, StreamOrderer
from emostream.ingest.records import MediaMessage, RecordRejection, dead_letter_event, decode_rejection, validate_record
from emostream.kafka.clients import consumer as make_consumer
from emostream.media.decode import DecodedSegment, DecodeError, decode_record
from emostream.settings import Settings
from emostream.sinks.kafka import KafkaSink

log = logging.getLogger(__name__)

SegmentHandler = Callable[[DecodedSegment], None]


@dataclass
class ConsumerStats:
    segments: int = 0  # handed to the callback (end markers included)
    dead_letters: dict[str, int] = field(default_factory=dict)  # by reason
    gaps: list[Gap] = field(default_factory=list)


class SegmentConsumer:
    """Consume the media topic in a consumer group; call `handle` per decoded segment, in seq order."""

    def __init__(self, settings: Settings, handle: SegmentHandler, group_id: str | None = None,
                 on_gap: Callable[[Gap], None] | None = None) -> None:
        self.settings = settings
        self.handle = handle
        self.on_gap = on_gap
        self.stats = ConsumerStats()
        ingest = settings.ingest
        self.orderer: StreamOrderer[MediaMessage] = StreamOrderer(
            ingest.reorder_buffer, ingest.gap_timeout_seconds, ingest.stream_idle_seconds)
        self.offsets = OffsetTracker()
        self._stream_partition: dict[str, TopicPartition] = {}
        kafka = settings.kafka
        self.consumer = make_consumer(kafka, group_id=group_id or kafka.group_id)
        self.consumer.subscribe([kafka.media_topic], listener=_Rebalance(self))
        self.sink = KafkaSink(kafka)  # dead letters

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, until: Callable[[], bool] | None = None,
            poll_ms: int = 200) -> ConsumerStats:
        """Poll until `stop` is set or `until()` is true."""
        stop = stop or threading.Event()
        while not stop.is_set() and not (until and until()):
            self.poll_once(poll_ms)
        return self.stats

    def poll_once(self, timeout_ms: int = 200) -> None:
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        for records in batches.values():
            for record in records:
                self._accept(record)
        self._apply(self.orderer.tick())
        self.commit()

    def commit(self) -> None:
        points = self.offsets.commit_points()
        if not points:
            return
        self.sink.flush()  # dead letters are out before the offsets that produced them move on
        self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in points.items()})

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.consumer.close()
            self.sink.close()

    # -- one record ---------------------------------------------------------------------------

    def _accept(self, record: ConsumerRecord) -> None:
        tp = TopicPartition(record.topic, record.partition)
        self.offsets.add(tp, record.offset)
        message = self._validate(record)
        if message is None:
            self.offsets.done(tp, record.offset)
            return
        self._stream_partition[message.headers.stream_id] = tp
        outcome = self.orderer.push(message.headers.stream_id, message.headers.seq, message,
                                    message.headers.end_of_stream, media_time=message.headers.start)
        if outcome.rejected is not None:
            self._dead_letter_message(message, outcome.rejected)
        self._apply(outcome)

    def _validate(self, record: ConsumerRecord) -> MediaMessage | None:
        checked = validate_record(record.topic, record.partition, record.offset, record.key, record.value,
                                  record.headers, self.settings.kafka.max_message_bytes)
        if isinstance(checked, RecordRejection):
            self._dead_letter(record, checked)
            return None
        return checked

    def _apply(self, outcome) -> None:  # type: ignore[no-untyped-def]
        for gap in outcome.gaps:
            log.warning("stream %r: segments %d…%d never came; moving on", gap.stream_id, gap.first_missing,
                        gap.next_present - 1)
            self.stats.gaps.append(gap)
            if self.on_gap is not None:
                self.on_gap(gap)
        for message, rejection in outcome.dropped:
            self._dead_letter_message(message, rejection)
        for message in outcome.released:
            self._process(message)
            if message.headers.end_of_stream:
                self._stream_partition.pop(message.headers.stream_id, None)

    def _process(self, message: MediaMessage) -> None:
        try:
            segment = decode_record(message.headers, message.payload, self.settings.ingest)
        except DecodeError as error:
            self._dead_letter_message(message, decode_rejection(error))
            return
        try:
            self.handle(segment)
            self.stats.segments += 1
        except Exception as error:  # a failing stage loses this segment, never the stream
            log.exception("stream %r seq %d: handler failed", message.headers.stream_id, message.headers.seq)
            self._dead_letter_message(message, Rejection(DeadLetterReason.PROCESSING_ERROR, f"{type(error).__name__}: {error}"))
            return
        self.offsets.done(TopicPartition(message.topic, message.partition), message.offset)

    # -- dead letters ---------------------------------------------------------------------------

    def _dead_letter_message(self, message: MediaMessage, rejection: Rejection) -> None:
        self._send_dead_letter(dead_letter_event(rejection, message.source, message.headers.stream_id, message.headers.seq,
                                                 message.headers.stream_id, len(message.payload)))
        self.offsets.done(TopicPartition(message.topic, message.partition), message.offset)

    def _dead_letter(self, record: ConsumerRecord, rejection: RecordRejection) -> None:
        self._send_dead_letter(dead_letter_event(
            rejection, SourceCoordinates(topic=record.topic, partition=record.partition, offset=record.offset),
            rejection.stream_id, rejection.seq, record.key.decode(errors="replace") if record.key else None,
            len(record.value or b"")))

    def _send_dead_letter(self, event: DeadLetterEvent) -> None:
        log.warning("dead letter %s at %s/%d/%d: %s", event.reason.value, event.source.topic,
                    event.source.partition, event.source.offset, event.detail)
        self.stats.dead_letters[event.reason.value] = self.stats.dead_letters.get(event.reason.value, 0) + 1
        self.sink.dead_letter(event)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: SegmentConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # No commit here (kafka-python runs this on its IO thread, where blocking calls are
        # refused): what is done was committed after the last poll, and the partitions' next
        # owner replays the rest from there.
        gone = set(revoked)
        streams = [s for s, tp in self.owner._stream_partition.items() if tp in gone]
        self.owner.orderer.forget(streams)
        for stream in streams:
            self.owner._stream_partition.pop(stream)
        self.owner.offsets.forget(list(revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass

