"""The live job on a Ray cluster of two nodes on this machine: where its actors and tasks run, where the CPU goes,
and its events and latency; optionally with the second node killed mid-load.

A head and a second node, each a `ray start` on 127.0.0.1 (`tests/ray_cluster.py`, the same code as the two-node
test), a Tansu broker, the Serve app, and the live job as this process's driver with two perception actors and
two session actors (spread over the nodes). N streams of read speech (the five LibriVox recordings with pauses,
about 31 s) are published in real time in 0.5 s segments, starting together. Printed per node: the job's actors
by class and running tasks by name, the CPU seconds its processes spent during the load (the driver apart: it
runs outside both nodes), and the events of the streams whose session actor was there; then the events and
end-to-end latency of the load (bench/live.py's measure). `--kill-after N`: the second node is killed (every one
of its processes, by process id) once N events are out, and the load goes on on the head.

Both nodes share this machine's cores: the split says where work was placed, not that two machines are faster.
Figures are printed, never asserted. Run inside a loopback-only namespace:
    unshare -n sh -c 'ip link set lo up && exec env RAY_AUTH_MODE=disabled PYTHONPATH=. .venv/bin/python bench/cluster.py'
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.ray_cluster, bench.live

from bench.live import SPEECH, run_load, start_job  # noqa: E402
from emostream.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from emostream.kafka.clients import ensure_topics  # noqa: E402
from emostream.live.sessions import owner  # noqa: E402
from emostream.media.synthetic import speech_track  # noqa: E402
from emostream.settings import load_settings  # noqa: E402
from tests.ray_cluster import LocalCluster, local_cluster  # noqa: E402

ACTOR_CLASSES = {"SegmentStage": "perception", "SessionActor": "session", "ServeReplica": "serve replica"}


def cpu_seconds(cluster: LocalCluster) -> dict[str, dict[int, float]]:
    """Per node name: CPU seconds (user + system) so far of each of its processes, by pid."""
    out: dict[str, dict[int, float]] = {}
    for name, node in cluster.nodes.items():
        out[name] = {}
        for process in node.processes():
            try:
                times = process.cpu_times()
                out[name][process.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return out


def spent(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """Per node: CPU seconds between two snapshots (processes that started meanwhile count whole; those that ended
    meanwhile are missed)."""
    return {name: sum(seconds - before.get(name, {}).get(pid, 0.0) for pid, seconds in pids.items())
            for name, pids in after.items()}


def placement(cluster: LocalCluster, group_id: str) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]], dict[str, str]]:
    """Per node name: live actors by kind, running tasks by name; and which node each session actor is on."""
    from ray.util.state import list_actors, list_tasks

    nodes = {node_id: name for name, node_id in cluster.alive().items()}
    actors: dict[str, Counter[str]] = defaultdict(Counter)
    sessions: dict[str, str] = {}
    for actor in list_actors(address=cluster.dashboard, filters=[("state", "=", "ALIVE")], limit=1000):
        node = nodes.get(actor.node_id, "?")
        kind = next((k for cls, k in ACTOR_CLASSES.items() if cls in actor.class_name), actor.class_name)
        actors[node][kind] += 1
        if actor.name and actor.name.startswith(f"emostream-session-{group_id}-"):
            sessions[actor.name] = node
    tasks: dict[str, Counter[str]] = defaultdict(Counter)
    for task in list_tasks(address=cluster.dashboard, filters=[("state", "=", "RUNNING"), ("type", "=", "NORMAL_TASK")],
                           limit=1000):
        tasks[nodes.get(task.node_id, "?")][task.name] += 1
    return actors, tasks, sessions


def print_split(title: str, cluster: LocalCluster, group_id: str, cpu: dict[str, float], events: Counter[str],
                session_actors: int) -> None:
    """Per node: CPU seconds, actors by kind, running tasks, and the `events` of streams whose session actor is there."""
    actors, tasks, sessions = placement(cluster, group_id)
    print(title)
    for node in sorted(set(actors) | set(cpu)):
        stitched = sum(count for stream, count in events.items()
                       if sessions.get(f"emostream-session-{group_id}-{owner(stream, session_actors)}") == node)
        print(f"  {node:7s} cpu {cpu.get(node, 0.0):7.1f} s  actors {dict(actors.get(node, {}))}  "
              f"tasks {dict(tasks.get(node, {}))}" + (f"  events stitched here {stitched}" if events else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4, help="concurrent real-time streams (default 4)")
    parser.add_argument("--head-cpus", type=float, default=3, help="logical CPUs of the head (it must hold the whole "
                                                                   "job once the second node is gone)")
    parser.add_argument("--second-cpus", type=float, default=2, help="logical CPUs of the second node")
    parser.add_argument("--kill-after", type=int, default=0, metavar="N",
                        help="kill the second node once N events of the load are out (default 0: never)")
    args = parser.parse_args()
    from emostream.serve.app import deploy

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port(), Path(tmp) / "broker") as broker, \
            local_cluster() as cluster:
        cluster.start_head(args.head_cpus, dashboard=True)
        cluster.add_node("second", args.second_cpus)
        media = speech_track(sorted(SPEECH.glob("*.wav")), Path(tmp) / "talk.wav")
        settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 4, "group_id": "bench"},
                                 serve={"port": free_port()}, ingest={"segment_seconds": 0.5},
                                 live={"perception_actors": 2, "session_actors": 2, "metrics_port": 0})
        ensure_topics(settings.kafka)
        deploy(settings)
        print(f"# cluster bench: a head ({args.head_cpus:g} CPUs) and a second node ({args.second_cpus:g} CPUs) on "
              f"{psutil.cpu_count()} cores; {args.streams} streams of read speech in real time, 0.5 s segments")
        job, stop, runner, warm = start_job(settings, media)
        print(f"warm-up stream: {warm['events']} events, p50 {warm['p50']:.2f} s")
        before, events_before = cpu_seconds(cluster), job.stats.events
        if args.kill_after:
            def kill_second() -> None:
                while job.stats.events < events_before + args.kill_after and not stop.is_set():
                    time.sleep(0.2)
                if not stop.is_set():
                    print_split("per node before the kill (CPU seconds since the load started):", cluster,
                                settings.kafka.group_id, spent(before, cpu_seconds(cluster)), Counter(),
                                settings.live.session_actors)
                    pids = cluster.kill("second")
                    print(f"killed the second node ({len(pids)} processes) after {job.stats.events - events_before} "
                          f"events of the load", flush=True)

            threading.Thread(target=kill_second, daemon=True).start()
        driver_before = sum(psutil.Process().cpu_times()[:2])
        restarts = job.stats.restarts
        load = run_load(job, settings, args.streams, media, "load")
        cpu = spent(before, cpu_seconds(cluster))
        cpu["driver"] = sum(psutil.Process().cpu_times()[:2]) - driver_before
        events = Counter(stream for stream, _ in job.latencies if stream.startswith("load-"))
        print_split("per node (CPU seconds during the load; events by where their stream's session actor is now):",
                    cluster, settings.kafka.group_id, cpu, events, settings.live.session_actors)
        print(f"load: {load['events']} events, repeats after a rebuild included ({dict(sorted(events.items()))}), p50 {load['p50']:.2f} s, "
              f"p95 {load['p95']:.2f} s, drift {load['drift']:+.2f} s, pipeline rebuilds {job.stats.restarts - restarts}")
        stop.set()
        runner.join()


if __name__ == "__main__":
    main()
