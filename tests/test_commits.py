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
    ledger = CommitLedger(skip={"replayed": 1})
    ledger.read(TP, 0)
    ledger.finished(TP, 0)  # a dead letter
    ledger.read(TP, 1)
    assert ledger.commit_points()[TP].offset == 1
    assert ledger.skips("replayed", TP, 1)
    assert ledger.commit_points()[TP].offset == 2


def test_streams_that_ended_after_the_commit_point_are_named_in_the_metadata_and_skipped_on_replay() -> None:
    log: list[str] = []
    committer, sink = FakeCommitter(log), RecordingSink(log)
    ledger = CommitLedger()
    read_segments(ledger, "long", [0])
    read_segments(ledger, "short", [1, 2])
    ledger.delivered("short", ledger.release("short"), ended=True)  # ended behind the still open "long"
    points = commit(ledger, sink, committer)
    assert points[TP].offset == 0
    assert json.loads(points[TP].metadata) == {"ended": {"short": 2}}
    assert ended_before_commit(committer, [TP]) == {"short": 2}  # a restart skips it, up to its last record
    ledger.delivered("long", ledger.release("long"), ended=True)
    points = commit(ledger, sink, committer)
    assert points[TP].offset == 3 and points[TP].metadata == ""  # both wholly before the commit now
    assert ended_before_commit(committer, [TP]) == {}


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


def replay(ledger: CommitLedger, point: int, records: list[tuple[str, int]]) -> tuple[CommitLedger, list[tuple[str, int]]]:
    """A restart from `ledger`'s commit: the records (stream, offset) at or after the point that are processed again."""
    committer = FakeCommitter([])
    commit(ledger, RecordingSink([]), committer)
    assert committer.commits[-1][TP].offset == point
    again = CommitLedger(skip=ended_before_commit(committer, [TP]))
    processed = []
    for stream, offset in records:
        if offset >= point:
            again.read(TP, offset)
            if not again.skips(stream, TP, offset):
                processed.append((stream, offset))
    return again, processed


def test_long_stream_ids_stay_within_the_metadata_limit_and_a_stream_that_straddles_the_commit_holds_it() -> None:
    """(22.5) Ids of 1 KB: the metadata stays under the limit; an ended stream whose first record lies before the
    commit point but does not fit keeps the commit at its first record, so a replay never sees its tail alone."""
    long = [f"{name}-" + "x" * 1000 for name in "abcdef"]
    records = [(long[0], 0), (long[1], 1), (long[2], 2), ("open", 3)] + [(s, 4 + i) for i, s in enumerate(long)]
    ledger = CommitLedger(metadata_bytes=2200)
    for stream, offset in records:
        ledger.read(TP, offset)
        ledger.hold(stream, held(offset))
    for stream in long:
        ledger.delivered(stream, ledger.release(stream), ended=True)
    # "open" holds the commit at 3; a, b, c straddle it (records before and after); only two ids fit in 2200 bytes
    points = ledger.commit_points()
    assert len(points[TP].metadata) <= 2200
    assert points[TP].offset == 2  # c did not fit: the commit stays at its first record
    assert set(json.loads(points[TP].metadata)["ended"]) == {long[0], long[1]}
    _, processed = replay(ledger, 2, records)
    replayed = {stream for stream, _ in processed}
    assert long[0] not in replayed and long[1] not in replayed
    assert [o for s, o in processed if s == long[2]] == [2, 6]  # c is replayed whole, from its first record
    for stream in long[3:]:  # wholly after the commit, not named: replayed whole (the same ids again)
        assert [o for s, o in processed if s == stream] == [4 + long.index(stream)]


@pytest.mark.parametrize("metadata_bytes", [4096, 400])
def test_many_short_streams_ending_behind_a_long_one_are_all_skipped_or_replayed_whole(metadata_bytes: int) -> None:
    """(22.5) Sixty short calls straddle the point held by a long one. The old `[-40:]` named the 40 that ended
    last and dropped the others: their tails were replayed alone. Each must be skipped, or replayed whole."""
    records = [(f"short-{i}", i) for i in range(60)] + [("long", 60)] + [(f"short-{i}", 61 + i) for i in range(60)]
    ledger = CommitLedger(metadata_bytes=metadata_bytes)
    for stream, offset in records:
        ledger.read(TP, offset)
        ledger.hold(stream, held(offset))
    for i in range(60):
        ledger.delivered(f"short-{i}", ledger.release(f"short-{i}"), ended=True)
    point = ledger.commit_points()[TP].offset
    assert point == 60 if metadata_bytes == 4096 else point < 60  # too small for all: the commit waits
    _, processed = replay(ledger, point, records)
    by_stream: dict[str, list[int]] = {}
    for stream, offset in processed:
        by_stream.setdefault(stream, []).append(offset)
    for i in range(60):
        assert by_stream.get(f"short-{i}") in (None, [i, 61 + i])
    assert by_stream["long"] == [60]


def test_an_idle_stream_that_resumed_is_skipped_only_up_to_its_idle_close() -> None:
    """(22.9) An idle flush closed "call" (its events out); it resumed; the job crashed: the replay skips the
    closed part only, and the resumed part is scored as the fresh session it was."""
    records = [("other", 0), ("call", 1), ("call", 2), ("call", 3), ("call", 4)]
    ledger = CommitLedger()
    for stream, offset in records[:3]:
        ledger.read(TP, offset)
        ledger.hold(stream, held(offset))
    ledger.delivered("call", ledger.release("call"), ended=True)  # the idle close
    for stream, offset in records[3:]:  # it resumes
        ledger.read(TP, offset)
        ledger.hold(stream, held(offset))
    again, processed = replay(ledger, 0, records)
    assert processed == [("other", 0), ("call", 3), ("call", 4)]
    # the replay's own commit keeps naming the skipped part while it lies after the point
    for stream, offset in processed:
        again.hold(stream, held(offset))
    again.delivered("call", again.release("call"), ended=False)
    assert json.loads(again.commit_points()[TP].metadata)["ended"] == {"call": 2}


def test_a_release_through_a_segment_leaves_the_later_ones_held() -> None:
    """A session closed at offset 1 (idle, or open too long) while offset 2 was already held for the next one."""
    ledger = CommitLedger()
    read_segments(ledger, "call", [0, 1, 2])
    assert [h.offset for h in ledger.release("call", through=held(1))] == [0, 1]
    assert [h.offset for h in ledger.release("call")] == [2]


def test_streams_skipped_on_replay_that_no_longer_fit_keep_the_last_commit() -> None:
    """(22.5) Skipped streams began before the last commit: the commit cannot wait at their first record, so when
    they do not all fit (a smaller limit than before) the partition keeps its last commit."""
    a, b = "a" * 150, "b" * 150

    def replayed(metadata_bytes: int) -> CommitLedger:
        ledger = CommitLedger(skip={a: 9, b: 10}, metadata_bytes=metadata_bytes)  # both have records up to 9 and 10
        for offset, stream in ((5, a), (6, b)):
            ledger.read(TP, offset)
            assert ledger.skips(stream, TP, offset)
        read_segments(ledger, "open", [7])  # holds the point at 7: a and b straddle it
        return ledger

    assert TP not in replayed(200).commit_points()
    points = replayed(4096).commit_points()
    assert points[TP].offset == 7 and json.loads(points[TP].metadata)["ended"] == {a: 9, b: 10}
