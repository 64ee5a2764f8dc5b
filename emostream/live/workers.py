"""The live job's threads: one ordered worker per session actor, and per-stream scorer threads."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class OrderedWorker(Generic[T]):
    """A thread handling its items in order (one per session actor)."""

    def __init__(self, name: str, handle: Callable[[T], None], maxsize: int) -> None:
        self.handle = handle
        self.queue: queue.Queue[tuple[T] | None] = queue.Queue(maxsize=maxsize)
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def put(self, item: T) -> None:
        self.queue.put((item,))  # blocks when the thread is behind: ingestion waits

    def idle(self) -> bool:
        return self.queue.unfinished_tasks == 0

    def join(self) -> None:
        self.queue.join()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                self.handle(item[0])
            except Exception:  # the thread lives on: later items must not wait forever  # noqa: BLE001
                log.exception("%s failed on an item", self.thread.name)
            finally:
                self.queue.task_done()


class StreamJob(Protocol):
    @property
    def stream_id(self) -> str: ...


J = TypeVar("J", bound=StreamJob)


class StreamWorkers(Generic[J]):
    """Scorer threads: each stream's jobs in order, different streams' at the same time.

    (Hashing streams onto a few threads made a stream wait for another's Serve call: at 4
    streams two usually shared a thread.) At most `limit` jobs are queued or running; `put`
    waits beyond that, so ingestion slows down instead of piling up.
    """

    def __init__(self, handle: Callable[[J], None], limit: int) -> None:
        self.handle, self.limit = handle, limit
        self.pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="emostream-scorer")
        self.streams: dict[str, deque[J]] = {}  # streams with a job running, and what waits behind it
        self.count = 0
        self.changed = threading.Condition()

    def put(self, job: J) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.count < self.limit)
            self.count += 1
            if job.stream_id in self.streams:
                self.streams[job.stream_id].append(job)
                return
            self.streams[job.stream_id] = deque([job])
        self.pool.submit(self._run, job.stream_id)

    def idle(self) -> bool:
        with self.changed:
            return self.count == 0

    def join(self) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.count == 0)

    def stop(self) -> None:
        self.join()
        self.pool.shutdown(wait=True)

    def _run(self, stream: str) -> None:
        jobs = self.streams[stream]
        while True:
            try:
                self.handle(jobs[0])
            except Exception:  # the stream's later jobs must still run  # noqa: BLE001
                log.exception("scoring stream %s failed", stream)
            with self.changed:
                jobs.popleft()
                self.count -= 1
                self.changed.notify_all()
                if not jobs:
                    del self.streams[stream]
                    return
