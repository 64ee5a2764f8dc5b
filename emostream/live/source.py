"""An endless Ray Data source over the media topic, from the consumer group's committed offsets.

`ray.data.read_kafka` reads bounded offset ranges only, so the live job has its own
`Datasource`: each read task owns a share of the topic's partitions, starts at the
group's committed offsets (or, for a renewed flow, where the job's previous flow stopped)
and yields one small block per poll forever. Nothing is committed here: the job commits
an offset once the utterances that need it are out.

When a poll brings nothing, a task yields a "tick" row per partition carrying the
partition's high watermark, so the job sees time pass (idle flushing, commits, lag)
even when no media arrives; once a second, as the job looks at time once a second
(each block costs a perception call and the driver's attention: ticks every 0.5 s were
a fifth of the idle job's CPU), and all of a task's ticks in one block.

A task is at most `live.read_window` rows ahead of the job (`window`): beyond that it
stops polling, and Kafka holds what the job has no room for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import pyarrow as pa
import ray
from kafka import TopicPartition
from ray.actor import ActorHandle
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from emostream.kafka.clients import consumer as make_consumer
from emostream.kafka.header_names import wire_name
from emostream.live.window import Window
from emostream.settings import KafkaSettings

TICK_SECONDS = 1.0  # a task with nothing to read sends ticks this often
FETCH_WAIT_MS = 500  # how long the broker may hold a read task's fetch while no record arrives

RECORD, TICK = "record", "tick"
SCHEMA = pa.schema([
    ("kind", pa.string()),
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("key", pa.binary()),
    ("value", pa.large_binary()),
    ("header_keys", pa.list_(pa.binary())),  # as they were on the wire (a name that is not UTF-8 is dead-lettered)
    ("header_values", pa.list_(pa.binary())),
    ("timestamp_ms", pa.int64()),  # when the producer sent the segment (wall clock)
    ("read_ms", pa.int64()),  # when the read task got it from Kafka (wall clock)
    ("highwater", pa.int64()),  # the partition's end offset when the record was read (for lag)
    ("task", pa.int32()),  # the read task that read the row
    ("index", pa.int64()),  # its position in that task's output (0, 1, 2, …; ticks included): the job restores
                            # this order after the parallel perception actors
])


def record_row(kind: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
               headers: list[tuple[str, bytes]], timestamp_ms: int, read_ms: int, highwater: int, task: int = 0,
               index: int = 0) -> dict[str, object]:
    """One row of `SCHEMA` (the source's output, the perception stage's input)."""
    return {"kind": kind, "topic": topic, "partition": partition, "offset": offset, "key": key, "value": value or b"",
            "header_keys": [wire_name(k) for k, _ in headers], "header_values": [v for _, v in headers],
            "timestamp_ms": timestamp_ms, "read_ms": read_ms, "highwater": highwater, "task": task, "index": index}


def media_partitions(kafka: KafkaSettings) -> list[int]:
    consumer = make_consumer(kafka)
    try:
        deadline = time.monotonic() + 30
        while not (partitions := consumer.partitions_for_topic(kafka.media_topic)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {kafka.media_topic!r} not found at {kafka.bootstrap_servers}")
            time.sleep(0.5)
        return sorted(partitions)
    finally:
        consumer.close()


def read_partitions(kafka: KafkaSettings, group_id: str, partitions: list[int], poll_seconds: float, task: int = 0,
                    tick_seconds: float = TICK_SECONDS, window: Window | None = None,
                    start: Mapping[int, int] | None = None) -> Iterator[pa.Table]:
    """Blocks of media records of `partitions`, from `start`'s offset where it has one for the partition and the
    group's committed offsets elsewhere, forever; with a `window`, never more rows ahead of the job than it allows."""
    # A fetch waits up to FETCH_WAIT_MS for a record, and the broker answers it as soon as one arrives (Kafka's and
    # Tansu's long poll): the clients' 50 ms made an idle task send 20 fetches a second for nothing.
    consumer = make_consumer(kafka, group_id=group_id, fetch_max_wait_ms=FETCH_WAIT_MS)
    assigned = [TopicPartition(kafka.media_topic, p) for p in partitions]
    consumer.assign(assigned)
    for tp in assigned:
        position = (start or {}).get(tp.partition)
        if position is None:
            position = consumer.committed(tp)
        if position is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, position)
    last_tick = 0.0
    index = 0

    def block(rows: list[dict[str, object]]) -> pa.Table:
        """`rows` numbered in the task's order, as one block, once the window has room for the first of them (a
        block of ticks may pass the window by a few rows: a window smaller than the block would hold it forever)."""
        nonlocal index
        if window is not None:
            window.wait_for_room(index)
        for row in rows:
            row["task"], row["index"] = task, index
            index += 1
        return pa.Table.from_pylist(rows, schema=SCHEMA)

    try:
        while True:
            if window is not None:
                window.wait_for_room(index)
            rows: list[dict[str, object]] = []
            polled = consumer.poll(timeout_ms=int(poll_seconds * 1000))
            read_ms = int(time.time() * 1000)
            for tp, records in polled.items():
                highwater = consumer.highwater(tp)
                rows += [record_row(RECORD, r.topic, r.partition, r.offset, r.key, r.value, r.headers, r.timestamp, read_ms,
                                    highwater if highwater is not None else r.offset + 1) for r in records]
            for row in rows:
                yield block([row])  # one record per block: a segment never waits for another
            now = time.monotonic()
            if not rows and now - last_tick >= tick_seconds:
                last_tick = now
                # One block for all the task's partitions: one perception call and one block for the driver a
                # second, not one per partition.
                yield block([record_row(TICK, tp.topic, tp.partition, -1, None, b"", [], read_ms, read_ms,
                                        -1 if (high := consumer.highwater(tp)) is None else high) for tp in assigned])
    finally:
        consumer.close()


class KafkaMediaSource(Datasource):
    """The media topic as an unbounded dataset; `tasks` read tasks share its partitions. With `taken` (a
    `TakenRowsActor` the job reports to), each task stays within `window_rows` rows of the job. `start`: offsets
    per partition to read from instead of the committed ones (where a renewed flow's predecessor stopped)."""

    def __init__(self, kafka: KafkaSettings, group_id: str, tasks: int, poll_seconds: float,
                 taken: ActorHandle | None = None, window_rows: int = 0, start: Mapping[int, int] | None = None) -> None:
        super().__init__()
        self.kafka, self.group_id, self.tasks, self.poll_seconds = kafka, group_id, tasks, poll_seconds
        self.taken, self.window_rows, self.start = taken, window_rows, dict(start or {})

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: object | None = None) -> list[ReadTask]:
        partitions = media_partitions(self.kafka)
        count = max(1, min(self.tasks, len(partitions)))
        shares = [partitions[i::count] for i in range(count)]
        kafka, group, poll, taken, limit, start = (self.kafka, self.group_id, self.poll_seconds, self.taken,
                                                   self.window_rows, self.start)

        def window(task: int) -> Window | None:
            if taken is None:
                return None
            return Window(limit, lambda: ray.get(taken.count.remote(task)), poll)

        return [
            ReadTask(lambda share=share, task=task: read_partitions(kafka, group, share, poll, task, window=window(task),
                                                                     start=start),
                     BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None), schema=SCHEMA)
            for task, share in enumerate(shares)
        ]

    def get_name(self) -> str:
        return "KafkaMedia"
