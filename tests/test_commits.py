"""The live job's commit bookkeeping and the sinks' delivery guarantee, without a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from emostream.contracts import (
    DeadLetterEvent,
    DeadLetterReason,
    ModelInfo,
    SourceCoordinates,
    Speaker,
    Timings,
    UtteranceEmotionEvent,
    now_utc,
    utterance_id,
)
from emostream.live.commits import CommitLedger, Held, commit, ended_before_commit
from emostream.settings import load_settings
from emostream.sinks import SINKS, SinkError, open_sink
from emostream.sinks.jsonl import JsonlSink

TP = TopicPartition("media", 0)


def held(offset: int) -> Held:
    return Held(TP, offset, start=float(offset), end=offset + 1.0, sent_ms=1000 * offset)


def event(stream: str, start: float) -> UtteranceEmotionEvent:
    return UtteranceEmotionEvent(
        stream_id=stream, utterance_id=utterance_id(stream, "agent", start), speaker=Speaker(id="agent"), start=start,
        end=start + 1, label="calm", probabilities={"calm": 1.0}, valence=0.1, arousal=-0.2, explanation="calm voice",
        model=ModelInfo(name="test", version="1"), timings=Timings(processing_seconds=0.1), produced_at=now_utc(),
    )


class FakeCommitter:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.log.append("commit")
        self.commits.append(offsets)

    def committed(self, partition: TopicPartition, metadata: bool = False) -> OffsetAndMetadata | None:
        return self.commits[-1].get(partition) if self.commits else None

    def close(self) -> None:
        pass


class RecordingSink:
    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log, self.fail = log, fail
        self.sent: list[UtteranceEmotionEvent] = []

    def send(self, event: UtteranceEmotionEvent) -> None:
        self.log.append("send")
        self.sent.append(event)

    def dead_letter(self, event: DeadLetterEvent) -> None:
        self.log.append("dead_letter")

    def flush(self) -> None:
        self.log.append("flush")
        if self.fail:
            raise SinkError("the disk is full")

    def close(self) -> None:
        pass


def read_segments(ledger: CommitLedger, stream: str, offsets: list[int]) -> None:
    for offset in offsets:
        ledger.read(TP, offset)
        ledger.hold(stream, held(offset))


def test_the_commit_point_waits_for_the_first_segment_of_an_open_stream() -> None:
    ledger = CommitLedger()
    read_segments(ledger, "a", [0, 2])  # two streams interleaved on one partition
    read_segments(ledger, "b", [1, 3])
    assert ledger.commit_points()[TP].offset == 0
    # b ends first: its events are out, yet a (still open) holds the commit at its first segment
    ledger.delivered("b", ledger.release("b"), ended=True)
    assert ledger.commit_points()[TP].offset == 0
    ledger.delivered("a", ledger.release("a"), ended=True)
    assert ledger.commit_points()[TP].offset == 4


def test_dead_letters_and_skipped_records_finish_at_once() -> None:
    ledger = CommitLedger(skip={"replayed"})
    ledger.read(TP, 0)
    ledger.finished(TP, 0)  # a dead letter
    ledger.read(TP, 1)
    assert ledger.commit_points()[TP].offset == 1
    ledger.finished(TP, 1)
    assert ledger.commit_points()[TP].offset == 2
    assert "replayed" in ledger.skip


def test_streams_that_ended_after_the_commit_point_are_named_in_the_metadata_and_skipped_on_replay() -> None:
    log: list[str] = []
    committer, sink = FakeCommitter(log), RecordingSink(log)
    ledger = CommitLedger()
    read_segments(ledger, "long", [0])
    read_segments(ledger, "short", [1, 2])
    ledger.delivered("short", ledger.release("short"), ended=True)  # ended behind the still open "long"
    points = commit(ledger, sink, committer)
    assert points[TP].offset == 0
    assert json.loads(points[TP].metadata) == {"ended": ["short"]}
    assert ended_before_commit(committer, [TP]) == {"short"}  # a restart skips it
    ledger.delivered("long", ledger.release("long"), ended=True)
    points = commit(ledger, sink, committer)
    assert points[TP].offset == 3 and points[TP].metadata == ""  # both wholly before the commit now
    assert ended_before_commit(committer, [TP]) == set()


def test_a_commit_flushes_the_sink_first_and_a_failed_flush_commits_nothing() -> None:
    log: list[str] = []
    committer = FakeCommitter(log)
    ledger = CommitLedger()
    read_segments(ledger, "a", [0])
    sink = RecordingSink(log)
    sink.send(event("a", 0.0))
    ledger.delivered("a", ledger.release("a"), ended=True)
    commit(ledger, sink, committer)
    assert log == ["send", "flush", "commit"]

    read_segments(ledger, "b", [1])
    failing = RecordingSink(log, fail=True)
    failing.send(event("b", 0.0))
    ledger.delivered("b", ledger.release("b"), ended=True)
    with pytest.raises(SinkError, match="disk is full"):
        commit(ledger, failing, committer)
    assert len(committer.commits) == 1  # the offset behind the undelivered event was not committed


def test_the_jsonl_sink_is_one_file_and_one_registry_line(tmp_path: Path) -> None:
    assert set(SINKS) >= {"kafka", "jsonl", "parquet"}
    sink = open_sink("jsonl", load_settings(), tmp_path / "out" / "events.jsonl")
    assert isinstance(sink, JsonlSink)
    sink.send(event("call-7", 1.0))
    sink.dead_letter(DeadLetterEvent(reason=DeadLetterReason.CORRUPT_SEGMENT, detail="bad bytes",
                                     source=SourceCoordinates(topic="media", partition=0, offset=9), stream_id="call-7",
                                     seq=3, key="call-7", value_bytes=10, produced_at=now_utc()))
    sink.flush()
    lines = (tmp_path / "out" / "events.jsonl").read_text().splitlines()  # durable once flushed, before close
    assert UtteranceEmotionEvent.model_validate_json(lines[0]).utterance_id == utterance_id("call-7", "agent", 1.0)
    assert DeadLetterEvent.model_validate_json(lines[1]).reason is DeadLetterReason.CORRUPT_SEGMENT
    sink.close()
    with pytest.raises(ValueError, match="needs an output file"):
        open_sink("jsonl", load_settings())
    with pytest.raises(ValueError, match="unknown sink 'postgres'"):
        open_sink("postgres", load_settings())
