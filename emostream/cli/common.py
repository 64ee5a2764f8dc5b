"""What several commands share: settings from the arguments, the Ray connection, the live job, and where the
project's deployment files and the shared sample recordings are."""

from __future__ import annotations

import argparse
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


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings file of `--config`, with the command's `--bootstrap-servers` over it."""
    overrides: dict[str, dict[str, object]] = {}
    if getattr(args, "bootstrap_servers", None):
        overrides.setdefault("kafka", {})["bootstrap_servers"] = args.bootstrap_servers
    return load_settings(args.config, **overrides)


def ray_local(cpus: int | None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True)


def ray_connect(address: str | None, cpus: int | None) -> None:
    """Join the Ray cluster at `address` ("auto" inside a cluster pod), or start a local one."""
    import ray

    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray_local(cpus)


def live_job(settings: Settings, profile: str = "local") -> LiveJob:
    """The live job on the connected Ray: the Serve app deployed if absent, the metrics endpoint up."""
    from emostream.live.job import LiveJob
    from emostream.live.serve_client import ServeClient
    from emostream.serve.app import deploy

    deploy(settings, profile)
    metrics = Metrics()
    serve_metrics(metrics, settings.live.metrics_host, settings.live.metrics_port)
    return LiveJob(settings, ServeClient.for_settings(settings), metrics)
