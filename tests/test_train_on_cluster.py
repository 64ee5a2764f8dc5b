"""`emostream train --address auto` trains on a Ray cluster that is already running, as k8s/jobs/train does on
the batch cluster: a head with no CPUs for tasks (drivers only) and a worker node that runs the Ray Train
workers, both started with `ray start` and stopped by process id."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import yaml

from emostream.kafka.broker import free_port
from emostream.settings import load_settings
from emostream.training.features import Augment, cache_key
from tests.test_training import LABELS, synthetic_cache

pytestmark = [pytest.mark.broker, pytest.mark.slow]  # starts Ray in the loopback-only namespace; about 2 minutes

BIN = Path(sys.executable).parent


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each `ray start --block` and every process it started (found by parent pid), then SIGKILL leftovers."""
    tree: list[psutil.Process] = []
    for process in processes:
        try:
            parent = psutil.Process(process.pid)
            tree += parent.children(recursive=True) + [parent]
        except psutil.NoSuchProcess:
            pass
    for member in tree:
        try:
            member.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=20)
    for member in alive:
        member.kill()
    psutil.wait_procs(alive, timeout=10)


@contextmanager
def ray_cluster(worker_cpus: int) -> Iterator[str]:
    """A two-node Ray cluster on 127.0.0.1 (head with 0 CPUs, one worker node); yields its GCS address."""
    import ray

    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    # A short temp dir of our own: Ray's Unix socket paths must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    common = ["--node-ip-address=127.0.0.1", "--block", "--disable-usage-stats"]
    processes = [subprocess.Popen([str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=0",
                                   "--include-dashboard=false", f"--temp-dir={temp_dir}", *common], env=env)]
    try:
        time.sleep(3)
        processes.append(subprocess.Popen([str(BIN / "ray"), "start", f"--address={address}", f"--num-cpus={worker_cpus}",
                                           *common], env=env))
        ray.init(address=address, log_to_driver=False)
        deadline = time.monotonic() + 120
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline, f"the worker node never joined {address}"
            assert all(p.poll() is None for p in processes), "a `ray start` exited"
            time.sleep(1)
        yield address
    finally:
        ray.shutdown()
        stop(processes)
        shutil.rmtree(temp_dir, ignore_errors=True)


def write_config(tmp_path: Path) -> Path:
    """A tiny two-worker training config over a manifest whose features are already in the cache (no extraction)."""
    media = tmp_path / "clip.wav"
    media.write_bytes(b"")  # the manifest reader only checks that media exists; the cache holds the features
    manifest = tmp_path / "train.csv"
    manifest.write_text("media,speaker,label,key\n" + "".join(
        f"{media},spk{s},{LABELS[(s + k) % len(LABELS)]},s{s}-{k}\n" for s in range(4) for k in range(16)))
    config = {"preset": "tiny", "data": {"dataset": "manifest", "path": str(manifest), "validation_speakers": ["spk3"]},
              "feature_cache": str(tmp_path / "features"), "workers": 2, "batch_size": 8, "zero_stage": 2,
              "stages": [{"name": "all", "epochs": 1, "learning_rate": 3e-3}], "run_dir": str(tmp_path / "runs"),
              "name": "cluster-run", "export": str(tmp_path / "export"), "unknown_speaker_fraction": 0.0}
    # The cache folder the command will look in: same settings (this environment) and augmentation recipe.
    synthetic_cache(tmp_path / "features" / cache_key(load_settings(), Augment(copies=0, seed=0)))
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_with_address_runs_its_workers_on_the_existing_cluster(tmp_path: Path) -> None:
    import ray

    config = write_config(tmp_path)
    with ray_cluster(worker_cpus=2) as address:
        worker_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0)
        # `--address auto`, as k8s/jobs/train runs it: Ray resolves it from RAY_ADDRESS (which Ray's job manager
        # sets for a job's entrypoint), here naming this cluster rather than any other Ray on the machine.
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1", "RAY_ADDRESS": address}
        command = subprocess.Popen([str(BIN / "emostream"), "train", str(config), "--address", "auto"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = command.communicate(timeout=540)
        assert command.returncode == 0, output[-4000:]
        assert "model exported to" in output and (tmp_path / "export" / "config.json").is_file()

        # The command was a driver of this cluster, and its training workers were actors on the worker node.
        jobs = [j for j in ray._private.state.jobs() if j["DriverPid"] == command.pid]
        assert len(jobs) == 1, f"no job of pid {command.pid} in {address}: it started a Ray of its own"
        actors = [a for a in ray._private.state.actors().values() if a["JobID"] == jobs[0]["JobID"]]
        train_workers = [a for a in actors if "TrainWorker" in a["ActorClassName"]]
        assert len(train_workers) == 2, sorted(a["ActorClassName"] for a in actors)
        assert {a["Address"]["NodeID"] for a in train_workers} == {worker_node}
