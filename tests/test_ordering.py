from emostream.contracts import DeadLetterReason
from emostream.ingest.ordering import Gap, StreamOrderer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_in_order_segments_pass_straight_through() -> None:
    orderer: StreamOrderer[str] = StreamOrderer()
    assert [orderer.push("s", i, f"seg{i}").released for i in range(3)] == [["seg0"], ["seg1"], ["seg2"]]


def test_out_of_order_segments_are_held_until_the_missing_one_comes() -> None:
    orderer: StreamOrderer[int] = StreamOrderer()
    assert orderer.push("s", 0, 0).released == [0]
    assert orderer.push("s", 2, 2).released == []
    assert orderer.push("s", 3, 3).released == []
    assert orderer.push("s", 1, 1).released == [1, 2, 3]
    assert orderer.buffered == 0


def test_streams_are_ordered_independently() -> None:
    orderer: StreamOrderer[str] = StreamOrderer()
    orderer.push("a", 0, "a0")
    assert orderer.push("b", 5, "b5").released == ["b5"]  # a stream starts where the consumer joins it
    assert orderer.push("a", 2, "a2").released == []
    assert orderer.push("b", 6, "b6").released == ["b6"]


def test_duplicates_are_rejected_whether_delivered_or_buffered() -> None:
    orderer: StreamOrderer[int] = StreamOrderer()
    orderer.push("s", 0, 0)
    orderer.push("s", 2, 2)
    for seq in (0, 2):
        outcome = orderer.push("s", seq, seq)
        assert outcome.rejected is not None and outcome.rejected.reason is DeadLetterReason.DUPLICATE_SEQ
        assert f"seq {seq} was already received" in outcome.rejected.detail


def test_gap_is_declared_after_the_timeout_and_the_late_segment_is_rejected() -> None:
    clock = Clock()
    orderer: StreamOrderer[int] = StreamOrderer(gap_timeout=10, clock=clock)
    orderer.push("s", 0, 0)
    orderer.push("s", 2, 2)
    clock.now = 9.9
    assert orderer.tick().released == []
    clock.now = 10.0
    outcome = orderer.tick()
    assert outcome.released == [2]
    assert outcome.gaps == [Gap("s", 1, 2)]
    late = orderer.push("s", 1, 1)
    assert late.rejected is not None and late.rejected.reason is DeadLetterReason.TOO_LATE


def test_a_full_buffer_declares_the_gap_at_once() -> None:
    orderer: StreamOrderer[int] = StreamOrderer(buffer_limit=2)
    orderer.push("s", 0, 0)
    orderer.push("s", 2, 2)
    orderer.push("s", 3, 3)
    outcome = orderer.push("s", 4, 4)
    assert outcome.released == [2, 3, 4] and outcome.gaps == [Gap("s", 1, 2)]


def test_nothing_is_taken_after_end_of_stream() -> None:
    orderer: StreamOrderer[int] = StreamOrderer()
    orderer.push("s", 0, 0)
    orderer.push("s", 3, 3)  # buffered beyond the end
    orderer.push("s", 2, 2, end_of_stream=True)
    outcome = orderer.push("s", 1, 1)
    assert outcome.released == [1, 2]
    assert [(item, r.reason) for item, r in outcome.dropped] == [(3, DeadLetterReason.AFTER_END_OF_STREAM)]
    after = orderer.push("s", 4, 4)
    assert after.rejected is not None and after.rejected.reason is DeadLetterReason.AFTER_END_OF_STREAM
    assert orderer.streams() == []


def test_idle_streams_are_forgotten_so_memory_stays_bounded() -> None:
    clock = Clock()
    orderer: StreamOrderer[int] = StreamOrderer(idle_timeout=60, clock=clock)
    for stream in range(100):
        orderer.push(f"s{stream}", 0, 0)
    clock.now = 61
    orderer.tick()
    assert orderer.streams() == []


def test_under_load_a_late_segment_is_waited_for_on_the_media_clock_not_the_wall_clock() -> None:
    """(22.11) A slow job (a minute of wall clock between rows) with segments out of order: no gap while the
    stream's own media has not moved `gap_timeout` past the hole."""
    clock = Clock()
    orderer: StreamOrderer[int] = StreamOrderer(gap_timeout=10, clock=clock)
    orderer.push("s", 0, 0, media_time=0.0)
    for seq in (2, 3):
        clock.now += 60
        assert orderer.push("s", seq, seq, media_time=2.0 * seq).released == []
        assert orderer.tick(caught_up=False).gaps == []  # still rows to read: the job is behind, not the stream
    clock.now += 60
    assert orderer.push("s", 1, 1, media_time=2.0).released == [1, 2, 3]


def test_a_gap_is_declared_when_the_stream_media_moved_on_whatever_the_wall_clock() -> None:
    """(22.11) The same pushes give the same gaps at any speed: the wall clock never moves here."""
    orderer: StreamOrderer[int] = StreamOrderer(gap_timeout=10, clock=lambda: 0.0)
    orderer.push("s", 0, 0, media_time=0.0)
    released = []
    for seq in range(2, 8):  # seq 1 never comes; the hole appeared at media 4.0
        outcome = orderer.push("s", seq, seq, media_time=2.0 * seq)
        released += outcome.released
        assert (outcome.gaps == [Gap("s", 1, 2)]) == (seq == 7)  # 14.0 - 4.0 >= 10
    assert released == [2, 3, 4, 5, 6, 7]


def test_a_stream_that_goes_quiet_with_a_hole_is_given_up_once_the_job_has_read_everything() -> None:
    clock = Clock()
    orderer: StreamOrderer[int] = StreamOrderer(gap_timeout=10, idle_timeout=600, clock=clock)
    orderer.push("s", 0, 0, media_time=0.0)
    orderer.push("s", 2, 2, media_time=4.0, end_of_stream=True)
    clock.now = 30
    assert orderer.tick(caught_up=False).released == []
    outcome = orderer.tick(caught_up=True)
    assert outcome.released == [2] and outcome.gaps == [Gap("s", 1, 2)] and orderer.streams() == []


def test_the_number_of_streams_held_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """(22.17) Streams that never end and never idle out (within the timeout) do not grow the orderer forever."""
    from emostream.ingest import ordering

    monkeypatch.setattr(ordering, "OPEN_STREAMS", 3)
    orderer: StreamOrderer[int] = StreamOrderer()
    orderer.push("holey", 0, 0)
    orderer.push("holey", 2, 2)  # a hole: kept
    for stream in ("a", "b", "c", "d"):
        orderer.push(stream, 0, 0)
    assert orderer.streams() == ["holey", "c", "d"]
