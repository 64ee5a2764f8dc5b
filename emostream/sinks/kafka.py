"""The default sink: events to the emotions topic, dead letters to the dead-letter topic (keyed by stream id)."""

from __future__ import annotations

from kafka import KafkaProducer
from kafka.errors import KafkaError

from emostream.contracts import DeadLetterEvent, UtteranceEmotionEvent
from emostream.kafka.clients import CheckedSends
from emostream.kafka.clients import producer as make_producer
from emostream.settings import KafkaSettings
from emostream.sinks.base import SinkError


class KafkaSink:
    def __init__(self, kafka: KafkaSettings, producer: KafkaProducer | None = None) -> None:
        self.kafka = kafka
        self.producer = producer or make_producer(kafka)
        self.sends: CheckedSends[str] = CheckedSends(self.producer)  # labelled by topic

    def send(self, event: UtteranceEmotionEvent) -> None:
        self._send(self.kafka.emotions_topic, event.stream_id, event.model_dump_json().encode())

    def dead_letter(self, event: DeadLetterEvent) -> None:
        self._send(self.kafka.deadletter_topic, event.key, event.model_dump_json().encode())

    def flush(self) -> None:
        """Each send's result is checked, so a failed one stops the commit behind it."""
        sent, failed = self.sends.flush()
        if failed:
            topic, error = failed[0]
            raise SinkError(f"{len(failed)} of {sent} messages were not delivered to Kafka, the first to {topic}: {error!r}")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.producer.close()

    def _send(self, topic: str, key: str | None, value: bytes) -> None:
        try:
            self.sends.send(topic, topic, key.encode() if key else None, value)
        except KafkaError as error:  # refused before it was queued (too large, buffer full past max_block_ms)
            raise SinkError(f"Kafka refused a message for {topic}: {error}") from error
