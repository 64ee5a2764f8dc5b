"""The live job's Ray Data flow: the endless media source through the perception stage, rows to the driver.

Perception runs in an autoscaling actor pool (`live.perception_actors` to `live.perception_max_actors`):
Ray Data adds actors while segments wait and the cluster has CPUs, and keeps them while the job runs (see
`KEEP_ACTORS`). The rows in flight are bounded by the read window (`window`): the job reports the rows it
takes, and a read task that is `live.read_window` rows ahead stops reading until the job catches up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping

import ray
from ray.data import DataContext, Dataset
from ray.data._internal.execution import streaming_executor_state
from ray.data.context import AutoscalingConfig

from emostream.live.source import TICK, KafkaMediaSource
from emostream.live.stages import SegmentStage, StageRow
from emostream.live.window import TakenReporter, TakenRowsActor
from emostream.settings import Settings

log = logging.getLogger(__name__)

EXECUTOR_WAIT_SECONDS = 0.02  # Ray Data's executor step while media arrives (see _set_executor_wait)
IDLE_EXECUTOR_WAIT_SECONDS = 0.1  # ... and Ray's default, once nothing but ticks came for IDLE_AFTER_SECONDS
IDLE_AFTER_SECONDS = 2.0
# Ray Data's pool removes an actor whenever the tasks in flight fall below half its slots, at once, with no
# cool-down: a live stream's segments come in bursts, so in the 1-hour soak (bench/soak.py, 4 streams) the pool
# went up 150 times and down 148 times, each new actor loading the face and voice models again, and Ray's own
# processes kept a record of every one. A utilisation threshold below zero is never reached: the pool grows
# while segments wait and keeps what it loaded (an idle actor costs memory, not CPU).
KEEP_ACTORS = AutoscalingConfig(actor_pool_util_downscaling_threshold=-1.0)


def perceived_rows(settings: Settings, group_id: str, start: Mapping[int, int] | None = None) -> Iterator[StageRow]:
    """The perception stage's rows of the media topic, from the group's committed offsets (or `start`'s, per
    partition), forever.

    Close the iterator to stop the dataset's executor and its read tasks."""
    live = settings.live
    context = DataContext.get_current()
    context.target_max_block_size = live.block_bytes
    context.enable_progress_bars = False
    # Ray Data measures each task's memory by reading /proc/self/smaps in a thread it starts per task: for a
    # perception actor with its models loaded that was a large part of a segment's cost, and of every tick's.
    context.memory_usage_poll_interval_s = None
    context.autoscaling_config = KEEP_ACTORS
    _set_executor_wait(EXECUTOR_WAIT_SECONDS)
    events = {"enable_task_events": live.task_events}  # an actor's setting holds for all its method calls
    taken = TakenRowsActor.options(**events).remote()  # type: ignore[attr-defined]
    source = KafkaMediaSource(settings.kafka, group_id, live.source_tasks, live.poll_seconds, taken, live.read_window,
                              start)
    dataset = ray.data.read_datasource(source, num_cpus=0.05, override_num_blocks=live.source_tasks)
    pool = ray.data.ActorPoolStrategy(min_size=live.perception_actors, max_size=live.perception_max_actors)
    dataset = dataset.map_batches(SegmentStage, fn_constructor_args=(settings.model_dump_json(),), batch_size=1,
                                  batch_format="pyarrow", compute=pool, num_cpus=live.perception_cpus, **events)
    return _rows(dataset, TakenReporter(lambda task, count: taken.take.remote(task, count), live.read_window), taken)


def _rows(dataset: Dataset, reporter: TakenReporter, taken: ray.actor.ActorHandle) -> Iterator[StageRow]:
    """The dataset's rows, each as soon as its block is out; each reported taken once the caller asks for the next.
    `Dataset.iter_rows` prefetches one batch: it hands a block over only once the next one exists, so a lone
    stream's segments reached the driver ~0.35 s late (bench/live.py, 1 stream: read task → driver 0.37 s with
    iter_rows, 0.09 s with prefetch_batches=0)."""
    batches = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
    last_media, waiting = time.monotonic(), EXECUTOR_WAIT_SECONDS
    try:
        for block in batches:
            for row in map(StageRow.from_arrow, block.to_pylist()):
                now = time.monotonic()
                if row.kind != TICK:
                    last_media = now
                # The executor's short step costs the driver CPU 50 times a second: only while media arrives.
                wanted = EXECUTOR_WAIT_SECONDS if now - last_media < IDLE_AFTER_SECONDS else IDLE_EXECUTOR_WAIT_SECONDS
                if wanted != waiting:
                    _set_executor_wait(waiting := wanted)
                yield row
                reporter.took(row.task)
    finally:
        batches.close()  # type: ignore[attr-defined]  # stops the dataset's executor and its read tasks
        ray.kill(taken)


def _set_executor_wait(seconds: float) -> None:
    """Ray Data's executor loop waits up to 0.1 s per step for *all* its running tasks (`ray.wait`
    with num_returns=len(tasks)); an endless read task never finishes, so every step took 0.1 s and
    a segment crossed several. bench/live.py, 4 streams: read task → driver 0.80 s at 0.1, 0.17 s at
    0.02. Each step costs the driver CPU, so the job shortens it only while media arrives. The constant
    is private (Ray 2.60) and read at each step; without it the job still works, only slower."""
    if hasattr(streaming_executor_state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S"):
        streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = seconds
    else:
        log.warning("this Ray has no WAIT_FOR_TASK_COMPLETION_TIMEOUT_S: Ray Data adds up to 0.1 s per step")
