"""`emostream run --address` on a Ray cluster of two nodes on this machine (a head and a second node, each a
`ray start` on 127.0.0.1, stopped by process id): the job's perception actors and session actors are spread over
both nodes, and when the second node dies mid-stream (every one of its processes killed at once) the job rebuilds
its pipeline on the head from its last commit and loses nothing. The sinks' guarantee is at least once
(`emostream.sinks.base`): every utterance the Serve app's `/v1/analyze` finds in a stream's media comes out as an
event of that stream, repeats carry the same ids, and no other id comes out.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from emostream.ingest.publish import publish
from emostream.kafka.broker import free_port
from emostream.kafka.clients import consumer
from emostream.live.sessions import owner
from emostream.media.synthetic import speech_track
from emostream.settings import Settings
from tests.ray_cluster import BIN, LocalCluster, local_cluster
from tests.test_live import analyze

pytestmark = [pytest.mark.broker, pytest.mark.slow]  # starts Ray in the loopback-only namespace; minutes

HEAD_CPUS, SECOND_CPUS = 3, 2  # logical CPUs: the head alone must hold the whole job once the second node is gone
PERCEPTION_CLASS = "SegmentStage"  # in the name of Ray Data's actor class, MapWorker(MapBatches(SegmentStage))
SESSION_CLASS = "SessionActor"
WAIT_SECONDS = 600  # for the job to start, and for every utterance after the kill (a loaded machine is slow)


def job_settings(settings: Settings) -> Settings:
    """Two perception actors and two session actors (one per node, spread), 0.5 s segments, no metrics port."""
    return settings.model_copy(update={
        "ingest": settings.ingest.model_copy(update={"segment_seconds": 0.5}),
        "serve": settings.serve.model_copy(update={"port": free_port()}),
        "live": settings.live.model_copy(update={"perception_actors": 2, "session_actors": 2, "metrics_port": 0})})


def stream_per_actor(actors: int) -> list[str]:
    """One stream name for each session actor (the names the hash puts on actors 0, 1, …)."""
    by_owner: dict[int, str] = {}
    for name in (f"call-{i}" for i in range(1000)):
        by_owner.setdefault(owner(name, actors), name)
        if len(by_owner) == actors:
            return [by_owner[index] for index in range(actors)]
    raise AssertionError(f"no stream names cover {actors} session actors")


def placement(cluster: LocalCluster) -> dict[str, dict[str, int]]:
    """Per node name: live actors of the job by class (perception, session)."""
    from ray.util.state import list_actors

    nodes = {node_id: name for name, node_id in cluster.alive().items()}
    split: dict[str, dict[str, int]] = {name: {PERCEPTION_CLASS: 0, SESSION_CLASS: 0} for name in nodes.values()}
    for actor in list_actors(address=cluster.dashboard, filters=[("state", "=", "ALIVE")], limit=1000):
        for kind in (PERCEPTION_CLASS, SESSION_CLASS):
            if kind in actor.class_name and actor.node_id in nodes:
                split[nodes[actor.node_id]][kind] += 1
    return split


class Events:
    """The emotions topic read on a thread: every event, in arrival order."""

    def __init__(self, settings: Settings) -> None:
        self.reader = consumer(settings.kafka, [settings.kafka.emotions_topic], group_id=None)
        self.events: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while not self.done.is_set():
                for records in self.reader.poll(timeout_ms=300).values():
                    self.events += [json.loads(r.value) for r in records]
        finally:
            self.reader.close()

    def ids(self, stream: str) -> list[str]:
        return [e["utterance_id"] for e in list(self.events) if e["stream_id"] == stream]

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def wait_for(condition: Any, what: str, job: subprocess.Popen[bytes], log: Path, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert job.poll() is None, f"`emostream run` exited with {job.returncode}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s\n{log.read_text()[-4000:]}"
        time.sleep(0.5)


@pytest.mark.timeout(1800)  # 7 min at load 45-70 on 2 cores (cluster, Serve, reference, 31 s of media, the replay)
def test_run_with_address_spreads_over_two_nodes_and_loses_nothing_when_one_dies(
        settings: Settings, librivox: list[Path], tmp_path: Path) -> None:
    settings = job_settings(settings)
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    names = stream_per_actor(settings.live.session_actors)
    # different read speech in each stream, about 31 s: the second node dies after the first event, mid-stream
    media = {name: speech_track(librivox[i:] + librivox[:i], tmp_path / f"{name}.wav") for i, name in enumerate(names)}
    log = tmp_path / "run.log"
    events = Events(settings)
    with local_cluster() as cluster, log.open("wb") as output:
        cluster.start_head(HEAD_CPUS, dashboard=True)
        cluster.add_node("second", SECOND_CPUS)
        job = subprocess.Popen([str(BIN / "emostream"), "--config", str(config), "run", "--address", cluster.address],
                               stdout=output, stderr=subprocess.STDOUT, env={**cluster.env, "OMP_NUM_THREADS": "1"})
        try:
            wait_for(lambda: b"live job:" in log.read_bytes(), "the job started", job, log)
            server = f"http://127.0.0.1:{settings.serve.port}"
            reference = {name: {e["utterance_id"] for e in analyze(server, media[name], name, None)} for name in names}
            publishers = [threading.Thread(target=publish, args=(media[name], name, settings), kwargs={"realtime": True})
                          for name in names]
            for thread in publishers:
                thread.start()
            wait_for(lambda: events.events, "a first event", job, log)
            spread = placement(cluster)
            killed = cluster.kill("second")
            mid_stream = any(thread.is_alive() for thread in publishers)
            wait_for(lambda: all(reference[n] <= set(events.ids(n)) for n in names), "every utterance", job, log)
            after = placement(cluster)
            for thread in publishers:
                thread.join()
        finally:
            job.send_signal(signal.SIGTERM)
            try:
                job.wait(timeout=120)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait()
            events.close()
    print(f"per node before the kill: {spread}; killed {len(killed)} processes of the second node; after: {after}")
    stopped = re.search(r"stopped: .* (\d+) restarts", log.read_text())

    for node in ("head", "second"):
        assert spread[node][PERCEPTION_CLASS] >= 1 and spread[node][SESSION_CLASS] >= 1, spread
    assert mid_stream, "the streams had ended before the second node died: publish longer media"
    assert after["head"][SESSION_CLASS] == settings.live.session_actors, after  # rebuilt on the node left
    assert stopped is not None and int(stopped.group(1)) >= 1, log.read_text()[-2000:]  # it rebuilt its pipeline
    for name in names:
        got = events.ids(name)
        assert set(got) == reference[name], f"{name}: {len(set(got))} ids vs {len(reference[name])} in the reference"


def test_the_job_notices_a_dead_node_but_not_one_drained_as_idle() -> None:
    """`NodeWatch` (what makes the job rebuild when a node under its read tasks dies) on a real cluster: nothing is
    lost while the nodes live; a node drained as idle (as the autoscaler does, through the GCS) and then stopped is
    not named; a node that joined after the pipeline was built and is killed is, once Ray declares it dead (missed
    heartbeats)."""
    import ray
    from ray.core.generated.autoscaler_pb2 import DrainNodeReason

    from emostream.live.nodes import NodeWatch, alive_nodes

    with local_cluster() as cluster:
        cluster.start_head(1)
        cluster.add_node("idle", 1)
        watch = NodeWatch(check_seconds=0)  # looks at every call (the job's looks every CHECK_SECONDS)
        assert watch.nodes == set(cluster.alive().values()) and watch.lost() == []
        cluster.add_node("second", 1)  # e.g. the autoscaler's: restarted actors may go there
        assert watch.lost() == []  # the job looks every CHECK_SECONDS
        nodes = cluster.alive()
        gcs = ray._private.worker.global_worker.gcs_client  # the autoscaler's own call
        accepted, why = gcs.drain_node(nodes["idle"], DrainNodeReason.Value("DRAIN_NODE_REASON_IDLE_TERMINATION"),
                                       "idle", 0)
        assert accepted, why
        cluster.kill("idle")  # the autoscaler ends the drained node's machine
        cluster.kill("second")
        deadline = time.monotonic() + 180
        while alive_nodes() != {nodes["head"]}:  # both declared dead
            assert time.monotonic() < deadline, f"the killed nodes were never declared dead: {alive_nodes()}"
            time.sleep(0.5)
        assert watch.lost() == [nodes["second"]]
