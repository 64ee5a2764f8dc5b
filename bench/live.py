"""The live job under 1, 2, 4 and 8 concurrent real-time streams: end-to-end latency, whether it keeps up, and
what a stream costs in CPU, process by process.

Everything real: a Tansu broker, local Ray, the Serve app, the live job (Ray Data
perception, session actors, Serve scoring). Each stream is read speech (the five LibriVox
recordings with pauses, about 31 s, 16 kHz mono WAV segments), or with `--media` an audio-visual
meeting (the shared face video looped at 640×360, 24 fps, H.264 with a key frame every 0.5 s, muxed
with the same speech; built at run time in a temporary folder) or `--media FILE`, published in real
time by a separate process; the streams start together (or `--stagger` seconds apart). For each load we report the
end-to-end latency (utterance end on the media clock → its event sent) p50/p95, the drift
between the first and second half of the run (a growing latency means the job falls
behind; `--repeat N` makes every stream N times longer, to measure it over a longer run), the largest
consumer lag seen, how busy the machine's CPUs were and the CPU time spent per
utterance (machine-wide: run it on a quiet machine), how many closed utterances found their Whisper result
prepared from a draft (used/prepared; `--drafts both` runs each load with drafts and then without, in the same
job), and whether the load stayed real time (p95 ≤ 1.5 s, no drift beyond 0.5 s).
Repeat a load (`--streams 4,4,4`) to see how much runs vary.

Per process (`cpu s / media s`, under each load): the CPU time (user + system, from psutil) each kind of process spent during
the load, divided by the seconds of media sent (streams × media length): the Ray Data read task, the
perception actors, the session actors, the Serve replicas, the driver (the job's own loop and threads),
Ray's own processes (raylet, GCS, Serve controller and proxy, idle workers), and, outside the job, the
broker and the publisher. A figure of 0.2 means a stream keeps a fifth of a core busy in that process. The
same is printed for the idle job (running, nothing arriving) as cores busy, with its floor: the number of Ray
worker processes times what a bare idle actor, started beside them, costs over the same window (Ray's core worker
wakes every worker's main thread 100 times a second to check for signals, whatever the worker does), plus what
Ray's daemons (GCS, raylet, agents, log monitor) took.
Figures are printed, never asserted. Run inside a loopback-only namespace:
    unshare -n sh -c 'ip link set lo up && exec env RAY_AUTH_MODE=disabled .venv/bin/python bench/live.py'
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import psutil

from emostream.cli.common import ray_local
from emostream.ingest.publish import publish
from emostream.kafka.broker import EmbeddedBroker, free_port
from emostream.kafka.clients import ensure_topics
from emostream.media.segmenter import probe
from emostream.media.synthetic import speech_track
from emostream.metrics import Metrics
from emostream.settings import Settings, load_settings

if TYPE_CHECKING:
    from emostream.live.job import LiveJob
# The live job and Serve are imported once `ray_local` has set Ray's environment (Serve reads it at import), so the
# bench runs with the housekeeping intervals `emostream run` uses.

IDLE_SECONDS = 20.0  # the running job's own CPU use with no streams is measured over this long
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SPEECH = DATA / "speech-librivox"
FACE_VIDEO = DATA / "faces-pyfeat" / "WolfgangLanger_Pexels.mp4"  # 19.7 s, 640×360, one real face throughout
MEETING_FPS = 24
MEETING_GOP = 12  # frames: a key frame every 0.5 s, so 0.5 s segments start at one
# Process kinds, by the title Ray gives a worker (`ray::<actor or task>`), first match wins; the rest of Ray's
# workers and daemons count as "ray".
KINDS = (("read task", "readkafkamedia"), ("perception", "segmentstage"), ("sessions", "sessionactor"),
         ("serve replicas", "servereplica"))
JOB_KINDS = ("read task", "perception", "sessions", "serve replicas", "driver", "ray")  # the job's cost; not the broker or publisher


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def meeting(out: Path, speech: Path) -> Path:
    """The AV meeting: the face video looped (re-encoded at 640×360, MEETING_FPS, a key frame every
    MEETING_GOP frames) for as long as `speech` lasts, muxed with it as AAC."""
    import soundfile  # noqa: PLC0415

    audio, rate = soundfile.read(str(speech), dtype="float32")
    seconds = len(audio) / rate
    with av.open(str(FACE_VIDEO)) as source:
        frames = [frame.to_ndarray(format="rgb24") for frame in source.decode(video=0)]
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=MEETING_FPS)
        video.width, video.height, video.pix_fmt = 640, 360, "yuv420p"
        video.codec_context.gop_size = MEETING_GOP
        video.codec_context.options = {"preset": "veryfast", "x264-params":
                                       f"keyint={MEETING_GOP}:min-keyint={MEETING_GOP}:scenecut=0:open-gop=0"}
        sound = container.add_stream("aac", rate=rate)
        sound.codec_context.layout, sound.codec_context.format, sound.codec_context.bit_rate = "mono", "fltp", 64_000
        for i in range(round(seconds * MEETING_FPS)):
            image = frames[i % len(frames)]
            if image.shape[:2] != (360, 640):
                raise ValueError(f"{FACE_VIDEO}: frames of {image.shape[1]}x{image.shape[0]}, expected 640x360")
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, MEETING_FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        chunk = 1024
        for start in range(0, len(audio), chunk):
            frame = av.AudioFrame.from_ndarray(audio[None, start:start + chunk], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    return out


def _publish_all(media: Path, names: list[str], settings: Settings, stagger: float) -> None:
    """Publisher process: each stream in real time from its own thread (off the driver, whose CPU is measured)."""
    threads = [threading.Thread(target=publish, args=(media, name, settings), kwargs={"realtime": True}) for name in names]
    for i, thread in enumerate(threads):
        time.sleep(stagger if i else 0.0)
        thread.start()
    for thread in threads:
        thread.join()


def start_job(settings: Settings, media: Path) -> tuple[LiveJob, threading.Event, threading.Thread, dict[str, Any]]:
    """The live job on a thread (stopped by setting the event), warmed by one stream: models load on first use in
    the actors, which the figures after it do not count. The warm-up's figures are returned with it."""
    from emostream.live.job import LiveJob  # noqa: PLC0415
    from emostream.live.serve_client import ServeClient  # noqa: PLC0415

    job = LiveJob(settings, ServeClient.for_settings(settings), Metrics())
    stop = threading.Event()
    runner = threading.Thread(target=job.run, kwargs={"stop": stop})
    runner.start()
    return job, stop, runner, run_load(job, settings, 1, media, "warm")


def run_load(job: LiveJob, settings: Settings, streams: int, media: Path, tag: str, stagger: float = 0.0) -> dict[str, object]:
    """Publish `streams` copies of `media` in real time to the running job, stream i starting i × `stagger`
    seconds after the first; wait for all of them."""
    names = {f"{tag}-s{i}" for i in range(streams)}
    publisher = multiprocessing.get_context("spawn").Process(target=_publish_all, args=(media, sorted(names), settings, stagger))
    stage_before = _stage_totals(job.metrics)
    drafts_before = _prepared_counts(job)
    lags: list[float] = []
    cpu_before, processes_before = _busy_cpu_seconds(), process_cpu()
    started = time.monotonic()
    publisher.start()
    while not names <= job.stats.ended_streams and time.monotonic() - started < 600:
        lags.append(sum(sample.value for family in job.metrics.lag.collect() for sample in family.samples))
        time.sleep(1.0)
    busy, wall = _busy_cpu_seconds() - cpu_before, time.monotonic() - started
    per_kind = cpu_by_kind(processes_before, process_cpu(), publisher.pid)
    publisher.join()
    latencies = [latency for stream, latency in job.latencies if stream in names]
    half = len(latencies) // 2
    drift = statistics.median(latencies[half:]) - statistics.median(latencies[:half]) if half else float("nan")
    stage_after = _stage_totals(job.metrics)
    drafts = {k: v - drafts_before.get(k, 0) for k, v in _prepared_counts(job).items()}
    stages = {k: (stage_after[k][0] - stage_before.get(k, (0, 0))[0]) / (stage_after[k][1] - stage_before.get(k, (0, 0))[1])
              for k in stage_after if stage_after[k][1] > stage_before.get(k, (0, 0))[1]}
    return {"events": len(latencies), "p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
            "drift": drift, "max_lag": max(lags, default=0.0), "stages": stages, "drafts": drafts, "per_kind": per_kind,
            "cpu_busy": busy / (wall * (psutil.cpu_count() or 1)), "cpu_per_event": busy / len(latencies) if latencies else float("nan")}


def _prepared_counts(job: LiveJob) -> dict[str, int]:
    """Whisper results so far: "prepared" from drafts; closed utterances "used" one or "missed"."""
    return dict(job.scorer.prepared.counts)  # type: ignore[attr-defined]


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores; Linux counts guest time inside user time)."""
    times = psutil.cpu_times()
    idle = ("idle", "iowait", "guest", "guest_nice")
    return sum(getattr(times, name) for name in times._fields if name not in idle)


def process_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of every process of this user: pid → (command line, seconds)."""
    out = {}
    for process in psutil.process_iter(["cmdline", "cpu_times", "uids"]):
        info = process.info
        if info["uids"] is None or info["uids"].real != os.getuid() or info["cpu_times"] is None:
            continue
        out[process.pid] = (" ".join(info["cmdline"] or ()), info["cpu_times"].user + info["cpu_times"].system)
    return out


def cpu_by_kind(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                publisher: int | None = None, ray_detail: bool = False, ignore: frozenset[int] = frozenset()) -> dict[str, float]:
    """CPU seconds spent between two `process_cpu` samples, per kind of process (a process that ended in between
    is not counted; one that started counts from zero). `ray_detail`: Ray's own processes by name, not as one;
    `ignore`: processes left out (the bench's own bare actor)."""
    ours = os.getpid()
    session = _ray_session_pids() - ignore
    kinds: dict[str, float] = {}
    for pid, (title, seconds) in after.items():
        kind = _kind(pid, title, ours, publisher, session)
        if kind == "ray" and ray_detail:
            kind = "ray:" + (title.split()[0].rsplit("/", 1)[-1].removeprefix("ray::").split(".")[0] if title else "?")
        if kind is not None:
            kinds[kind] = kinds.get(kind, 0.0) + seconds - before.get(pid, (title, 0.0))[1]
    return kinds


def _ray_session_pids() -> set[int]:
    """This Ray instance's processes: the raylet and GCS and every descendant of them (workers, agents)."""
    pids: set[int] = set()
    for process in psutil.Process().children(recursive=True):
        pids.add(process.pid)
    return pids


def _kind(pid: int, title: str, ours: int, publisher: int | None, session: set[int]) -> str | None:
    if pid == ours:
        return "driver"
    if pid == publisher:
        return "publisher"
    lowered = title.lower()
    if "tansu" in lowered and pid in session:
        return "broker"
    if pid not in session:
        return None
    for kind, marker in KINDS:
        if marker in lowered:
            return kind
    return "ray"


RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")  # Ray's per-node agents: daemons, not workers


def ray_floor(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], bare_pid: int,
              wall: float) -> tuple[int, float, float]:
    """What the idle job costs before it does anything: (how many Ray worker processes it has: actors, replicas,
    tasks and idle workers; the cores a bare idle actor took over the same `wall` seconds, which each of them
    costs at least; the cores Ray's daemons took: GCS, raylet, agents, log monitor)."""
    session = _ray_session_pids() - {bare_pid}
    workers, daemons = 0, 0.0
    for pid, (title, seconds) in after.items():
        if pid not in session or "tansu" in title.lower():
            continue
        if title.startswith("ray::") and not title.startswith(RAY_AGENTS):
            workers += 1
        else:
            daemons += seconds - before.get(pid, (title, 0.0))[1]
    return workers, (after[bare_pid][1] - before[bare_pid][1]) / wall, daemons / wall


def bare_actor() -> tuple[Any, int]:
    """An actor that does nothing, and its pid: what any Ray worker process costs while idle. Ray's core worker wakes
    its main thread every 10 ms to check for signals (`CoreWorker.CheckSignal`, not configurable; ~100 wakeups a
    second per idle worker on this machine), so every actor, replica and task of the job costs that much anyway."""
    import ray  # noqa: PLC0415

    @ray.remote(num_cpus=0)
    class BareActor:
        def pid(self) -> int:
            return os.getpid()

    actor = BareActor.remote()  # type: ignore[attr-defined]
    return actor, ray.get(actor.pid.remote())


def _stage_totals(metrics: Metrics) -> dict[str, tuple[float, float]]:
    sums, counts = {}, {}
    for family in metrics.stage.collect():
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                sums[sample.labels["stage"]] = sample.value
            elif sample.name.endswith("_count"):
                counts[sample.labels["stage"]] = sample.value
    return {k: (sums[k], counts.get(k, 0.0)) for k in sums}


def _job_total(kinds: dict[str, float]) -> float:
    return sum(kinds.get(kind, 0.0) for kind in JOB_KINDS)


def _kinds_text(kinds: dict[str, float], per: float) -> str:
    order = [*JOB_KINDS, "broker", "publisher"]
    return "  ".join(f"{kind} {kinds[kind] / per:.3f}" for kind in order if kind in kinds)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


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
    parser.add_argument("--media", nargs="?", const="av", default=None, metavar="FILE",
                        help="stream this file instead of read speech; without FILE: the AV meeting (the shared face "
                             "video looped at 640x360, 24 fps, a key frame every 0.5 s, with the read speech)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="each stream reads the speech N times over (the meeting's video loops along): a longer "
                             "run, so the drift between its halves says whether a load is sustained")
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS,
                        help="how long the running job's CPU use is measured with nothing arriving")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a setting, e.g. --set voice.merge_gap_seconds=0.3 (repeatable)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port(), Path(tmp) / "broker") as broker:
        media = speech_track(sorted(SPEECH.glob("*.wav")) * args.repeat, Path(tmp) / "talk.wav")
        if args.media == "av":
            media = meeting(Path(tmp) / "meeting.mp4", media)
        elif args.media:
            media = Path(args.media)
        media_seconds = probe(media).duration or 0.0
        overrides = {"kafka": {"bootstrap_servers": broker.bootstrap_servers, "partitions": 4, "group_id": "bench"},
                     "serve": {"port": free_port()}, "ingest": {"segment_seconds": args.segment_seconds}}
        for item in args.set:
            key, _, value = item.partition("=")
            section, _, name = key.partition(".")
            overrides.setdefault(section, {})[name] = value
        settings = load_settings(**overrides)
        ray_local(args.cpus, log_to_driver=False)
        import ray  # noqa: PLC0415

        from emostream.serve.app import deploy  # noqa: PLC0415

        deploy(settings)
        what = {None: "read speech", "av": "the AV meeting (640x360, 24 fps, with read speech)"}.get(args.media, str(media))
        print(f"# live bench: {platform.machine()}, {args.cpus} CPUs, load average {_load()}, streams of {what} "
              f"({media_seconds:.1f} s) published in real time in {args.segment_seconds:g} s segments, starts "
              f"{args.stagger:g} s apart{''.join(' --set ' + item for item in args.set)}")
        ensure_topics(settings.kafka)
        job, stop, runner, warm = start_job(settings, media)
        print(f"warm-up stream: p50 {warm['p50']:.2f} s (first use of every model)")
        bare, bare_pid = bare_actor()
        ignore = frozenset({bare_pid})
        before, processes, started = _busy_cpu_seconds(), process_cpu(), time.monotonic()
        time.sleep(args.idle_seconds)
        wall = time.monotonic() - started
        idle = (_busy_cpu_seconds() - before) / wall
        after = process_cpu()
        ray.kill(bare)
        idle_kinds = cpu_by_kind(processes, after, ignore=ignore)
        print(f"idle job (no streams, {args.idle_seconds:g} s): {_job_total(idle_kinds) / wall:.3f} cores "
              f"({_kinds_text(idle_kinds, wall)}); machine: {idle:.2f} of {psutil.cpu_count()} CPUs busy")
        ray_kinds = sorted((-v, k) for k, v in cpu_by_kind(processes, after, ray_detail=True, ignore=ignore).items()
                           if k.startswith("ray:"))
        print("  of which Ray's own: " + "  ".join(f"{k[4:]} {-v / wall:.3f}" for v, k in ray_kinds[:8]))
        workers, each, daemons = ray_floor(processes, after, bare_pid, wall)
        print(f"  its floor: {workers} Ray worker processes × {each:.4f} core (a bare idle actor beside them) + Ray's "
              f"daemons {daemons:.3f} = {workers * each + daemons:.3f} core before the job does anything")
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
            kinds = r["per_kind"]
            print(f"         cpu s / media s: job {_job_total(kinds) / (streams * media_seconds):.3f}  "
                  f"{_kinds_text(kinds, streams * media_seconds)}", flush=True)
        print(f"largest load that stayed real time: {sustained} streams")
        print(f"load average at the end: {_load()}")
        stop.set()
        runner.join()
        # The broker goes first: a thread that touches Ray after its shutdown makes Ray end the process at once
        # ("The core worker has already been shutdown"), which left the broker running in 3 of 4 runs.
        broker.stop()
        ray.shutdown()


if __name__ == "__main__":
    main()
