"""The default sink: events to the emotions topic, dead letters to the dead-letter topic (keyed by stream id)."""

from __future__ import annotations

import threading

from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from emostream.contracts import DeadLetterEvent, UtteranceEmotionEvent
from emostream.kafka.clients import producer as make_producer
from emostream.settings import KafkaSettings
from emostream.sinks.base import SinkError


class KafkaSink:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.producer = make_producer(kafka)
        self._pending: list[FutureRecordMetadata] = []  # sends since the last flush, checked by flush
        self._lock = threading.Lock()

    def send(self, event: UtteranceEmotionEvent) -> None:
        self._send(self.kafka.emotions_topic, event.stream_id, event.model_dump_json().encode())

    def dead_letter(self, event: DeadLetterEvent) -> None:
        self._send(self.kafka.deadletter_topic, event.key, event.model_dump_json().encode())

    def flush(self) -> None:
        """`KafkaProducer.flush` returns when every send has finished, delivered or not: each send's result is
        checked here, so a failed one stops the commit behind it."""
        with self._lock:
            pending, self._pending = self._pending, []
        self.producer.flush()
        failed = [future.exception for future in pending if future.failed()]
        if failed:
            raise SinkError(f"{len(failed)} of {len(pending)} messages were not delivered to Kafka: {failed[0]!r}")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.producer.close()

    def _send(self, topic: str, key: str | None, value: bytes) -> None:
        try:
            future = self.producer.send(topic, key=key.encode() if key else None, value=value)
        except KafkaError as error:  # refused before it was queued (too large, buffer full past max_block_ms)
            raise SinkError(f"Kafka refused a message for {topic}: {error}") from error
        with self._lock:
            self._pending.append(future)
