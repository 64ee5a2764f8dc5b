"""The live job under 1, 2, 4 and 8 concurrent real-time streams: end-to-end latency and whether it keeps up.

Everything real: a Tansu broker, local Ray, the Serve app, the live job (Ray Data
perception, session actors, Serve scoring). Each stream is read speech (the five LibriVox
recordings with pauses, about 31 s, 16 kHz mono WAV segments), published in real time;
the streams start together (or `--stagger` seconds apart). For each load we report the
end-to-end latency (utterance end on the media clock → its event sent) p50/p95, the drift
between the first and second half of the run (a growing latency means the job falls
behind), the largest consumer lag seen, how busy the machine's CPUs were and the CPU time spent per
utterance (machine-wide: run it on a quiet machine), how many closed utterances found their Whisper result
prepared from a draft (used/prepared; `--drafts both` runs each load with drafts and then without, in the same
job), and whether the load stayed real time (p95 ≤ 1.5 s, no drift beyond 0.5 s).
Repeat a load (`--streams 4,4,4`) to see how much runs vary.
Figures are printed, never asserted. Run inside a loopback-only namespace:
    unshare -n sh -c 'ip link set lo up && exec env RAY_AUTH_MODE=disabled .venv/bin/python bench/live.py'
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil

from emostream.ingest.publish import publish
from emostream.kafka.broker import EmbeddedBroker, free_port
from emostream.kafka.clients import ensure_topics
from emostream.live.job import LiveJob
from emostream.live.serve_client import ServeClient
from emostream.media.synthetic import speech_track
from emostream.metrics import Metrics
from emostream.settings import Settings, load_settings

IDLE_SECONDS = 10.0  # the running job's own CPU use with no streams is measured over this long
SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "speech-librivox"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def run_load(job: LiveJob, settings: Settings, streams: int, media: Path, tag: str, stagger: float = 0.0) -> dict[str, object]:
    """Publish `streams` copies of `media` in real time to the running job, stream i starting i × `stagger`
    seconds after the first; wait for all of them."""
    names = {f"{tag}-s{i}" for i in range(streams)}
    publishers = [threading.Thread(target=publish, args=(media, name, settings), kwargs={"realtime": True})
                  for name in sorted(names)]
    stage_before = _stage_totals(job.metrics)
    drafts_before = _prepared_counts(job)
    lags: list[float] = []
    cpu_before = _busy_cpu_seconds()
    started = time.monotonic()
    for i, thread in enumerate(publishers):
        time.sleep(stagger if i else 0.0)
        thread.start()
    while not names <= job.stats.ended_streams and time.monotonic() - started < 600:
        lags.append(sum(sample.value for family in job.metrics.lag.collect() for sample in family.samples))
        time.sleep(1.0)
    busy, wall = _busy_cpu_seconds() - cpu_before, time.monotonic() - started
    latencies = [latency for stream, latency in job.latencies if stream in names]
    half = len(latencies) // 2
    drift = statistics.median(latencies[half:]) - statistics.median(latencies[:half]) if half else float("nan")
    stage_after = _stage_totals(job.metrics)
    drafts = {k: v - drafts_before.get(k, 0) for k, v in _prepared_counts(job).items()}
    stages = {k: (stage_after[k][0] - stage_before.get(k, (0, 0))[0]) / (stage_after[k][1] - stage_before.get(k, (0, 0))[1])
              for k in stage_after if stage_after[k][1] > stage_before.get(k, (0, 0))[1]}
    return {"events": len(latencies), "p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
            "drift": drift, "max_lag": max(lags, default=0.0), "stages": stages, "drafts": drafts,
            "cpu_busy": busy / (wall * (psutil.cpu_count() or 1)), "cpu_per_event": busy / len(latencies) if latencies else float("nan")}


def _prepared_counts(job: LiveJob) -> dict[str, int]:
    """Whisper results so far: "prepared" from drafts; closed utterances "used" one or "missed"."""
    return dict(job.scorer.prepared.counts)  # type: ignore[attr-defined]


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores; Linux counts guest time inside user time)."""
    times = psutil.cpu_times()
    idle = ("idle", "iowait", "guest", "guest_nice")
    return sum(getattr(times, name) for name in times._fields if name not in idle)


def _stage_totals(metrics: Metrics) -> dict[str, tuple[float, float]]:
    sums, counts = {}, {}
    for family in metrics.stage.collect():
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                sums[sample.labels["stage"]] = sample.value
            elif sample.name.endswith("_count"):
                counts[sample.labels["stage"]] = sample.value
    return {k: (sums[k], counts.get(k, 0.0)) for k in sums}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,2,4,8", help="comma-separated numbers of concurrent streams")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs for the local Ray instance")
    parser.add_argument("--segment-seconds", type=float, default=0.5,
                        help="media per segment (default 0.5; an utterance closes only once the segment holding the "
                             "pause after it has arrived, but 0.25 s segments doubled the per-segment work and made "
                             "4 streams slower on 2 cores)")
    parser.add_argument("--stagger", type=float, default=0.0,
                        help="seconds between stream starts (default 0: all start together, so their utterances end "
                             "at the same moments: the worst case; calls in a contact centre start independently)")
    parser.add_argument("--drafts", choices=("on", "off", "both"), default="on",
                        help="prepare Whisper results from drafts (live.prepare_drafts); both: run each load with "
                             "drafts and then without, in the same job, for a comparison under the same conditions")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a setting, e.g. --set voice.merge_gap_seconds=0.3 (repeatable)")
    args = parser.parse_args()
    import ray

    from emostream.serve.app import deploy

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port(), Path(tmp) / "broker") as broker:
        media = speech_track(sorted(SPEECH.glob("*.wav")), Path(tmp) / "talk.wav")
        overrides = {"kafka": {"bootstrap_servers": broker.bootstrap_servers, "partitions": 4, "group_id": "bench"},
                     "serve": {"port": free_port()}, "ingest": {"segment_seconds": args.segment_seconds}}
        for item in args.set:
            key, _, value = item.partition("=")
            section, _, name = key.partition(".")
            overrides.setdefault(section, {})[name] = value
        settings = load_settings(**overrides)
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        deploy(settings)
        print(f"# live bench: {platform.machine()}, {args.cpus} CPUs, streams of read speech published in real time "
              f"in {args.segment_seconds:g} s segments, starts {args.stagger:g} s apart{''.join(' --set ' + item for item in args.set)}")
        ensure_topics(settings.kafka)
        job = LiveJob(settings, ServeClient.for_settings(settings), Metrics())
        stop = threading.Event()
        runner = threading.Thread(target=job.run, kwargs={"stop": stop})
        runner.start()
        warm = run_load(job, settings, 1, media, "warm")  # models load on first use in the actors: not counted
        print(f"warm-up stream: p50 {warm['p50']:.2f} s (first use of every model)")
        before, started = _busy_cpu_seconds(), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle = (_busy_cpu_seconds() - before) / (time.monotonic() - started)
        print(f"idle job (no streams, {IDLE_SECONDS:g} s): {idle:.2f} of {psutil.cpu_count()} CPUs busy")
        print("streams  events  p50_s  p95_s  drift_s  max_lag  cpu_busy  cpu_s/utt  drafts_used  real_time  mean stage seconds")
        sustained = 0
        results: list[dict[str, object]] = []
        modes = {"on": [True], "off": [False], "both": [True, False]}[args.drafts]
        loads = [(int(n), mode) for n in args.streams.split(",") for mode in modes]
        for streams, mode in loads:
            job.live = job.live.model_copy(update={"prepare_drafts": mode})
            r = run_load(job, settings, streams, media, f"load{streams}-{len(results)}", args.stagger)
            results.append(r)
            real_time = r["p95"] <= 1.5 and not r["drift"] > 0.5
            sustained = streams if real_time and mode == modes[0] else sustained
            stages = " ".join(f"{k} {v:.3f}" for k, v in r["stages"].items())
            drafts = r["drafts"]
            used = f"{drafts.get('used', 0)}/{drafts.get('prepared', 0)}" if mode else "off"
            print(f"{streams:7d}  {r['events']:6d}  {r['p50']:5.2f}  {r['p95']:5.2f}  {r['drift']:+7.2f}  {r['max_lag']:7.0f}  "
                  f"{r['cpu_busy']:7.0%}  {r['cpu_per_event']:9.2f}  {used:>11s}  {'yes' if real_time else 'no ':9s}  {stages}",
                  flush=True)
        print(f"largest load that stayed real time: {sustained} streams")
        stop.set()
        runner.join()
        ray.shutdown()


if __name__ == "__main__":
    main()
