"""`emostream publish` checks each send's result: a broker that goes away mid-publish, or a record the producer
refuses, is a PublishError naming the segment, never a report of a complete stream; the live job's Kafka sink
fails its flush, and nothing is committed behind it (22.7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kafka.errors import MessageSizeTooLargeError
from kafka.future import Future

from emostream.ingest.publish import PublishError, publish
from emostream.kafka.broker import EmbeddedBroker, free_port
from emostream.kafka.clients import ensure_topics
from emostream.kafka.clients import producer as make_producer
from emostream.media.records import MediaRecord
from emostream.settings import load_settings


class RefusingProducer:
    """Takes every send but fails the third after the flush, as kafka-python does when the broker rejects it."""

    def __init__(self) -> None:
        self.futures: list[Future] = []

    def send(self, topic: str, **message: Any) -> Future:
        self.futures.append(Future())
        return self.futures[-1]

    def flush(self) -> None:
        for i, future in enumerate(self.futures):
            if i == 2:
                future.failure(MessageSizeTooLargeError("the broker refused it"))
            else:
                future.success(None)

    def close(self) -> None:
        pass


def test_a_record_the_broker_refused_makes_publish_raise(librivox: list[Path]) -> None:
    with pytest.raises(PublishError, match=r"1 of \d+ records of stream 'call-9' were not delivered .* segment 2"):
        publish(librivox[0], "call-9", load_settings(), segment_seconds=1.0, producer=RefusingProducer())  # type: ignore[arg-type]


@pytest.mark.broker
def test_a_broker_stopped_mid_publish_makes_publish_raise(tmp_path: Path, librivox: list[Path]) -> None:
    with EmbeddedBroker(free_port(), tmp_path / "broker") as broker:
        settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers, "media_topic": "media-stopped"})
        ensure_topics(settings.kafka)
        producer = make_producer(settings.kafka, delivery_timeout_ms=5000, request_timeout_ms=2000, max_block_ms=3000)

        def stop_after_the_first(record: MediaRecord) -> None:
            if record.headers.seq == 0:
                producer.flush()  # the first segment is in; the rest meets no broker
                broker.stop()

        with pytest.raises(PublishError, match="stream 'call-10'"):
            publish(librivox[0], "call-10", settings, segment_seconds=1.0, on_segment=stop_after_the_first,
                    producer=producer)
        producer.close(timeout=1)


@pytest.mark.broker
def test_the_kafka_sink_fails_its_flush_when_the_broker_is_gone_and_nothing_is_committed(tmp_path: Path) -> None:
    """The producer side of the live job: events accepted while the broker is down fail the flush (SinkError),
    and the commit behind them does not happen."""
    from kafka import TopicPartition

    from emostream.live.commits import CommitLedger, Held, commit
    from emostream.sinks import SinkError
    from emostream.sinks.kafka import KafkaSink
    from tests.test_commits import FakeCommitter, event

    with EmbeddedBroker(free_port(), tmp_path / "broker") as broker:
        settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers, "emotions_topic": "emotions-gone"})
        ensure_topics(settings.kafka)
        sink = KafkaSink(settings.kafka, make_producer(settings.kafka, delivery_timeout_ms=5000, request_timeout_ms=2000,
                                                      max_block_ms=3000))
        sink.send(event("call-11", 0.0))
        sink.flush()  # delivered while the broker runs
        broker.stop()
        tp = TopicPartition("media", 0)
        ledger, log = CommitLedger(), []
        ledger.read(tp, 0)
        ledger.hold("call-11", Held(tp, 0, 0.0, 1.0, 0))
        sink.send(event("call-11", 1.0))
        ledger.delivered("call-11", ledger.release("call-11"), ended=True)
        committer = FakeCommitter(log)
        with pytest.raises(SinkError, match="not delivered to Kafka"):
            commit(ledger, sink, committer)
        assert committer.commits == []
        sink.producer.close(timeout=1)
