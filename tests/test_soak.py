"""bench/soak.py, briefly: it runs the live job under 4 streams with bad records and prints its figures (structure only:
speed and memory figures are the bench's to print, never a test's to assert)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]  # starts a broker and Ray; minutes

REPO = Path(__file__).resolve().parent.parent


def test_a_short_soak_prints_every_process_the_lag_and_a_summary() -> None:
    # a loaded machine can take over Ray's default 60 s to register the node
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "RAY_raylet_start_wait_time_s": "300"}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--minutes", "3", "--every", "5",
                           "--warmup-minutes", "1", "--bad-percent", "5", "--cpus", "2"],
                          capture_output=True, text=True, timeout=900, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    summary = json.loads(next(line for line in lines if line.startswith("summary "))[len("summary "):])
    assert summary["job_alive"] is True
    assert summary["samples"] > 0 and summary["bad_records_sent"] > 0
    names = [row["process"] for row in summary["processes"]]
    for expected in ("driver[", "ray::ServeReplica:emostream:Scorer[", "ray::SessionActor[", "raylet[", "tansu"):
        assert any(name.startswith(expected) for name in names), (expected, names)
    for row in summary["processes"]:
        assert row["first_mb"] > 0 and row["last_mb"] > 0 and isinstance(row["flat"], bool)
    assert isinstance(summary["memory_flat"], bool) and isinstance(summary["lag_bounded"], bool)
    assert set(summary["lag"]) == {"max", "first_quarter_max", "last_quarter_max", "last_quarter_median"}
    assert any(line.startswith("memory flat within 5%") for line in lines)
    assert any(line.startswith("consumer lag: max") for line in lines)
