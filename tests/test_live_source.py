"""The live job's Kafka read task: records one per block, and a task with nothing to read sends the ticks of all its
partitions in one block (one perception call a second, not one per partition); a renewed flow's task starts where
the last flow stopped."""

from __future__ import annotations

import time

import pytest

from emostream.kafka.clients import producer
from emostream.live.source import RECORD, TICK, read_partitions
from emostream.settings import Settings

pytestmark = pytest.mark.broker


def test_ticks_of_every_partition_come_in_one_block_and_records_one_per_block(settings: Settings) -> None:
    reader = read_partitions(settings.kafka, settings.kafka.group_id, [0, 1], poll_seconds=0.1, task=3, tick_seconds=0.2)
    try:
        ticks = next(reader).to_pylist()
        assert [(row["kind"], row["partition"]) for row in ticks] == [(TICK, 0), (TICK, 1)]
        # an empty partition's end is 0, or -1 (unknown) when the tick comes before the first fetch has answered
        assert all(row["highwater"] in (-1, 0) for row in ticks), ticks
        assert [(row["task"], row["index"]) for row in ticks] == [(3, 0), (3, 1)]

        out = producer(settings.kafka)
        for partition in (0, 1, 1):
            out.send(settings.kafka.media_topic, key=b"s", value=b"\0\0" * 160, partition=partition)
        out.flush()
        out.close()
        records, deadline = [], time.monotonic() + 30
        while len(records) < 3 and time.monotonic() < deadline:
            block = next(reader).to_pylist()
            if block[0]["kind"] == RECORD:
                assert len(block) == 1
                records += block
        assert sorted((row["partition"], row["offset"]) for row in records) == [(0, 0), (1, 0), (1, 1)]
        assert [row["index"] for row in records] == sorted(row["index"] for row in records)
        assert min(row["index"] for row in records) >= 2
    finally:
        reader.close()


def test_a_renewed_flow_reads_from_where_the_last_stopped_and_elsewhere_from_the_commit(settings: Settings) -> None:
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    from emostream.kafka.clients import consumer

    out = producer(settings.kafka)
    for partition in (0, 0, 0, 1, 1, 1):
        out.send(settings.kafka.media_topic, key=b"s", value=b"\0\0" * 160, partition=partition)
    out.flush()
    out.close()
    group = consumer(settings.kafka, group_id=settings.kafka.group_id)
    group.commit({TopicPartition(settings.kafka.media_topic, 1): OffsetAndMetadata(1, "", -1)})
    group.close()

    reader = read_partitions(settings.kafka, settings.kafka.group_id, [0, 1], poll_seconds=0.1, start={0: 2})
    try:
        records, deadline = [], time.monotonic() + 30
        while len(records) < 3 and time.monotonic() < deadline:
            records += [row for row in next(reader).to_pylist() if row["kind"] == RECORD]
    finally:
        reader.close()
    assert sorted((row["partition"], row["offset"]) for row in records) == [(0, 2), (1, 1), (1, 2)]
