"""Raw media never reaches disk through Ray's object store (22.18): the Ray the CLI starts spills nothing by default,
and its store overflows into shared memory, not files in Ray's temp dir; with live.spill_directory it spills there.

Each case starts Ray with `ray_local` in a child process, with an 80 MiB object store, and puts 160 MB of objects
(as decoded frames would fill it), then reports Ray's system config, the files the raylet's store has mapped
and the files in the spill directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker  # starts Ray: loopback-only namespace

REPO = Path(__file__).resolve().parent.parent
FILL = """
import functools, json, os, sys
import numpy as np
import ray
ray.init = functools.partial(ray.init, object_store_memory=80 * 2**20)  # a small store, so that a few puts fill it
from emostream.cli.common import ray_local
from ray._private.state import state
spill = sys.argv[1] or None
ray_local(1, spill)
held = [ray.put(np.full(20_000_000, i, dtype=np.uint8)) for i in range(8)]
node = ray._private.worker.global_worker.node
raylet = node.all_processes["raylet"][0].process.pid
mapped = sorted({line.split(None, 5)[5].strip() for line in open(f"/proc/{raylet}/maps")
                 if len(line.split(None, 5)) == 6 and "plasma" in line})
spilled = [os.path.join(d, f) for d, _, files in os.walk(spill) for f in files] if spill else []
print(json.dumps({"config": state.get_system_config(), "mapped": mapped, "temp_dir": node.get_temp_dir_path(),
                  "spilled": spilled}))
ray.shutdown()
"""


def fill_the_store(spill_directory: Path | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", FILL, str(spill_directory or "")], capture_output=True, text=True,
                          timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_ray_the_cli_starts_spills_nothing_and_overflows_into_memory() -> None:
    found = fill_the_store(None)
    assert found["config"]["automatic_object_spilling_enabled"] is False
    assert found["mapped"] and all(path.startswith("/dev/shm/") for path in found["mapped"]), found["mapped"]
    assert not any(path.startswith(found["temp_dir"]) for path in found["mapped"])


def test_a_spill_directory_is_where_objects_spill(tmp_path: Path) -> None:
    found = fill_the_store(tmp_path)
    assert found["config"]["automatic_object_spilling_enabled"] is True
    assert found["spilled"] and all(path.startswith(str(tmp_path)) for path in found["spilled"]), found
