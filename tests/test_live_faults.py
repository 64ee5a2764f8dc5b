"""Faults in the live job's scoring and session calls, without Ray or a broker: the job's driver bookkeeping
(`LiveJob` builds it without either) with a fake scorer that raises or hangs, a recording sink and a fake
committer. What must hold: no offset is committed past an event that was neither sent nor dead-lettered, and
nothing hangs."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka import TopicPartition

from emostream.contracts import DeadLetterEvent, DeadLetterReason, UtteranceEmotionEvent
from emostream.live import serve_client
from emostream.live.commits import Held, commit
from emostream.live.job import LiveJob
from emostream.models.score import StreamContexts
from emostream.perception.utterance import UtteranceBundle
from emostream.settings import load_settings
from tests.model_helpers import random_bundle
from tests.test_commits import FakeCommitter, event

TP = TopicPartition("media", 0)


class Sink:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.sent: list[UtteranceEmotionEvent] = []
        self.dead: list[DeadLetterEvent] = []

    def send(self, event: UtteranceEmotionEvent) -> None:
        self.log.append("send")
        self.sent.append(event)

    def dead_letter(self, event: DeadLetterEvent) -> None:
        self.log.append("dead_letter")
        self.dead.append(event)

    def flush(self) -> None:
        self.log.append("flush")

    def close(self) -> None:
        pass


class Scorer:
    """Fails its first `failures` calls (raises, or hangs until released), then scores."""

    def __init__(self, failures: int, hang: bool = False) -> None:
        self.failures, self.hang = failures, hang
        self.calls = 0
        self.released = threading.Event()

    def score(self, bundles: list[UtteranceBundle], contexts: StreamContexts) -> tuple[list[dict[str, Any]], StreamContexts]:
        self.calls += 1
        if self.calls <= self.failures:
            if self.hang:
                self.released.wait()
            raise RuntimeError("the replica died")
        return [event(b.stream_id, b.start).model_dump(mode="json") for b in bundles], contexts

    def prepare(self, drafts: list[Any]) -> None:
        pass


def make_job(scorer: Scorer, log: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[LiveJob, Sink, FakeCommitter]:
    monkeypatch.setattr(serve_client, "RETRY_PAUSE", 0.01)
    settings = load_settings(live={"score_attempts": 2, "score_timeout_seconds": 0.5, "sink": "jsonl"})
    sink, committer = Sink(log), FakeCommitter(log)
    return LiveJob(settings, scorer, sink=sink, committer=committer), sink, committer  # type: ignore[arg-type]


def read(job: LiveJob, stream: str, offsets: list[int]) -> None:
    for offset in offsets:
        job.ledger.read(TP, offset)
        job.ledger.hold(stream, Held(TP, offset, start=float(offset), end=offset + 1.0, sent_ms=0, value_bytes=100))


def last(offset: int) -> Held:
    """The last segment a closing session had (what `_submit` releases through)."""
    return Held(TP, offset, start=float(offset), end=offset + 1.0, sent_ms=0)


def finish(job: LiveJob, timeout: float = 20.0) -> None:
    """Wait for the scorer threads, failing (not hanging) when they do not finish."""
    done = threading.Thread(target=job._scorers.join, daemon=True)
    done.start()
    done.join(timeout)
    assert not done.is_alive(), f"the scorer threads did not finish within {timeout} s"


@pytest.mark.parametrize("hang", [False, True])
def test_a_failed_or_hung_score_dead_letters_its_utterances_before_the_offsets_are_committed(
        hang: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """(22.6) The job used to drop the utterances and release the offsets; Serve calls had no timeout."""
    log: list[str] = []
    scorer = Scorer(failures=10, hang=hang)
    job, sink, committer = make_job(scorer, log, monkeypatch)
    try:
        read(job, "call", [0, 1, 2])
        job._submit("call", [random_bundle("call", 0.2, seconds=1.0)], ended=False)  # closed mid-stream
        finish(job)
        assert commit(job.ledger, sink, committer)[TP].offset == 0  # the open stream holds its offsets
        job._submit("call", [random_bundle("call", 1.5, seconds=1.0, seed=1)], ended=True, through=last(2))  # the last one
        finish(job)
        points = commit(job.ledger, sink, committer)
    finally:
        scorer.released.set()
        job._scorers.stop()
    assert scorer.calls == 4  # two tries per call
    assert sink.sent == [] and [d.reason for d in sink.dead] == [DeadLetterReason.PROCESSING_ERROR] * 2
    first, second = sink.dead
    assert "'call'" in first.detail and "0.20-1.20 s" in first.detail and (first.source.offset, first.value_bytes) == (0, 100)
    assert "1.50-2.50 s" in second.detail and second.source.offset == 1
    assert points[TP].offset == 3 and log.index("dead_letter") < log.index("commit")


def test_a_score_that_fails_once_is_retried_and_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    job, sink, committer = make_job(Scorer(failures=1), log, monkeypatch)
    try:
        read(job, "call", [0, 1])
        job._submit("call", [random_bundle("call", 0.2, seconds=1.0)], ended=True, through=last(1))
        finish(job)
        points = commit(job.ledger, sink, committer)
    finally:
        job._scorers.stop()
    assert len(sink.sent) == 1 and sink.dead == [] and points[TP].offset == 2


class FailingSessionActor:
    """Stands in for a SessionActor whose push raises (what `ray.get` raises for a failed actor task)."""

    class _Push:
        def remote(self, payload: bytes, drafts: bool, close: bool = False) -> Any:
            from ray.exceptions import RayTaskError

            from emostream.perception.session import SegmentOutOfPlace

            raise RayTaskError("SessionActor.push", "Traceback ...", SegmentOutOfPlace("segment 4 starts at 1e9 s"))

    push = _Push()


def test_a_segment_its_session_fails_on_is_dead_lettered_and_its_offset_stays_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """(22.10) A failed session call dropped the segment without a dead letter."""
    from emostream.live.job import SessionPush

    log: list[str] = []
    job, sink, committer = make_job(Scorer(failures=0), log, monkeypatch)
    try:
        job._actors = [FailingSessionActor()]
        read(job, "call", [0, 1])
        held = Held(TP, 1, start=1.0, end=2.0, sent_ms=0, value_bytes=100)
        job._push(0, SessionPush("call", b"", ended=False, seq=4, held=held))
        assert job._lost is None  # the stream and the job go on
        assert [(d.reason, d.seq, d.source.offset) for d in sink.dead] == [(DeadLetterReason.PROCESSING_ERROR, 4, 1)]
        assert "1e9" in sink.dead[0].detail
        assert commit(job.ledger, sink, committer)[TP].offset == 0  # held with the open stream's other segments
        job._submit("call", [], ended=True, through=last(1))  # the stream closes (its end, or its idle flush)
        finish(job)
        assert commit(job.ledger, sink, committer)[TP].offset == 2
    finally:
        job._scorers.stop()


# -- the driver's decisions, fed perceived rows directly (sessions stand in for the actors) -------------------


class Sessions:
    """Stands in for the session threads: keeps what the driver hands them."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> None:
        self.items.append(item)


class QuietActor:
    """A SessionActor whose pushes close nothing (for `_push` without Ray)."""

    class _Push:
        def remote(self, payload: bytes, drafts: bool, close: bool = False) -> Any:
            return [], []

    push = _Push()


def row(stream: str, seq: int, offset: int, seconds: float = 2.0, start: float | None = None) -> Any:
    from emostream.live.stages import SEGMENT, StageRow

    start = seq * seconds if start is None else start
    return StageRow(kind=SEGMENT, topic=TP.topic, partition=TP.partition, offset=offset, timestamp_ms=0, read_ms=0,
                    highwater=100, task=0, index=offset, stream_id=stream, seq=seq, end_of_stream=False,
                    start=start, end=start + seconds, payload=b"", frames=0, faces=0, decode_seconds=0.0,
                    perceive_seconds=0.0, value_bytes=10)


def drive(job: LiveJob, rows: list[Any], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The driver takes every row, then the session thread handles what it was given (behind, as under load)."""
    monkeypatch.setattr("emostream.live.job.ray.get", lambda value: value)
    sessions = Sessions()
    job._sessions = [sessions]  # type: ignore[list-item]
    job._actors = [QuietActor()]
    for r in rows:
        job._take(r)
    for item in sessions.items:
        job._push(0, item)
    finish(job)
    return sessions.items


def test_a_stream_that_never_ends_is_closed_on_its_media_clock_and_the_commit_passes_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """(22.17) A never-ending stream held the commit at its first segment forever. Past live.max_stream_seconds of
    media its session is closed and the offsets it had released (not the next segments, already held); a replay
    from that commit closes the stream at the same segments as the uninterrupted run."""
    monkeypatch.setattr(serve_client, "RETRY_PAUSE", 0.01)
    settings = load_settings(live={"max_stream_seconds": 6.0, "sink": "jsonl"})
    rows = [row("endless", seq, offset=seq) for seq in range(8)]

    log: list[str] = []
    job = LiveJob(settings, Scorer(0), sink=Sink(log), committer=FakeCommitter(log))  # type: ignore[arg-type]
    try:
        pushed = drive(job, rows[:5], monkeypatch)  # the driver is at seq 4 when the session closes at seq 2
        assert [p.seq for p in pushed if p.close] == [2]
        points = commit(job.ledger, job.sink, job.committer)
        assert points[TP].offset == 3  # seqs 0-2 are done; seq 3 on is held for the next session
        pushed += drive(job, rows[5:], monkeypatch)
        closes = [p.seq for p in pushed if p.close]
        assert closes == [2, 5]
    finally:
        job._scorers.stop()

    # a restart from that commit: seqs 0-2 skipped, the rest closed where the uninterrupted run closed it
    again = LiveJob(settings, Scorer(0), sink=Sink([]), committer=job.committer)  # type: ignore[arg-type]
    try:
        from emostream.live.commits import ended_before_commit

        again._reset_state(ended_before_commit(job.committer, [TP]))
        replayed = drive(again, rows[3:], monkeypatch)
        assert [p.seq for p in replayed] == [3, 4, 5, 6, 7] and [p.seq for p in replayed if p.close] == [5]
    finally:
        again._scorers.stop()


def test_the_ended_streams_of_the_stats_are_bounded() -> None:
    from emostream.live.job import RecentStreams

    ended = RecentStreams(capacity=2)
    for stream in ("a", "b", "c"):
        ended.add(stream)
    assert {"b", "c"} <= ended and "a" not in ended and len(ended) == 2


def test_an_idle_flush_releases_only_what_the_session_had_not_the_resumed_segments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """(22.9) The stream resumed while its idle flush was queued: the resumed segment, already held by the driver,
    was released with the idle-closed events, and a commit could pass it before it was processed."""
    from emostream.live.job import FLUSH_IDLE

    class IdleActor(QuietActor):
        class _Flush:
            def remote(self) -> dict[str, list[UtteranceBundle]]:
                return {"call": []}

        flush_idle = _Flush()

    monkeypatch.setattr("emostream.live.job.ray.get", lambda value: value)
    log: list[str] = []
    job, sink, committer = make_job(Scorer(0), log, monkeypatch)
    sessions = Sessions()
    job._sessions, job._actors = [sessions], [IdleActor()]  # type: ignore[list-item]
    try:
        job._take(row("call", 0, offset=0))
        job._push(0, sessions.items[0])
        job._take(row("call", 1, offset=1, start=40.0))  # it resumes: held before the session thread gets to the idle flush
        job._push(0, FLUSH_IDLE)
        finish(job)
        assert commit(job.ledger, sink, committer)[TP].offset == 1  # the resumed segment is still held
    finally:
        job._scorers.stop()
