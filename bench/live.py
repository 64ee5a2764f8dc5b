"""The live job under 1, 2, 4 and 8 concurrent real-time streams: end-to-end latency and whether it keeps up.

Everything real: a Tansu broker, local Ray, the Serve app, the live job (Ray Data
perception, session actors, Serve scoring). Each stream is read speech (three LibriVox
recordings with pauses, about 25 s, 16 kHz mono WAV segments), published in real time;
the streams start together. For each load we report the end-to-end latency (utterance
end on the media clock → its event sent) p50/p95, the drift between the first and second
half of the run (a growing latency means the job falls behind), the largest consumer lag
seen, and whether the load stayed real time (p95 ≤ 1.5 s, no drift beyond 0.5 s).
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
import uuid
from pathlib import Path

from emostream.ingest.publish import publish
from emostream.ingest.synthetic import speech_track
from emostream.kafka.broker import EmbeddedBroker, free_port
from emostream.kafka.clients import ensure_topics
from emostream.live.job import LiveJob, serve_scorer
from emostream.metrics import Metrics
from emostream.settings import Settings, load_settings

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "speech-librivox"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def run_load(base: Settings, streams: int, media: Path) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(update={
        "media_topic": f"media-{tag}", "emotions_topic": f"emotions-{tag}", "deadletter_topic": f"dead-{tag}",
        "group_id": f"bench-{tag}"})})
    ensure_topics(settings.kafka)
    names = {f"s{i}" for i in range(streams)}
    metrics = Metrics()
    job = LiveJob(settings, serve_scorer(settings.live.serve_app), metrics)
    stop = threading.Event()
    runner = threading.Thread(target=job.run, kwargs={"stop": stop, "until": lambda s: names <= s.ended_streams})
    runner.start()
    time.sleep(5)  # the pipeline's actors start before the media does, as in a running deployment
    lags: list[float] = []
    publishers = [threading.Thread(target=publish, args=(media, name, settings), kwargs={"realtime": True})
                  for name in sorted(names)]
    started = time.monotonic()
    for thread in publishers:
        thread.start()
    while runner.is_alive() and time.monotonic() - started < 600:
        lags.append(sum(sample.value for family in metrics.lag.collect() for sample in family.samples))
        runner.join(timeout=1.0)
    stop.set()
    runner.join()
    latencies = list(job.latencies)
    half = len(latencies) // 2
    drift = statistics.median(latencies[half:]) - statistics.median(latencies[:half]) if half else float("nan")
    return {"streams": streams, "events": len(latencies), "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "drift": drift, "max_lag": max(lags, default=0.0),
            "wall": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,2,4,8", help="comma-separated numbers of concurrent streams")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs for the local Ray instance")
    args = parser.parse_args()
    import ray

    from emostream.serve.app import deploy

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port(), Path(tmp) / "broker") as broker:
        media = speech_track(sorted(SPEECH.glob("*.wav"))[:3], Path(tmp) / "talk.wav")
        settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 4},
                                 serve={"port": free_port()})
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        deploy(settings)
        print(f"# live bench: {platform.machine()}, {args.cpus} CPUs, streams of read speech published in real time")
        print("streams  events  p50_s  p95_s  drift_s  max_lag  real_time")
        sustained = 0
        for streams in (int(n) for n in args.streams.split(",")):
            r = run_load(settings, streams, media)
            real_time = r["p95"] <= 1.5 and not r["drift"] > 0.5
            sustained = streams if real_time else sustained
            print(f"{streams:7d}  {r['events']:6d}  {r['p50']:5.2f}  {r['p95']:5.2f}  {r['drift']:+7.2f}  {r['max_lag']:7.0f}  "
                  f"{'yes' if real_time else 'no'}", flush=True)
        print(f"largest load that stayed real time: {sustained} streams")
        ray.shutdown()


if __name__ == "__main__":
    main()
