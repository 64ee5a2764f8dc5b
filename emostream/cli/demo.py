"""`emostream demo`: the live pipeline on a sample recording, with an embedded broker, start to finish."""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from emostream.cli.common import SHARED_FACE_VIDEO, SHARED_SPEECH, Commands, live_job, ray_local
from emostream.cli.consume import format_event
from emostream.events import EmotionEvents
from emostream.ingest.publish import publish
from emostream.kafka.broker import EmbeddedBroker
from emostream.media.segmenter import probe
from emostream.media.synthetic import mux_files, speech_track, write_clip
from emostream.report import write_html_report
from emostream.settings import load_settings

# Ray and Serve: imported inside cmd_demo, so that the other commands start fast.


def add_demo(commands: Commands) -> None:
    demo = commands.add_parser("demo", help="run the live pipeline on a sample with an embedded broker",
                               description="Start an embedded broker, local Ray and the Serve app; publish a sample "
                                           "recording in real time; run the live job; print each utterance's event as it "
                                           "arrives; write an HTML report; stop everything.")
    demo.add_argument("--input", metavar="FILE", help="media file to use (default: a meeting built from the shared "
                      "sample video and LibriVox speech)")
    demo.add_argument("--port", type=int, default=19092, help="port of the demo's broker on 127.0.0.1 (default: 19092)")
    demo.add_argument("--serve-port", type=int, default=18000, help="HTTP port of the Serve app (default: 18000)")
    demo.add_argument("--metrics-port", type=int, default=19464, help="port of the job's /metrics (default: 19464)")
    demo.add_argument("--cpus", type=int, metavar="N", help="CPUs for the local Ray instance (default: all)")
    demo.add_argument("--fast", action="store_true", help="publish as fast as possible instead of in real time")
    demo.add_argument("--report", default=".emostream/demo-report.html", metavar="FILE",
                      help="where to write the HTML report (default: .emostream/demo-report.html)")
    demo.set_defaults(func=cmd_demo)


def demo_sample(tmp: Path) -> Path:
    """A meeting-like sample: the shared face video with read sentences (LibriVox) under it,
    or a generated test pattern when the shared recordings are absent."""
    speech = sorted(SHARED_SPEECH.glob("*.wav"))[:3]
    if SHARED_FACE_VIDEO.exists() and speech:
        return mux_files(SHARED_FACE_VIDEO, speech_track(speech, tmp / "speech.wav"), tmp / "meeting.mp4")
    print("no sample recordings found: using a generated test pattern (a tone, so no utterances)")
    return write_clip(tmp / "test-pattern.mp4", seconds=6, audio_channels=2)


def cmd_demo(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    settings = load_settings(args.config, kafka={"bootstrap_servers": f"127.0.0.1:{args.port}", "group_id": "emostream-demo"},
                             serve={"port": args.serve_port}, live={"metrics_port": args.metrics_port})
    with tempfile.TemporaryDirectory(prefix="emostream-demo-") as tmp:
        sample = Path(args.input) if args.input else demo_sample(Path(tmp))
        media_seconds = probe(sample).duration or 60.0
        print(f"1. starting the embedded Kafka broker (Tansu) on 127.0.0.1:{args.port}", flush=True)
        with EmbeddedBroker(args.port, Path(tmp) / "broker", settings.kafka, settings.broker.start_timeout_seconds):
            print("2. starting Ray and the Serve app: perception, Whisper, sentence embeddings and the emotion model "
                  "(the embedded default: lite on the speech of RAVDESS, TESS and EmoDB, fused with the FER+ face "
                  "expert)", flush=True)
            ray_local(args.cpus, settings.live.spill_directory)
            try:
                job = live_job(settings)
                print(f"   HTTP API on http://127.0.0.1:{args.serve_port}/docs, metrics on "
                      f"http://127.0.0.1:{args.metrics_port}/metrics", flush=True)
                stop = threading.Event()
                runner = threading.Thread(target=job.run, kwargs={"stop": stop, "until": lambda s: "demo" in s.ended_streams},
                                          name="emostream-live-job")
                runner.start()
                pace = "in real time" if not args.fast else "as fast as it goes"
                print(f"3. publishing {sample.name} ({media_seconds:.0f} s) as stream 'demo' {pace}; the live job scores "
                      "each utterance as it ends:", flush=True)
                publisher = threading.Thread(target=publish, args=(sample, "demo", settings),
                                             kwargs={"realtime": not args.fast}, daemon=True)
                publisher.start()
                events = []
                deadline = time.monotonic() + media_seconds + 300
                with EmotionEvents(settings.kafka, group_id="emostream-demo-viewer", timeout=1.0) as reader:
                    while runner.is_alive() and time.monotonic() < deadline:
                        for event in reader:
                            events.append(event.model_dump(mode="json"))
                            print("   " + format_event(settings.kafka.emotions_topic, event.model_dump_json().encode(), settings),
                                  flush=True)
                    stop.set()
                    runner.join()
                    events += [event.model_dump(mode="json") for event in reader]
                report = write_html_report(events, Path(args.report), f"emostream demo: {sample.name}")
                print(f"4. {len(events)} utterances, {job.stats.dead_letters} dead letters; report with an emotion timeline "
                      f"per speaker: {report}", flush=True)
            finally:
                print("5. stopping the live job, Serve, Ray and the broker", flush=True)
                serve.shutdown()
                ray.shutdown()
    return 0 if events else 1
