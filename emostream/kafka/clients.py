"""kafka-python clients built from the settings, so every part talks to Kafka the same way."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.producer.future import FutureRecordMetadata

from emostream.kafka.header_names import keep_undecodable_header_names
from emostream.settings import KafkaSettings

log = logging.getLogger(__name__)

# Room for the record batch and headers around a value of max_message_bytes.
REQUEST_OVERHEAD_BYTES = 64 * 1024


def producer(kafka: KafkaSettings, **options: Any) -> KafkaProducer:
    return KafkaProducer(
        **kafka.client_options(),
        acks="all",  # a segment or event counts as sent once every in-sync replica has it
        linger_ms=5,  # small batches: latency matters more than throughput here
        max_request_size=kafka.max_message_bytes + REQUEST_OVERHEAD_BYTES,
        **options,
    )


Label = TypeVar("Label")


class CheckedSends(Generic[Label]):
    """A producer's sends, each checked after the next flush.

    `KafkaProducer.flush` returns when every send has finished, delivered or not, so a caller that moves on after
    a flush (a commit, a publish report) needs each send's result: `flush` returns the failed ones with the label
    the caller gave each send (a segment's seq, a topic). Safe to send from several threads.
    """

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self._pending: list[tuple[Label, FutureRecordMetadata]] = []
        self._lock = threading.Lock()

    def send(self, label: Label, topic: str, key: bytes | None, value: bytes, **options: Any) -> None:
        """Queue a record; raises KafkaError when the producer refuses it at once (too large, buffer full)."""
        future = self.producer.send(topic, key=key, value=value, **options)
        with self._lock:
            self._pending.append((label, future))

    def flush(self) -> tuple[int, list[tuple[Label, Exception]]]:
        """Wait for every send since the last flush: (how many there were, the failed ones and their errors)."""
        with self._lock:
            pending, self._pending = self._pending, []
        self.producer.flush()
        return len(pending), [(label, future.exception) for label, future in pending if future.failed()]


def consumer(kafka: KafkaSettings, topics: Iterable[str] = (), group_id: str | None = None,
             **options: Any) -> KafkaConsumer:
    settings: dict[str, Any] = {
        **kafka.client_options(),
        "group_id": group_id,
        "enable_auto_commit": False,  # offsets are committed only once their work is done
        "auto_offset_reset": "earliest",
        # Short session and heartbeat: a group join takes ~3 s instead of ~20 s on Tansu.
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        # A fetch returns after at most 50 ms even when little data is waiting (default 500 ms):
        # live segments should not sit in the broker.
        "fetch_max_wait_ms": 50,
        "max_partition_fetch_bytes": kafka.max_message_bytes + REQUEST_OVERHEAD_BYTES,
        "fetch_max_bytes": max(52_428_800, kafka.max_message_bytes + REQUEST_OVERHEAD_BYTES),
    }
    settings.update(options)
    keep_undecodable_header_names()  # a bad header name must not stop the consumer at its record
    return KafkaConsumer(*topics, **settings)


def admin(kafka: KafkaSettings) -> KafkaAdminClient:
    return KafkaAdminClient(**kafka.client_options())


def ensure_topics(kafka: KafkaSettings, names: Iterable[str] | None = None) -> list[str]:
    """Create the media, emotions and dead-letter topics (or `names`) if missing; returns those created."""
    wanted = list(names) if names is not None else [kafka.media_topic, kafka.emotions_topic, kafka.deadletter_topic]
    client = admin(kafka)
    try:
        existing = set(client.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            try:
                client.create_topics([NewTopic(name, kafka.partitions, 1) for name in missing])
            except TopicAlreadyExistsError:
                pass  # created meanwhile by another process
        return missing
    finally:
        client.close()


def wait_until_ready(kafka: KafkaSettings, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Block until the broker answers a metadata request, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    host, _, port = kafka.client_options()["bootstrap_servers"][0].rpartition(":")
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the broker at {kafka.bootstrap_servers} exited while starting")
        try:
            # A plain TCP probe first: kafka-python logs every refused connection loudly.
            socket.create_connection((host, int(port)), timeout=1).close()
            client = KafkaAdminClient(**kafka.client_options(), request_timeout_ms=2000)
            client.list_topics()
            client.close()
            return
        except (KafkaError, OSError) as error:
            last_error = error
            time.sleep(0.2)
    raise TimeoutError(f"no Kafka broker answered at {kafka.bootstrap_servers} within {timeout:.0f} s ({last_error})")
