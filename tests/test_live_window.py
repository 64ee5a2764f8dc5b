"""The live job's read window: a read task stays within `limit` rows of what the job has taken."""

import queue
import threading

import pytest

from emostream.live.window import TakenReporter, TakenRows, Window
from emostream.settings import LiveSettings

LIMIT = 8
ROWS = 100


def test_a_slow_job_makes_the_reader_wait_instead_of_its_queue_growing() -> None:
    """The job takes nothing at first: the reader stops at LIMIT rows, however often it asks. Then the job takes
    rows one by one, and the reader never gets more than LIMIT ahead; every row arrives, in order."""
    taken, rows = TakenRows(), queue.Queue[int]()
    asks = threading.Semaphore(0)

    def ask() -> int:
        asks.release()
        return taken.count(0)

    window = Window(LIMIT, ask, pause_seconds=0.001)
    ahead: list[int] = []

    def read() -> None:
        for index in range(ROWS):
            window.wait_for_room(index)
            ahead.append(index - taken.count(0))
            rows.put(index)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for _ in range(5):  # it asked five times with a full window, and is still waiting
        asks.acquire()
    assert rows.qsize() == LIMIT and reader.is_alive()
    reporter = TakenReporter(lambda task, count: taken.take(task, count), LIMIT)
    got = []
    while len(got) < ROWS:
        got.append(rows.get(timeout=60))
        reporter.took(0)
    reader.join(timeout=60)
    assert got == list(range(ROWS))
    assert max(ahead) == LIMIT - 1  # row LIMIT - 1 went out with none taken; never more than that


def test_the_job_reports_every_quarter_window_per_task() -> None:
    reports: list[tuple[int, int]] = []
    reporter = TakenReporter(lambda task, count: reports.append((task, count)), 8)
    for task in (0, 1, 0, 0, 1, 0, 1, 1):
        reporter.took(task)
    assert reports == [(0, 2), (1, 2), (0, 4), (1, 4)]


def test_a_perception_pool_whose_maximum_is_below_its_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="perception_max_actors"):
        LiveSettings(perception_actors=3, perception_max_actors=2)
    assert LiveSettings(perception_actors=2, perception_max_actors=2).perception_max_actors == 2
