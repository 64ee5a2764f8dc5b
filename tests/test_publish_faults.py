"""`emostream publish` checks each send's result: a broker that goes away mid-publish, or a record the producer
refuses, is a PublishError naming the segment, never a report of a complete stream; the live job's sinks fail
their flush (a broker stopped, or paused past the delivery timeout; a full disk), and nothing is committed behind
them (22.7)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kafka.errors import MessageSizeTooLargeError
from kafka.future import Future

from emostream.ingest.publish import PublishError, publish
from emostream.kafka.broker import EmbeddedBroker, free_port
from emostream.kafka.clients import ensure_topics
from emostream.kafka.clients import producer as make_producer
from emostream.media.records import MediaRecord
from emostream.settings import load_settings
from emostream.sinks.kafka import KafkaSink

if TYPE_CHECKING:
    from emostream.live.commits import CommitLedger


def kafka_sink(broker: EmbeddedBroker, topic: str) -> KafkaSink:
    """A Kafka sink on `topic` whose producer gives up within seconds (delivery 5 s, requests 2 s, blocking 3 s)."""
    settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers, "emotions_topic": topic})
    ensure_topics(settings.kafka)
    return KafkaSink(settings.kafka, make_producer(settings.kafka, delivery_timeout_ms=5000, request_timeout_ms=2000,
                                                   max_block_ms=3000))


def ledger_holding(stream: str) -> CommitLedger:
    """A commit ledger that has read offset 0 of media/0 and holds it for `stream`."""
    from kafka import TopicPartition

    from emostream.live.commits import CommitLedger, Held

    tp = TopicPartition("media", 0)
    ledger = CommitLedger()
    ledger.read(tp, 0)
    ledger.hold(stream, Held(tp, 0, 0.0, 1.0, 0))
    return ledger


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
    from emostream.live.commits import commit
    from emostream.sinks import SinkError
    from tests.test_commits import FakeCommitter, event

    with EmbeddedBroker(free_port(), tmp_path / "broker") as broker:
        sink = kafka_sink(broker, "emotions-gone")
        sink.send(event("call-11", 0.0))
        sink.flush()  # delivered while the broker runs
        broker.stop()
        ledger, committer = ledger_holding("call-11"), FakeCommitter([])
        sink.send(event("call-11", 1.0))
        ledger.delivered("call-11", ledger.release("call-11"), ended=True)
        with pytest.raises(SinkError, match="not delivered to Kafka"):
            commit(ledger, sink, committer)
        assert committer.commits == []
        sink.producer.close(timeout=1)


@pytest.mark.broker
def test_the_kafka_sink_fails_its_flush_when_the_broker_is_paused_past_the_delivery_timeout(tmp_path: Path) -> None:
    """A broker that hangs (SIGSTOP: connections stay open, nothing answers) instead of going away: the flush
    neither hangs nor passes, and nothing is committed behind it."""
    from emostream.live.commits import commit
    from emostream.sinks import SinkError
    from tests.test_commits import FakeCommitter, event

    with EmbeddedBroker(free_port(), tmp_path / "broker") as broker:
        sink = kafka_sink(broker, "emotions-paused")
        sink.send(event("call-12", 0.0))
        sink.flush()  # delivered while the broker answers
        ledger, committer = ledger_holding("call-12"), FakeCommitter([])
        pid = broker.state().pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        outcome: list[BaseException | None] = []

        def commit_behind_the_sink() -> None:
            try:
                sink.send(event("call-12", 1.0))
                ledger.delivered("call-12", ledger.release("call-12"), ended=True)
                commit(ledger, sink, committer)
                outcome.append(None)
            except BaseException as error:  # noqa: BLE001 -- handed to the test thread
                outcome.append(error)

        try:
            worker = threading.Thread(target=commit_behind_the_sink, daemon=True)
            worker.start()
            worker.join(120)  # a deadlock breaker, not a speed check: the delivery timeout is 5 s
            assert not worker.is_alive(), "the sink's flush hung on the paused broker"
        finally:
            os.kill(pid, signal.SIGCONT)
        assert len(outcome) == 1 and isinstance(outcome[0], SinkError), outcome
        assert "not delivered to Kafka" in str(outcome[0]) and committer.commits == []
        sink.producer.close(timeout=1)


def test_a_file_sink_on_a_full_disk_fails_its_flush_and_nothing_is_committed() -> None:
    """/dev/full refuses every write with ENOSPC, as a full (or write-denied) volume does."""
    from emostream.live.commits import commit
    from emostream.sinks import SinkError
    from emostream.sinks.jsonl import JsonlSink
    from tests.test_commits import FakeCommitter, event

    sink = JsonlSink("/dev/full")
    ledger, committer = ledger_holding("call-13"), FakeCommitter([])
    sink.send(event("call-13", 0.0))  # buffered: the disk is met at the flush
    ledger.delivered("call-13", ledger.release("call-13"), ended=True)
    with pytest.raises(SinkError, match="cannot write events to /dev/full: .*No space left on device"):
        commit(ledger, sink, committer)
    assert committer.commits == []
    with pytest.raises(SinkError, match="cannot write events to /dev/full"):  # not the OSError of the buffered write
        sink.close()
