"""Ray task events of the live job's own per-segment calls (`live.task_events`): with them off, the perception
pool's actors, the session actors and the read window's actor leave nothing in the GCS's task events (the
dashboard's task table, `ray list tasks`, `ray.timeline()`), while any other task keeps its own.

Real Ray, a real broker and the job's real flow (the read tasks' ticks pass through the perception pool).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import ray

from emostream.live.dataflow import perceived_rows
from emostream.live.sessions import start_session_actors
from emostream.settings import Settings

pytestmark = pytest.mark.broker  # starts Ray and a broker: loopback-only namespace

JOB_CALLS = ("MapBatches(SegmentStage)", "SessionActor", "TakenRowsActor")  # in the names of the job's own calls


@ray.remote
def marker() -> int:
    return 1


@pytest.fixture
def fresh_ray() -> Iterator[None]:
    """A Ray of its own for each test: the GCS would keep the task events of an earlier test's calls."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def executed() -> set[str]:
    """The tasks and actor methods whose runs reached the GCS as task events (`ray.timeline()`: a "task::NAME"
    event per run)."""
    return {event["cat"].removeprefix("task::") for event in ray.timeline() if event["cat"].startswith("task::")}


def job_calls_seen(settings: Settings) -> set[str]:
    """Run the job's Ray parts briefly (three rows of the flow, the session actors started and pinged), then a
    task of another kind; once that task's events are in, which of `JOB_CALLS` have events too."""
    rows = perceived_rows(settings, settings.kafka.group_id)
    actors = start_session_actors(settings, settings.kafka.group_id)
    try:
        for _ in range(3):  # ticks, once a second per read task: each one a perception call
            next(rows)
        ray.get([actor.ping.remote() for actor in actors])
        time.sleep(2.5)  # a worker reports its events once a second while it lives: the flow's actor ends at close
    finally:
        rows.close()  # type: ignore[attr-defined]
        for actor in actors:
            ray.kill(actor)
    ray.get(marker.remote())
    deadline = time.monotonic() + 30
    while "marker" not in (names := executed()):
        assert time.monotonic() < deadline, f"the marker task's events never reached the GCS: {sorted(names)}"
        time.sleep(0.5)  # each look reads every stored event back from the GCS
    time.sleep(2.0)  # every worker reports its events once a second: the job's have had their chance
    names = executed()
    return {call for call in JOB_CALLS if any(call in name for name in names)}


@pytest.mark.parametrize("task_events", [False, True])
def test_job_calls_have_task_events_only_when_asked(fresh_ray: None, settings: Settings, task_events: bool) -> None:
    settings = settings.model_copy(update={"live": settings.live.model_copy(update={"task_events": task_events,
                                                                                    "session_actors": 1})})
    assert job_calls_seen(settings) == (set(JOB_CALLS) if task_events else set())
