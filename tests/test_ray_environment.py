"""Ray's and Serve's housekeeping intervals: the local Ray the CLI starts and the cluster's pods run with the same ones,
and a value the user set wins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emostream.cli.common import RAY_ENVIRONMENT, ray_environment

SETTINGS_ENV = Path(__file__).resolve().parent.parent / "k8s" / "base" / "settings.env"


def test_the_cluster_pods_get_the_intervals_the_local_ray_gets() -> None:
    lines = [line.split("=", 1) for line in SETTINGS_ENV.read_text().splitlines() if line and not line.startswith("#")]
    pods = {name: value for name, value in lines if name.startswith("RAY_SERVE_")}
    assert pods == RAY_ENVIRONMENT


def test_a_variable_already_set_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    first, *rest = RAY_ENVIRONMENT
    monkeypatch.setenv(first, "0.25")
    for name in rest:
        monkeypatch.delenv(name, raising=False)
    ray_environment()
    assert os.environ[first] == "0.25"
    assert all(os.environ[name] == RAY_ENVIRONMENT[name] for name in rest)
