"""`emostream train --address auto` trains on a Ray cluster that is already running, as k8s/jobs/train does on
the batch cluster: a head with no CPUs for tasks (drivers only) and a worker node that runs the Ray Train
workers, both started with `ray start` and stopped by process id."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from emostream.settings import load_settings
from emostream.training.features import Augment, cache_key
from tests.ray_cluster import BIN, local_cluster
from tests.test_training import LABELS, synthetic_cache

pytestmark = [pytest.mark.broker, pytest.mark.slow]  # starts Ray in the loopback-only namespace; about 2 minutes


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
    synthetic_cache(tmp_path / "features" / cache_key(load_settings(), Augment(copies=0, seed=0), faces=False))  # .wav: sound only
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_with_address_runs_its_workers_on_the_existing_cluster(tmp_path: Path) -> None:
    import ray

    config = write_config(tmp_path)
    with local_cluster() as cluster:
        cluster.start_head(cpus=0)
        cluster.add_node("worker", cpus=2)
        address, worker_node = cluster.address, cluster.alive()["worker"]
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
