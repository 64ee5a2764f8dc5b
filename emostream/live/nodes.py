"""The Ray nodes under the live job's pipeline, and noticing when one of them dies.

A node that dies takes with it whatever of the job ran there: perception actors (Ray Data restarts them elsewhere
and retries their segments), session actors (their streams' state: the job sees `RayActorError` on the next push)
and read tasks. Ray Data retries a read task whose node died, and the retry reads again from where its flow started
(the group's committed offsets, or where the previous flow stopped), numbering its rows from 0: rows the driver,
which orders a task's rows by that number, cannot tell from the first run's. So the job watches the nodes too, and
when one that was alive when its pipeline was built dies (not drained as idle by the autoscaler: an idle node held
none of the job's work), it rebuilds the pipeline from the last commit, as for a lost session actor.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray
from ray.core.generated.common_pb2 import NodeDeathInfo

# `ray.nodes()` gives a dead node's NodeDeathInfo.Reason as its number; the autoscaler drains as idle only nodes that
# run nothing (no tasks, no actors)
IDLE_DRAIN = NodeDeathInfo.Reason.Value("AUTOSCALER_DRAIN_IDLE")
# Ray declares a killed node dead after ~15 s of missed heartbeats, and the job then replays from its last commit
# anyway: asking the GCS every second (as the job's loop offers) cost the idle driver CPU for nothing.
CHECK_SECONDS = 10.0


def alive_nodes() -> set[str]:
    """The ids of the cluster's live nodes."""
    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


class NodeWatch:
    """The nodes seen alive since the job's pipeline was built (those that joined later may run its restarted
    actors and tasks); `lost` names those that died since, looking at most every `check_seconds`."""

    def __init__(self, check_seconds: float = CHECK_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.check_seconds = check_seconds
        self.clock = clock
        self.nodes = alive_nodes()
        self.checked = clock()

    def lost(self) -> list[str]:
        """Nodes of the pipeline that died, other than idle nodes the autoscaler removed (usually none); none
        until `check_seconds` have passed since the last look."""
        now = self.clock()
        if now - self.checked < self.check_seconds:
            return []
        self.checked = now
        nodes = ray.nodes()
        self.nodes |= {node["NodeID"] for node in nodes if node["Alive"]}
        dead = [node for node in nodes if node["NodeID"] in self.nodes and not node["Alive"]]
        return sorted(node["NodeID"] for node in dead if node.get("DeathReason") != IDLE_DRAIN)
