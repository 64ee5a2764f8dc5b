"""What several commands share: settings from the arguments, the Ray connection, the live job, and where the
project's deployment files and the shared sample recordings are."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from emostream.metrics import Metrics, serve_metrics
from emostream.settings import Settings, load_settings

if TYPE_CHECKING:
    from emostream.live.job import LiveJob

# Ray, Serve and the live job load torch and models: imported inside the functions that start them, so that
# `--help` and the light commands (schema, broker, publish, tail) start in well under a second.

# What `ArgumentParser.add_subparsers` returns; argparse names the type only privately.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

PROJECT = Path(__file__).resolve().parent.parent.parent
DEPLOYMENTS_DIR = PROJECT / "deployments"
SHARED_DATA = PROJECT.parent / "shared" / "data"
SHARED_FACE_VIDEO = SHARED_DATA / "faces-pyfeat" / "WolfgangLanger_Pexels.mp4"
SHARED_SPEECH = SHARED_DATA / "speech-librivox"
SHARED_MEMORY = Path("/dev/shm")  # a RAM file system (Linux): where the object store overflows when spilling is off


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings file of `--config`, with the command's `--bootstrap-servers` over it."""
    overrides: dict[str, dict[str, object]] = {}
    if getattr(args, "bootstrap_servers", None):
        overrides.setdefault("kafka", {})["bootstrap_servers"] = args.bootstrap_servers
    return load_settings(args.config, **overrides)


def spilling(directory: Path | None) -> dict[str, object]:
    """Ray's `_system_config` for object spilling: off unless `directory` is given.

    Ray spills objects to local disk when its object store is full, and the live job's objects are decoded frames
    and audio: raw media would reach disk unasked. Off, a full store makes producers wait (Ray Data holds back).
    Ray also has no switch for its "fallback allocation" (objects created past a full store go into files of
    the spilling directory, by default Ray's temp dir on disk): with spilling off that directory is /dev/shm, so
    they stay in memory. With `directory` (live.spill_directory, e.g. an encrypted volume) objects spill there only.
    """
    if directory is not None:
        return {"automatic_object_spilling_enabled": True, "object_spilling_config": _filesystem(directory)}
    off: dict[str, object] = {"automatic_object_spilling_enabled": False}
    if SHARED_MEMORY.is_dir():
        off["object_spilling_config"] = _filesystem(SHARED_MEMORY)
    return off


def _filesystem(directory: Path) -> str:
    return json.dumps({"type": "filesystem", "params": {"directory_path": str(directory)}})


# Ray's and Serve's housekeeping in the Ray that `ray_local` starts (k8s/base/settings.env sets the same in the
# cluster's pods). Their defaults poll ten times a second, which on two cores was a large part of the idle live
# job (bench/live.py: the idle job's CPU by process). A variable already set in the environment wins.
RAY_ENVIRONMENT = {
    # the Serve controller's reconcile loop (default 0.1 s): deploys, health checks and autoscaling decisions
    # happen at most this much later; the controller was the largest of Ray's own idle processes
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1.0",
    # how often replicas, proxies and handles hand their cached request metrics to Ray's metrics (default 100 ms);
    # Prometheus scrapes every 15 s or more
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    # task events the GCS keeps for the dashboard's task table (default 100,000, about 1 KB each): an endless
    # live job fills that store for hours, and the 1-hour soak read it as the GCS growing by 91%; 2,000 (Ray Data's and
    # Serve's own tasks: the job's per-segment calls report none, live.task_events) filled in the soak's first
    # quarter hour at four streams
    "RAY_task_events_max_num_task_in_gcs": "2000",
    # and for each task event that store lets go, the GCS remembers the task's id to count it as lost, up to
    # 1,000,000 per job (about 40 bytes each, in a hash set that doubles): an endless job passes 100,000 an hour
    # at four streams, and the soak saw the GCS creep on after its store was full (bench/gcs.py: 700,000 tiny
    # tasks took it 48 -> 120 MB with the default, and it stayed at 85 MB with this)
    "RAY_task_events_max_dropped_task_attempts_tracked_per_job_in_gcs": "10000",
}


def ray_environment() -> None:
    """Set `RAY_ENVIRONMENT` for this process and the Ray it starts (before Ray or Serve is imported: Serve reads
    its variables at import)."""
    for name, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def ray_local(cpus: int | None, spill_directory: Path | None = None, log_to_driver: bool = True) -> None:
    """Start a local Ray (object spilling off, or to `spill_directory` only, housekeeping as in `RAY_ENVIRONMENT`),
    unless one is running already."""
    ray_environment()
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=log_to_driver,
                 _system_config=spilling(spill_directory))


def ray_connect(address: str | None, cpus: int | None, spill_directory: Path | None = None) -> None:
    """Join the Ray cluster at `address` ("auto" inside a cluster pod; the cluster's own start decides spilling,
    see k8s/README.md), or start a local one."""
    import ray

    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray_local(cpus, spill_directory)


def live_job(settings: Settings, profile: str = "local") -> LiveJob:
    """The live job on the connected Ray: the Serve app deployed if absent, the metrics endpoint up."""
    from emostream.live.job import LiveJob
    from emostream.live.serve_client import ServeClient
    from emostream.serve.app import deploy

    deploy(settings, profile)
    metrics = Metrics()
    serve_metrics(metrics, settings.live.metrics_host, settings.live.metrics_port)
    return LiveJob(settings, ServeClient.for_settings(settings), metrics)
