from kafka import TopicPartition

from emostream.ingest.offsets import OffsetTracker

TP = TopicPartition("emostream.media", 0)


def test_commit_point_waits_for_the_lowest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.add(TP, offset)
    tracker.done(TP, 0)
    tracker.done(TP, 2)  # 1 is still held (e.g. waiting in the reorder buffer)
    tracker.done(TP, 3)
    assert tracker.commit_points() == {TP: 1}  # a restart replays 1, 2, 3, 4: nothing is lost
    tracker.done(TP, 1)
    tracker.done(TP, 4)
    assert tracker.commit_points() == {TP: 5}


def test_revoked_partitions_are_forgotten() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 7)
    tracker.forget([TP])
    assert tracker.commit_points() == {}
