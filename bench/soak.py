"""Soak: the live job under steady real-time streams with 1% bad records, for an hour; is its memory flat, its lag bounded?

Everything real: a Tansu broker, local Ray, the Serve app, the live job. `--streams` lanes each publish read
speech (the five LibriVox recordings with pauses, about 31 s) in real time, one stream after another; beside
them, known-bad records (emostream.ingest.bad_records: headers out of range or not UTF-8, a 100 KB key, an
oversized payload, garbage media, too many audio channels) make `--bad-percent` of the records. Every
`--every` seconds it samples the resident memory (RSS) of every process (this driver, each Ray process by its
title, e.g. ray::ServeReplica:emostream:Scorer or ray::SessionActor, Ray's own daemons, the broker) and the
consumer lag. At the end it compares each process's mean RSS over the first and the last quarter of the run
after `--warmup-minutes` (models load and caches fill during warm-up), and prints a table, whether every
process stayed within 5%, the lag figures, and a last line `summary {json}` with the same figures.
Figures are printed, never asserted. Run inside a loopback-only namespace, niced on a shared machine:
    unshare -n sh -c 'ip link set lo up && exec env RAY_AUTH_MODE=disabled nice -n 10 .venv/bin/python bench/soak.py'
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from emostream.cli.common import ray_local
from emostream.ingest.bad_records import bad_records, send_bad_records
from emostream.ingest.publish import publish
from emostream.kafka.broker import EmbeddedBroker, free_port
from emostream.kafka.clients import ensure_topics, producer
from emostream.live.job import LiveJob
from emostream.live.serve_client import ServeClient
from emostream.media.synthetic import speech_track
from emostream.metrics import Metrics
from emostream.settings import Settings, load_settings

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "speech-librivox"
FLAT = 0.05  # the largest change of a process's mean RSS, first quarter to last, that counts as flat
# The embedded broker is the topics' storage: Tansu's memory:// engine keeps every record and ignores retention.ms
# (checked: 200 MB produced to a topic with a 5 s retention were all still there, and in its RSS, 30 s later), so it
# grows by what is published. It is reported beside the media published, and left out of the job's verdict.
STORE = "tansu"


def process_name(process: psutil.Process) -> str:
    """A Ray worker by its title (actor class, Serve replica), without the method it is running; else the program."""
    argv = process.cmdline()
    first = argv[0].strip() if argv else process.name()
    if first.startswith("ray::"):
        return first.split()[0].split(".")[0]
    scripts = [Path(arg).name for arg in argv[1:3] if arg.endswith(".py")]
    return scripts[0] if scripts else Path(first).name


def sample_memory(names: dict[int, str], anonymous: dict[int, float]) -> dict[int, float]:
    """RSS in MB of this process and every process it started (Ray's daemons and workers, the broker), by pid;
    `names` gets each one's latest name (a Ray worker's title changes when it starts an actor), `anonymous` the
    part of its RSS that is not file-backed or shared (its heap and stacks, where a leak would show)."""
    me = psutil.Process()
    out = {}
    for process in [me, *me.children(recursive=True)]:
        try:
            names[process.pid] = "driver" if process.pid == me.pid else process_name(process)
            info = process.memory_info()
        except psutil.Error:  # it ended between the listing and the read
            continue
        out[process.pid] = info.rss / 1e6
        anonymous[process.pid] = (info.rss - info.shared) / 1e6
    return out


def write_series(path: Path, minutes: list[float], names: dict[int, str], rss: list[dict[int, float]],
                 anonymous: list[dict[int, float]]) -> None:
    """Every sample so far as JSON (rewritten after each sample, so a run that dies still leaves its series)."""
    path.write_text(json.dumps({"minutes": minutes, "names": {str(pid): name for pid, name in names.items()},
                                "rss_mb": [{str(pid): mb for pid, mb in sample.items()} for sample in rss],
                                "anonymous_mb": [{str(pid): mb for pid, mb in sample.items()} for sample in anonymous]}))


def lag_of(metrics: Metrics) -> float:
    return sum(sample.value for family in metrics.lag.collect() for sample in family.samples)


def lanes(settings: Settings, media: Path, streams: int, stop: threading.Event, published: list[int]) -> list[threading.Thread]:
    """One thread per lane, publishing `media` in real time as one stream after another until `stop`; `published`
    gets the size of each stream's media (the embedded broker keeps every record in memory: its RSS grows by that)."""
    def lane(index: int) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            publish(media, f"soak-l{index}-{n}", settings, realtime=True)
            published.append(media.stat().st_size)

    return [threading.Thread(target=lane, args=(i,), daemon=True) for i in range(streams)]


def bad_sender(settings: Settings, every_seconds: float, stop: threading.Event, sent: list[str]) -> threading.Thread:
    """A thread sending one bad record (cycling through the kinds) every `every_seconds`."""
    def run() -> None:
        out = producer(settings.kafka)
        try:
            for n in itertools.count():
                if stop.wait(every_seconds):
                    return
                kinds = bad_records(f"bad-{n}", settings.kafka)
                record = kinds[n % len(kinds)]
                sent.extend(r.kind for r in send_bad_records(out, settings.kafka, [record]))
                out.flush()
        finally:
            out.close()

    return threading.Thread(target=run, daemon=True)


def perception_pool_changes() -> dict[str, int]:
    """How often Ray Data added and removed a perception actor in this Ray session (from its ray-data logs)."""
    import ray  # noqa: PLC0415

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "ray-data"  # noqa: SLF001
    text = (logs / "ray-data.log").read_text(errors="replace")  # each dataset's own log repeats these lines
    return {"added": text.count("Scaling up MapWorker(MapBatches(SegmentStage))"),
            "removed": text.count("Scaled down MapWorker(MapBatches(SegmentStage))")}


def slope_per_hour(minutes: list[float], values: list[float]) -> float:
    """Least-squares growth in units per hour (0 for fewer than two samples)."""
    if len(minutes) < 2 or len(set(minutes)) < 2:
        return 0.0
    return statistics.linear_regression(minutes, values).slope * 60


def memory_verdict(samples: list[dict[int, float]], names: dict[int, str], minutes: list[float]) -> list[dict[str, Any]]:
    """Per process alive through the whole window: mean RSS over the first and the last quarter, the change, and the
    growth over the window's second half in MB per hour (a store that fills to a cap flattens there; a leak does not)."""
    quarter = max(1, len(samples) // 4)
    first, last = samples[:quarter], samples[-quarter:]
    half = len(samples) // 2
    always = set.intersection(*(set(s) for s in samples)) if samples else set()
    rows = []
    for pid in sorted(always, key=lambda pid: (names[pid], pid)):
        before, after = statistics.mean(s[pid] for s in first), statistics.mean(s[pid] for s in last)
        late = slope_per_hour(minutes[half:], [s[pid] for s in samples[half:]])
        rows.append({"process": f"{names[pid]}[{pid}]", "pid": pid, "first_mb": round(before, 1), "last_mb": round(after, 1),
                     "change": round((after - before) / before, 4), "late_mb_per_hour": round(late, 1),
                     "flat": abs(after - before) <= FLAT * before})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long the streams run (default 60)")
    parser.add_argument("--streams", type=int, default=4, help="concurrent real-time streams (default 4)")
    parser.add_argument("--bad-percent", type=float, default=1.0, help="bad records among all records (default 1)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--warmup-minutes", type=float, default=None,
                        help="left out of the memory comparison (default: a sixth of the run, at most 10)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs for the local Ray instance")
    parser.add_argument("--series", type=Path, default=None,
                        help="write every process's RSS samples here (JSON, after every sample), and its anonymous part")
    args = parser.parse_args()
    warmup = args.warmup_minutes if args.warmup_minutes is not None else min(10.0, args.minutes / 6)
    import ray

    from emostream.serve.app import deploy

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port(), Path(tmp) / "broker") as broker:
        media = speech_track(sorted(SPEECH.glob("*.wav")), Path(tmp) / "talk.wav")
        settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 4, "group_id": "soak"},
                                 serve={"port": free_port()}, live={"metrics_port": 0})
        ray_local(args.cpus)  # as `emostream run` starts it (object spilling off)
        deploy(settings)
        ensure_topics(settings.kafka)
        good_per_second = args.streams / settings.ingest.segment_seconds
        bad_every = (100 - args.bad_percent) / args.bad_percent / good_per_second
        print(f"# soak: {args.streams} real-time streams of read speech in {settings.ingest.segment_seconds:g} s segments, "
              f"a bad record every {bad_every:.0f} s ({args.bad_percent:g}%), {args.minutes:g} min, "
              f"samples every {args.every:g} s, warm-up {warmup:g} min, {args.cpus} CPUs", flush=True)
        job = LiveJob(settings, ServeClient.for_settings(settings), Metrics())
        stop, stop_job, sent, published = threading.Event(), threading.Event(), [], []
        runner = threading.Thread(target=job.run, kwargs={"stop": stop_job})
        runner.start()
        threads = [*lanes(settings, media, args.streams, stop, published), bad_sender(settings, bad_every, stop, sent)]
        for thread in threads:
            thread.start()
        finish = threading.Event()  # SIGINT/SIGTERM end the run early, with the figures so far
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: finish.set())
        started = time.monotonic()
        memory: list[dict[int, float]] = []
        anonymous: list[dict[int, float]] = []
        memory_minutes: list[float] = []
        names: dict[int, str] = {}
        lags: list[tuple[float, float]] = []  # (minutes since the start, lag)
        while (minutes := (time.monotonic() - started) / 60) < args.minutes and runner.is_alive() and not finish.is_set():
            lag = lag_of(job.metrics)
            lags.append((minutes, lag))
            if minutes >= warmup:
                anonymous.append({})
                memory.append(sample_memory(names, anonymous[-1]))
                memory_minutes.append(minutes)
                if args.series:
                    write_series(args.series, memory_minutes, names, memory, anonymous)
            total = sum(memory[-1].values()) if memory else float("nan")
            print(f"{minutes:6.1f} min  events {job.stats.events:6d}  dead letters {job.stats.dead_letters:4d}  "
                  f"lag {lag:5.0f}  RSS total {total:8.0f} MB", flush=True)
            finish.wait(args.every)
        alive = runner.is_alive()
        pool_changes = perception_pool_changes()
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        stop_job.set()
        runner.join(timeout=120)
        ray.shutdown()

    rows = memory_verdict(memory, names, memory_minutes)
    print(f"{'process':60s} {'first MB':>9s} {'last MB':>9s} {'change':>8s} {'2nd half MB/h':>14s}  flat")
    for row in rows:
        print(f"{row['process']:60s} {row['first_mb']:9.1f} {row['last_mb']:9.1f} {row['change']:+8.1%} "
              f"{row['late_mb_per_hour']:+14.1f}  {'yes' if row['flat'] else 'NO'}")
    print(f"perception actors added {pool_changes['added']}, removed {pool_changes['removed']} (each addition loads the models)")
    print(f"media published to the embedded broker (memory:// storage keeps it all): {sum(published) / 1e6:.0f} MB")
    compared = {row["pid"] for row in rows}
    came_and_went = sorted(f"{names[pid]}[{pid}]" for pid in set().union(*memory) - compared) if memory else []
    measured = [lag for minutes, lag in lags if minutes >= warmup]
    quarter = max(1, len(measured) // 4)
    lag = {"max": max(measured, default=float("nan")), "first_quarter_max": max(measured[:quarter], default=float("nan")),
           "last_quarter_max": max(measured[-quarter:], default=float("nan")),
           "last_quarter_median": statistics.median(measured[-quarter:]) if measured else float("nan")}
    # Bounded: the lag of the last quarter comes back to what the first quarter saw (it does not grow with time).
    bounded = bool(measured) and lag["last_quarter_median"] <= lag["first_quarter_max"]
    job_rows = [row for row in rows if not row["process"].startswith(STORE)]
    flat = bool(job_rows) and all(row["flat"] for row in job_rows)
    print(f"processes that came or went during the window (not compared): {len(came_and_went)} {came_and_went[:8]}")
    print(f"memory flat within {FLAT:.0%} (first vs last quarter after warm-up, {len(job_rows)} processes of the job and Ray; "
          f"the broker, which stores every record, left out): {'yes' if flat else 'NO'}")
    print(f"consumer lag: max {lag['max']:.0f}, first quarter max {lag['first_quarter_max']:.0f}, last quarter max "
          f"{lag['last_quarter_max']:.0f} (median {lag['last_quarter_median']:.0f}); bounded: {'yes' if bounded else 'NO'}")
    valid = {r.kind for r in bad_records("kinds", settings.kafka) if r.reason is None}  # hostile but valid: no dead letter
    refused = sum(kind not in valid for kind in sent)
    print(f"job alive at the end: {'yes' if alive else 'NO'}; events {job.stats.events}, dead letters "
          f"{job.stats.dead_letters} (for {refused} of the {len(sent)} bad records sent; the rest are valid), "
          f"replays after a lost session {job.stats.restarts}, Ray Data flows renewed {job.stats.renewals}")
    summary = {"minutes": args.minutes, "streams": args.streams, "samples": len(memory), "processes": rows,
               "memory_flat": flat, "lag": lag, "lag_bounded": bounded, "job_alive": alive, "restarts": job.stats.restarts,
               "renewals": job.stats.renewals,
               "minutes_run": round(minutes, 1), "events": job.stats.events,
               "dead_letters": job.stats.dead_letters, "bad_records_sent": len(sent), "bad_records_refusable": refused,
               "bad_kinds": sorted(set(sent)),
               "published_mb": round(sum(published) / 1e6, 1), "perception_pool_changes": pool_changes}
    print("summary " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
