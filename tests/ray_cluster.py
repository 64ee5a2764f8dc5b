"""A Ray cluster of several nodes on this machine, for tests and benches: each node a `ray start --block` process on
127.0.0.1 (run inside a loopback-only namespace), stopped or killed by process id, never by name (`ray stop` would
stop every Ray on the machine).

Each node carries a custom resource named after it (`node_resource`), so a test can tell the nodes apart (they
share the IP address) and pin work to one of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from emostream.kafka.broker import free_port

BIN = Path(sys.executable).parent
JOIN_SECONDS = 300  # a node joins in a few seconds on a quiet machine; a head took over 120 s at load 90 on 2 cores


def node_resource(name: str) -> str:
    """The custom resource (one unit) that marks node `name`."""
    return f"cluster_node_{name}"


@dataclass
class Node:
    name: str
    process: subprocess.Popen[bytes]  # `ray start --block`: the node's processes are its descendants

    def processes(self) -> list[psutil.Process]:
        """The node's processes (raylet, workers, agents) and the `ray start` process, children first."""
        try:
            parent = psutil.Process(self.process.pid)
            return [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            return []


class LocalCluster:
    """Nodes started with `ray start` on 127.0.0.1, with this process connected as a driver once the head is up.
    The head's GCS is at `address`; `dashboard` serves the state API (`ray.util.state`) when the head was started
    with `dashboard=True`."""

    def __init__(self, temp_dir: str) -> None:
        self.temp_dir = temp_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard: str | None = None
        self.nodes: dict[str, Node] = {}
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def start_head(self, cpus: float, name: str = "head", dashboard: bool = False) -> None:
        options = [f"--port={self.port}", f"--temp-dir={self.temp_dir}"]
        if dashboard:
            dashboard_port = free_port()
            self.dashboard = f"http://127.0.0.1:{dashboard_port}"
            options += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
        else:
            options += ["--include-dashboard=false"]
        self._start(name, cpus, ["--head", *options])

    def add_node(self, name: str, cpus: float) -> None:
        """A node joining the head, and wait until the cluster counts it."""
        self._start(name, cpus, [f"--address={self.address}"])

    def _start(self, name: str, cpus: float, options: list[str]) -> None:
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} is already in the cluster ({sorted(self.nodes)}): choose another")
        command = [str(BIN / "ray"), "start", *options, f"--num-cpus={cpus:g}", "--node-ip-address=127.0.0.1",
                   f"--resources={json.dumps({node_resource(name): 1})}", "--block", "--disable-usage-stats"]
        self.nodes[name] = Node(name, subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL))
        self._wait_for(name)

    def _wait_for(self, name: str) -> None:
        """Until node `name` is alive in the cluster (this process is the cluster's driver from the head's start)."""
        import ray  # noqa: PLC0415

        deadline = time.monotonic() + JOIN_SECONDS
        while True:
            process = self.nodes[name].process
            if process.poll() is not None:
                raise RuntimeError(f"`ray start` of node {name!r} exited with {process.returncode} (address {self.address})")
            if not ray.is_initialized():
                try:
                    ray.init(address=self.address, log_to_driver=False)
                except ConnectionError:  # the head's GCS is not up yet
                    pass
            if ray.is_initialized() and name in self.alive():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {name!r} did not join {self.address} within {JOIN_SECONDS} s")
            time.sleep(0.5)

    def alive(self) -> dict[str, str]:
        """The nodes alive in the cluster: name → Ray node id."""
        import ray  # noqa: PLC0415

        return {name: node["NodeID"] for node in ray.nodes() if node["Alive"]
                for name in self.nodes if node_resource(name) in node["Resources"]}

    def kill(self, name: str) -> list[int]:
        """Crash node `name`: SIGKILL to every one of its processes at once (as a machine that dies). Its pids."""
        members = self.nodes.pop(name).processes()
        _each(members, psutil.Process.kill)
        psutil.wait_procs(members, timeout=10)
        return [member.pid for member in members]

    def stop(self) -> None:
        """Disconnect, SIGTERM every node's processes (workers before the head), then SIGKILL what is left after 20 s."""
        import ray  # noqa: PLC0415

        ray.shutdown()
        members = [member for name in reversed(list(self.nodes)) for member in self.nodes[name].processes()]
        _each(members, psutil.Process.terminate)
        _, alive = psutil.wait_procs(members, timeout=20)
        _each(alive, psutil.Process.kill)
        psutil.wait_procs(alive, timeout=10)
        self.nodes.clear()


def _each(members: list[psutil.Process], action: Callable[[psutil.Process], None]) -> None:
    """`action` (kill, terminate) on every process that is still there."""
    for member in members:
        try:
            action(member)
        except psutil.NoSuchProcess:
            pass


@contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    """A cluster with no nodes yet (add them with `start_head`, `add_node`), stopped by process id on exit."""
    # A short temp dir of our own: Ray's Unix socket paths must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    cluster = LocalCluster(temp_dir)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
