"""The GCS under an endless stream of tasks: does its memory level off once its task-event store is full?

An endless live job sends Ray's GCS about 100,000 task events an hour at four streams. The GCS keeps the latest
`RAY_task_events_max_num_task_in_gcs` of them, and for each one it lets go it remembers the task's id, to count
it as lost, up to `RAY_task_events_max_dropped_task_attempts_tracked_per_job_in_gcs` (1,000,000 by default).
This runs the same load, two actors answering tiny calls as fast as the driver sends them, once on a fresh local
Ray with emostream's settings (`emostream.cli.common.RAY_ENVIRONMENT`) but Ray's default for the ids it
remembers, and once with emostream's settings, and prints the GCS's resident memory (RSS) every 15 s of each.
One call here is one task; at about 3,000 a second, 4 minutes are about seven hours of the live job's tasks.
Figures are printed, never asserted. Run inside a loopback-only namespace, niced on a shared machine:
    unshare -n sh -c 'ip link set lo up && exec env RAY_AUTH_MODE=disabled nice -n 10 .venv/bin/python bench/gcs.py'
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import psutil

from emostream.cli.common import RAY_ENVIRONMENT

REMEMBERED = "RAY_task_events_max_dropped_task_attempts_tracked_per_job_in_gcs"
SAMPLE_SECONDS = 15
CALLS_PER_ROUND = 50  # per actor; the driver waits for a round before it sends the next


def load(seconds: float) -> list[dict[str, float]]:
    """Tiny actor calls for `seconds` on a local Ray started here; the GCS's RSS and the calls so far, every 15 s."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    gcs = next(child for child in psutil.Process().children(recursive=True) if "gcs_server" in child.name())

    @ray.remote(num_cpus=0)
    class Echo:
        def echo(self, value: int) -> int:
            return value

    actors = [Echo.remote() for _ in range(2)]
    ray.get([actor.echo.remote(0) for actor in actors])
    start = time.monotonic()
    calls, samples, next_sample = 0, [], start
    while (now := time.monotonic()) - start < seconds:
        if now >= next_sample:
            samples.append({"seconds": round(now - start), "tasks": calls, "gcs_mb": round(gcs.memory_info().rss / 1e6, 1)})
            next_sample += SAMPLE_SECONDS
        ray.get([actor.echo.remote(i) for i in range(CALLS_PER_ROUND) for actor in actors])
        calls += CALLS_PER_ROUND * len(actors)
    ray.shutdown()
    return samples


def run(seconds: float, environment: dict[str, str]) -> list[dict[str, float]]:
    """`load` in a child process, so each setting gets a Ray (and a GCS) of its own."""
    child = subprocess.run([sys.executable, __file__, "--child", "--seconds", str(seconds)], env=environment,
                           capture_output=True, text=True, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="how long each setting is loaded")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(load(args.seconds)))
        return
    ours = {**os.environ, **RAY_ENVIRONMENT}
    settings = {"Ray's default for the ids it remembers": {k: v for k, v in ours.items() if k != REMEMBERED},
                f"emostream's ({REMEMBERED}={RAY_ENVIRONMENT[REMEMBERED]})": ours}
    results = {name: run(args.seconds, environment) for name, environment in settings.items()}
    for name, samples in results.items():
        print(f"\n{name}\n{'seconds':>8} {'tasks':>9} {'GCS MB':>8}")
        for sample in samples:
            print(f"{sample['seconds']:>8} {sample['tasks']:>9} {sample['gcs_mb']:>8}")
        half = samples[len(samples) // 2:]
        print(f"second half: {min(s['gcs_mb'] for s in half)} to {max(s['gcs_mb'] for s in half)} MB")
    print("summary " + json.dumps(results))


if __name__ == "__main__":
    main()
