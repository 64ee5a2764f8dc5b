"""Backpressure between the live job's Kafka read tasks and its driver: a window of rows in flight.

Ray Data's own backpressure counts bytes in the object store; media segments are small, so
its queues between the endless read tasks and the perception actors grew with the backlog
(35 s of segments queued at eight AV streams on two cores). The window bounds them by rows:
a read task may be at most `limit` rows ahead of what the job has taken from the dataflow;
beyond that it stops polling Kafka, which holds the rest (and the lag metric shows it). The
job takes rows only as fast as its session and scorer queues (themselves bounded) accept
them, so a slow stage slows the reads instead of filling memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray


class TakenRows:
    """Per read task: how many of its rows the job has taken (a read task numbers its rows 0, 1, 2, …, so row
    `index` is `index - taken` rows ahead of the job)."""

    def __init__(self) -> None:
        self.taken: dict[int, int] = {}

    def take(self, task: int, count: int) -> None:
        self.taken[task] = max(self.taken.get(task, 0), count)

    def count(self, task: int) -> int:
        return self.taken.get(task, 0)


@ray.remote(num_cpus=0, max_concurrency=1)
class TakenRowsActor(TakenRows):
    """`TakenRows` shared by the driver (which reports) and the read tasks (which ask when their window is full)."""


class Window:
    """A read task's view of the window: `wait_for_room(index)` returns once row `index` may be sent."""

    def __init__(self, limit: int, taken: Callable[[], int], pause_seconds: float) -> None:
        self.limit, self.taken, self.pause_seconds = limit, taken, pause_seconds
        self.known = 0  # rows taken, as last asked (asked again only when the window looks full)

    def wait_for_room(self, index: int) -> None:
        while index - self.known >= self.limit:
            self.known = self.taken()
            if index - self.known >= self.limit:
                time.sleep(self.pause_seconds)


class TakenReporter:
    """Driver side: tells the read tasks how many of their rows the job has taken, every `limit // 4` rows of a
    task (so a read task waiting on a full window always hears back, and the driver calls out seldom)."""

    def __init__(self, report: Callable[[int, int], None], limit: int) -> None:
        self.report, self.every = report, max(1, limit // 4)
        self.counts: dict[int, int] = {}

    def took(self, task: int) -> None:
        """The job took one more row of read task `task` (rows may come out of the task's order)."""
        count = self.counts[task] = self.counts.get(task, 0) + 1
        if count % self.every == 0:
            self.report(task, count)
