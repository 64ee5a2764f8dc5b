"""Training throughput of the `lite` preset: samples per second with 1 and 2 Ray Train workers, ZeRO stages 0 and 2.

Uses the RAVDESS feature cache that `emostream train deployments/train-lite.yaml`
builds (run that first). Each setting trains two epochs through the real
`fit` (Ray Train + DeepSpeed on CPU); the second epoch's rate is reported
(the first pays for process start, DeepSpeed set-up and warm-up). Figures are
printed, never asserted. Run inside a loopback-only namespace, e.g.
    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/train.py'
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
from pathlib import Path

from emostream.training.features import cache_folder
from emostream.training.train import fit, load_train_config, read_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="deployments/train-lite.yaml", help="training config whose feature cache to use")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs for the local Ray instance")
    args = parser.parse_args()
    import ray

    from emostream.settings import load_settings

    config = load_train_config(args.config)
    cache = cache_folder(config.feature_cache, load_settings(), config.augment, read_dataset(config.data, config.label_set))
    if not any(cache.glob("*.parquet")):
        sys.exit(f"no feature cache at {cache}: run `emostream train {args.config}` first")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(f"# train bench: {platform.machine()}, {args.cpus} CPUs, lite preset, batch {config.batch_size} per worker, fp32")
    print(f"{'workers':>8}{'ZeRO':>6}{'samples/s (all workers)':>26}{'per worker':>12}")
    for workers in (1, 2):
        if workers > args.cpus:
            continue
        for stage in (0, 2):
            with tempfile.TemporaryDirectory() as tmp:
                run = config.model_copy(update={
                    "workers": workers, "zero_stage": stage, "run_dir": Path(tmp), "name": "bench", "export": Path(tmp) / "export",
                    "stages": [config.stages[0].model_copy(update={"epochs": 2})],
                })
                fit(run, cache)
                rows = list(csv.DictReader((Path(tmp) / "bench" / "metrics.csv").open()))
                per_worker = float(rows[-1]["samples_per_second"])
                print(f"{workers:>8}{stage:>6}{per_worker * workers:>26.0f}{per_worker:>12.0f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
