"""The `emostream` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emostream.settings import Settings, SettingsError, load_settings

DEPLOYMENTS_DIR = Path(__file__).resolve().parent.parent / "deployments"
SCHEMA_DIR = DEPLOYMENTS_DIR / "schemas"
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SHARED_FACE_VIDEO = SHARED_DATA / "faces-pyfeat" / "WolfgangLanger_Pexels.mp4"
SHARED_SPEECH = SHARED_DATA / "speech-librivox"


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, dict[str, object]] = {}
    if getattr(args, "bootstrap_servers", None):
        overrides.setdefault("kafka", {})["bootstrap_servers"] = args.bootstrap_servers
    return load_settings(args.config, **overrides)


# -- schema --------------------------------------------------------------------------------------


def schema_documents() -> dict[str, str]:
    """File name → JSON Schema text of every wire contract."""
    from emostream.contracts import SCHEMA_VERSION, WIRE_CONTRACTS

    documents = {}
    for name, model in WIRE_CONTRACTS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://emostream.dev/schemas/{SCHEMA_VERSION}/{name}.schema.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        documents[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return documents


def cmd_schema(args: argparse.Namespace) -> int:
    out = Path(args.out)
    drifted = []
    for file_name, text in schema_documents().items():
        path = out / file_name
        if args.check:
            if not path.exists() or path.read_text() != text:
                drifted.append(str(path))
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if drifted:
        print("JSON Schemas differ from the contracts; run `emostream schema`:\n  " + "\n  ".join(drifted), file=sys.stderr)
        return 1
    return 0


# -- broker --------------------------------------------------------------------------------------


def _broker(args: argparse.Namespace, settings: Settings):  # type: ignore[no-untyped-def]
    from emostream.kafka.broker import EmbeddedBroker

    kafka = settings.kafka if args.partitions is None else settings.kafka.model_copy(update={"partitions": args.partitions})
    return EmbeddedBroker(
        port=args.port or settings.broker.port,
        state_dir=Path(args.state_dir or settings.broker.state_dir),
        kafka=kafka,
        start_timeout=settings.broker.start_timeout_seconds,
    )


def cmd_broker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    broker = _broker(args, settings)
    if args.action == "start":
        state = broker.start()
        print(f"embedded Kafka broker (Tansu) running: pid {state.pid}, bootstrap servers {state.bootstrap_servers}")
        print(f"topics: {broker.kafka.media_topic}, {broker.kafka.emotions_topic}, {broker.kafka.deadletter_topic}")
        return 0
    if args.action == "stop":
        print("stopped" if broker.stop() else f"no broker recorded in {broker.state_dir} is running")
        return 0
    state = broker.state()
    if state is None:
        print(f"not running (state directory {broker.state_dir})")
        return 3
    from emostream.kafka.clients import admin

    client = admin(broker.kafka)
    try:
        topics = sorted(client.list_topics())
    finally:
        client.close()
    print(f"running: pid {state.pid}, bootstrap servers {state.bootstrap_servers}, topics: {', '.join(topics) or '-'}")
    return 0


# -- publish -------------------------------------------------------------------------------------


def cmd_publish(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from emostream.ingest.publish import publish
    from emostream.ingest.segmenter import probe

    settings = _settings(args)
    channels = tuple(c.strip() for c in args.channels.split(",")) if args.channels else None
    total = probe(args.input).duration or None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} s"),
                  TimeElapsedColumn(), disable=args.quiet) as progress:
        task = progress.add_task(f"publishing {args.stream_id}", total=total)
        report = publish(
            args.input, args.stream_id, settings, realtime=args.realtime, segment_seconds=args.segment_seconds,
            channels=channels,
            on_segment=lambda s: progress.update(task, completed=s.start + s.duration),
        )
    print(f"published {report.segments} segments ({report.media_seconds:.1f} s of media, {report.bytes / 1e6:.1f} MB) "
          f"of stream {report.stream_id!r} to {settings.kafka.media_topic} in {report.wall_seconds:.1f} s")
    return 0


# -- consume and tail ----------------------------------------------------------------------------


def describe_segment(segment) -> str:  # type: ignore[no-untyped-def]
    if segment.is_end_marker:
        return f"{segment.stream_id} seq {segment.seq}: end of stream at {segment.start:.2f} s"
    parts = [f"{segment.stream_id} seq {segment.seq}: {segment.start:7.2f}–{segment.end:7.2f} s"]
    if len(segment.frames):
        height, width = segment.frames.shape[1:3]
        parts.append(f"{len(segment.frames)} frames {width}×{height}")
    if segment.audio.size:
        roles = f" ({','.join(segment.channels)})" if segment.channels else ""
        parts.append(f"audio {segment.audio.shape[0]} ch{roles} {segment.audio_seconds:.2f} s")
    return ", ".join(parts)


class FaceReport:
    """Face analysis of consumed segments, summarised for the console; one set of face tracks per stream."""

    def __init__(self, settings: Settings) -> None:
        from emostream.perception.faces.analyze import FaceAnalyzer

        self.analyzer = FaceAnalyzer(settings.faces)
        self.streams: dict[str, Any] = {}  # stream id -> FaceTracks

    def describe(self, segment: Any) -> str:
        from emostream.perception.faces.expression import FER_LABELS
        from emostream.perception.faces.tracking import FaceTracks

        tracks = self.streams.setdefault(segment.stream_id, FaceTracks(self.analyzer.settings))
        updates = [tracks.update(self.analyzer.analyze(segment))] if len(segment.frames) else []
        if segment.end_of_stream:
            updates.append(tracks.flush())
            del self.streams[segment.stream_id]
        if not updates:
            return ""
        by_track: dict[int, list[Any]] = {}
        for observation in (o for u in updates for o in u.observations):
            by_track.setdefault(observation.track_id, []).append(observation.face.expression)
        parts = []
        for track_id, expressions in sorted(by_track.items()):
            mean = np.mean(expressions, axis=0)
            parts.append(f"face {track_id}: {FER_LABELS[int(mean.argmax())]} {mean.max():.2f} ({len(expressions)} frames)")
        parts += [f"{m.measure.replace('_', ' ')} flicker on face {m.track_id} at {m.apex:.2f} s ({m.amplitude:+.1f} σ)"
                  for u in updates for m in u.micro_expressions]
        parts += [f"face {t} left" for u in updates for t in u.ended]
        return "; ".join(parts) or "no faces"


def describe_utterance(bundle: Any) -> str:
    """One line per utterance: who, when, what was said, how it sounded, which face."""
    who = bundle.speaker_id + (f" ({bundle.role})" if bundle.role and bundle.role != bundle.speaker_id else "")
    words = f' "{bundle.transcript}"' if bundle.transcript else ""
    prosody = bundle.prosody
    sound = f"pitch {prosody.f0_mean:.0f} Hz" if np.isfinite(prosody.f0_mean) else "unvoiced"
    if np.isfinite(bundle.prosody_z.get("f0_mean", float("nan"))):
        sound += f" ({bundle.prosody_z['f0_mean']:+.1f} σ)"
    if np.isfinite(prosody.speaking_rate):
        sound += f", {prosody.speaking_rate:.1f} syllables/s"
    faces = ""
    if bundle.face is not None:
        faces = f"; speaking face {bundle.face.track_id} (score {bundle.face.active_speaker_score:.2f})"
    if bundle.listeners:
        faces += "; listening: " + ", ".join(f"face {f.track_id}" for f in bundle.listeners)
    return f"{bundle.stream_id} {bundle.start:6.2f}–{bundle.end:6.2f} {who}:{words} — {sound}{faces}"


def cmd_analyze(args: argparse.Namespace) -> int:
    from emostream.perception.pipeline import Perception

    overrides: dict[str, Any] = {"voice": {"asr": False}} if args.no_asr else {}
    settings = load_settings(args.config, **overrides)
    channels = tuple(args.channels.split(",")) if args.channels else None
    perception = Perception(settings)
    count = 0
    for bundle in perception.analyze_file(args.input, args.stream_id or Path(args.input).stem, channels):
        print(describe_utterance(bundle), flush=True)
        count += 1
    print(f"{count} utterances")
    return 0


def _ray_local(cpus: int | None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True)


def _ray_connect(address: str | None, cpus: int | None) -> None:
    """Join the Ray cluster at `address` ("auto" inside a cluster pod), or start a local one."""
    import ray

    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        _ray_local(cpus)


def _live_job(settings: Settings, profile: str = "local"):  # type: ignore[no-untyped-def]
    """The live job on the connected Ray: the Serve app deployed if absent, the metrics endpoint up."""
    from emostream.live.job import LiveJob, ServeScorer
    from emostream.metrics import Metrics, serve_metrics
    from emostream.serve.app import deploy

    deploy(settings, profile)
    metrics = Metrics()
    serve_metrics(metrics, settings.live.metrics_host, settings.live.metrics_port)
    return LiveJob(settings, ServeScorer(settings.live.serve_app, settings.voice), metrics)


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    settings = _settings(args)
    _ray_connect(args.address, args.cpus)
    job = _live_job(settings, args.profile)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"live job: {settings.kafka.media_topic} → {settings.kafka.emotions_topic} at {settings.kafka.bootstrap_servers} "
          f"(group {settings.kafka.group_id}); metrics on {settings.live.metrics_host}:{settings.live.metrics_port}", flush=True)
    stats = job.run(stop)
    print(f"stopped: {stats.segments} segments, {stats.events} events, {stats.dead_letters} dead letters, "
          f"{stats.restarts} restarts")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from emostream.live.backfill import backfill, records_from_files, records_from_kafka, write_events

    settings = _settings(args)
    if bool(args.files) == bool(args.from_kafka):
        print("give media files/folders, or --from-kafka (not both)", file=sys.stderr)
        return 2
    _ray_connect(args.address, args.cpus)
    started = time.monotonic()
    if args.files:
        paths = [p for given in map(Path, args.files) for p in (sorted(x for x in given.iterdir() if x.is_file())
                                                               if given.is_dir() else [given])]
        missing = [str(p) for p in paths if not p.exists()]
        if missing or not paths:
            print(f"no such media file: {', '.join(missing) or args.files}", file=sys.stderr)
            return 2
        records = records_from_files(paths, settings, tuple(args.channels.split(",")) if args.channels else None)
    else:
        records = records_from_kafka(settings, args.start, args.end)
    counts = write_events(backfill(records, settings, args.perception_actors), settings, args.to,
                          Path(args.out) if args.out else None)
    seconds = time.monotonic() - started
    where = settings.kafka.emotions_topic if args.to == "kafka" else args.out
    print(f"{counts['event']} events, {counts['dead_letter']} dead letters → {where} in {seconds:.1f} s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from emostream.training.train import load_train_config, train

    config = load_train_config(args.config_file)
    _ray_connect(args.address, args.cpus)
    exported, metrics = train(config)
    print(f"model exported to {exported}")
    print("last epoch: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from emostream.models.presets import load_model
    from emostream.training.data import samples_from_rows
    from emostream.training.evaluate import evaluate_samples
    from emostream.training.features import Augment, extract_features, read_features
    from emostream.training.metrics import write_report
    from emostream.training.train import load_train_config, read_dataset

    config = load_train_config(args.config_file)
    model = load_model(args.model or config.export)
    speakers = set(config.data.validation_speakers)
    examples = [e for e in read_dataset(config.data, config.label_set) if e.speaker in speakers or not speakers]
    _ray_local(args.cpus)
    # Evaluation needs no augmented copies: its own cache, a third of the work.
    cache = extract_features(examples, load_settings(args.config), config.feature_cache, Augment(seed=config.seed),
                             workers=config.feature_workers)
    keys = {e.key for e in examples}
    rows = [r for r in read_features(cache) if r["key"] in keys and r["variant"] == 0]
    samples = samples_from_rows(rows, model.config.labels, model.config.label_set)
    for regime, live in (("batch", False), ("live", True)):
        report = evaluate_samples(model, samples, model.config.labels, live=live)
        print(f"== {regime} normalisation ({'each speaker over all their utterances' if not live else 'running, one utterance at a time'})")
        print(report.format())
        if args.out:
            paths = write_report(report, Path(args.out) / regime)
            print("written: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_serve_config(args: argparse.Namespace) -> int:
    from emostream.serve.config import render, render_rayservice

    files = []
    for profile in args.profile or ("local", "cluster"):
        files.append((DEPLOYMENTS_DIR / f"serve-{profile}.yaml", render(profile)))
        if profile == "cluster":  # the Kubernetes RayService serves the same config
            files.append((DEPLOYMENTS_DIR.parent / "k8s" / "base" / "rayservice-serve-config.yaml", render_rayservice(files[-1][1])))
    for path, text in files:
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is out of date: run `emostream serve-config`", file=sys.stderr)
                return 1
            continue
        path.write_text(text)
        print(f"wrote {path}")
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from emostream.ingest.consumer import SegmentConsumer

    settings = _settings(args)
    ended: set[str] = set()
    faces = FaceReport(settings) if args.faces else None

    def show(segment) -> None:  # type: ignore[no-untyped-def]
        print(describe_segment(segment), flush=True)
        if faces and (seen := faces.describe(segment)):
            print("  " + seen, flush=True)
        if segment.end_of_stream:
            ended.add(segment.stream_id)

    consumer = SegmentConsumer(settings, show, group_id=args.group_id)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        consumer.run(until=lambda: (args.until_end_of and args.until_end_of in ended)
                     or (deadline is not None and time.monotonic() > deadline))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    stats = consumer.stats
    print(f"{stats.segments} segments, dead letters: {stats.dead_letters or 'none'}, gaps: {len(stats.gaps)}")
    return 0


def format_event(topic: str, value: bytes, settings: Settings) -> str:
    try:
        event = json.loads(value)
    except ValueError:
        return f"[{topic}] {len(value)} bytes (not JSON)"
    if topic == settings.kafka.deadletter_topic and isinstance(event, dict) and "reason" in event:
        src = event.get("source", {})
        return (f"DEAD LETTER {event['reason']} {event.get('stream_id') or '-'} seq {event.get('seq')} "
                f"at {src.get('topic')}/{src.get('partition')}/{src.get('offset')}: {event.get('detail')}")
    if isinstance(event, dict) and "utterance_id" in event:
        speaker = event.get("speaker", {}).get("id")
        words = f' "{event["transcript"]}"' if event.get("transcript") else ""
        p = event.get("probabilities", {}).get(event.get("label"), 0.0)
        return (f"{event['stream_id']} {event['start']:.2f}–{event['end']:.2f} {speaker}: {event['label']} ({p:.2f}) "
                f"valence {event['valence']:+.2f} arousal {event['arousal']:+.2f}{words} — {event.get('explanation', '')}")
    return json.dumps(event)


def cmd_tail(args: argparse.Namespace) -> int:
    from emostream.kafka.clients import consumer

    settings = _settings(args)
    topic = args.topic or settings.kafka.emotions_topic
    reader = consumer(settings.kafka, [topic], group_id=None,
                      auto_offset_reset="earliest" if args.from_beginning else "latest")
    shown = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while (deadline is None or time.monotonic() < deadline) and (not args.max_events or shown < args.max_events):
            for records in reader.poll(timeout_ms=200).values():
                for record in records:
                    print(record.value.decode(errors="replace") if args.json else format_event(topic, record.value, settings),
                          flush=True)
                    shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
    return 0


# -- demo ----------------------------------------------------------------------------------------


def demo_sample(tmp: Path) -> Path:
    """A meeting-like sample: the shared face video with read sentences (LibriVox) under it,
    or a generated test pattern when the shared recordings are absent."""
    from emostream.ingest.synthetic import mux_files, speech_track, write_clip

    speech = sorted(SHARED_SPEECH.glob("*.wav"))[:3]
    if SHARED_FACE_VIDEO.exists() and speech:
        return mux_files(SHARED_FACE_VIDEO, speech_track(speech, tmp / "speech.wav"), tmp / "meeting.mp4")
    print("no sample recordings found: using a generated test pattern (a tone, so no utterances)")
    return write_clip(tmp / "test-pattern.mp4", seconds=6, audio_channels=2)


def cmd_demo(args: argparse.Namespace) -> int:
    from ray import serve

    from emostream.events import EmotionEvents
    from emostream.ingest.publish import publish
    from emostream.ingest.segmenter import probe
    from emostream.kafka.broker import EmbeddedBroker
    from emostream.report import write_report

    settings = load_settings(args.config, kafka={"bootstrap_servers": f"127.0.0.1:{args.port}", "group_id": "emostream-demo"},
                             serve={"port": args.serve_port}, live={"metrics_port": args.metrics_port})
    with tempfile.TemporaryDirectory(prefix="emostream-demo-") as tmp:
        sample = Path(args.input) if args.input else demo_sample(Path(tmp))
        media_seconds = probe(sample).duration or 60.0
        print(f"1. starting the embedded Kafka broker (Tansu) on 127.0.0.1:{args.port}", flush=True)
        with EmbeddedBroker(args.port, Path(tmp) / "broker", settings.kafka, settings.broker.start_timeout_seconds):
            print("2. starting Ray and the Serve app: perception, Whisper, sentence embeddings and the emotion model "
                  "(the embedded default, lite trained on RAVDESS speech)", flush=True)
            _ray_local(args.cpus)
            try:
                job = _live_job(settings)
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
                report = write_report(events, Path(args.report), f"emostream demo: {sample.name}")
                print(f"4. {len(events)} utterances, {job.stats.dead_letters} dead letters; report with an emotion timeline "
                      f"per speaker: {report}", flush=True)
            finally:
                print("5. stopping the live job, Serve, Ray and the broker", flush=True)
                serve.shutdown()
                import ray

                ray.shutdown()
    return 0 if events else 1


# -- parser --------------------------------------------------------------------------------------


def _add_cluster_options(command: argparse.ArgumentParser) -> None:
    """Where a Ray job runs and which Kafka it talks to (`run`, `backfill`)."""
    command.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka to read and write (default: from settings)")
    command.add_argument("--address", metavar="ADDR", help="Ray cluster to join, e.g. auto (default: start a local Ray)")
    command.add_argument("--cpus", type=int, metavar="N", help="CPUs for a local Ray instance (default: all)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emostream",
        description="Score the emotion of every utterance in live call and meeting media streams.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (default: $EMOSTREAM_CONFIG; "
                        "EMOSTREAM_* variables override it)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much the library logs to stderr (default: WARNING)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    schema = commands.add_parser("schema", help="write the JSON Schemas of the wire contracts",
                                 description="Write the JSON Schema of every wire contract (media segment headers, "
                                             "utterance emotion event, dead-letter event).")
    schema.add_argument("--out", default=str(SCHEMA_DIR), metavar="DIR",
                        help="folder for the *.schema.json files (default: deployments/schemas)")
    schema.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the files differ from the contracts")
    schema.set_defaults(func=cmd_schema)

    broker = commands.add_parser("broker", help="start, stop or check the embedded Kafka broker",
                                 description="Manage the embedded Kafka broker (Tansu, in memory, on 127.0.0.1) "
                                             "for local runs; `start` also creates the media, emotions and "
                                             "dead-letter topics.")
    broker.add_argument("action", choices=["start", "stop", "status"],
                        help="start: run it in the background and create the topics; stop: end it by its pid; "
                             "status: say whether it runs (exit 3 when not) and list its topics")
    broker.add_argument("--port", type=int, help="port on 127.0.0.1 (default: broker.port, 9092)")
    broker.add_argument("--state-dir", metavar="DIR", help="where the pid file and log go (default: broker.state_dir)")
    broker.add_argument("--partitions", type=int, help="partitions of created topics (default: kafka.partitions)")
    broker.set_defaults(func=cmd_broker)

    publish = commands.add_parser("publish", help="publish a media file as a stream of segments",
                                  description="Cut a video or audio file (mp4, mov, mkv, webm, wav, flac, mp3) into "
                                              "self-contained segments and publish them to the media topic, then an "
                                              "end-of-stream marker.")
    publish.add_argument("input", metavar="INPUT", help="the media file")
    publish.add_argument("--stream-id", required=True, metavar="ID",
                         help="the stream's id: message key and header (letters, digits, . _ : @ / -)")
    publish.add_argument("--realtime", action="store_true", help="pace segments to the media clock, like a live source")
    publish.add_argument("--segment-seconds", type=float, metavar="S",
                         help="target segment length; video is cut at the next key frame (default: ingest.segment_seconds)")
    publish.add_argument("--channels", metavar="ROLES",
                         help="comma-separated role of each audio channel, e.g. agent,customer")
    publish.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka to publish to (default: kafka.bootstrap_servers)")
    publish.add_argument("--quiet", action="store_true", help="no progress bar")
    publish.set_defaults(func=cmd_publish)

    consume = commands.add_parser("consume", help="decode the media topic and print each segment",
                                  description="Join the consumer group, put each stream's segments in order, decode "
                                              "them and print what they hold; bad input goes to the dead-letter topic.")
    consume.add_argument("--group-id", metavar="GROUP", help="consumer group (default: kafka.group_id)")
    consume.add_argument("--faces", action="store_true", help="also analyse faces: tracks, expressions, micro-expressions")
    consume.add_argument("--until-end-of", metavar="STREAM", help="stop after this stream's end-of-stream marker")
    consume.add_argument("--timeout", type=float, metavar="S", help="stop after this many seconds")
    consume.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka to read (default: kafka.bootstrap_servers)")
    consume.set_defaults(func=cmd_consume)

    analyze = commands.add_parser("analyze", help="find the utterances in a media file and print them",
                                  description="Run perception on a local file (no Kafka): utterances with speaker, "
                                              "transcript, prosody and the faces seen while each was spoken.")
    analyze.add_argument("input", metavar="INPUT", help="media file (video or audio)")
    analyze.add_argument("--stream-id", metavar="ID", help="stream id to report (default: the file name)")
    analyze.add_argument("--channels", metavar="ROLES", help="comma-separated role of each audio channel, e.g. agent,customer")
    analyze.add_argument("--no-asr", action="store_true", help="do not transcribe (no words are processed)")
    analyze.set_defaults(func=cmd_analyze)

    run = commands.add_parser("run", help="the live job: score every utterance of the media topic's streams",
                              description="Read the media topic (from the consumer group's committed offsets), perceive "
                                          "each segment with Ray Data, stitch utterances in session actors, score them "
                                          "through the Ray Serve app (deployed if it is not running) and write one event "
                                          "per utterance to the emotions topic. Stops on SIGINT/SIGTERM; a restart "
                                          "resumes from the last commit.")
    _add_cluster_options(run)
    run.add_argument("--profile", default="local", choices=["local", "cluster"],
                     help="Serve replicas and resources if the job deploys the app (default: local)")
    run.set_defaults(func=cmd_run)

    backfill = commands.add_parser("backfill", help="score recorded media (files or a Kafka offset range) with Ray Data",
                                   description="A bounded Ray Data job through the live job's operators: media files "
                                               "(each one stream, named after the file) or the media topic between two "
                                               "points in time, scored and written to Kafka, JSONL or Parquet.")
    backfill.add_argument("files", nargs="*", metavar="FILE_OR_DIR", help="media files, or folders of them")
    backfill.add_argument("--from-kafka", action="store_true", help="read the media topic instead of files")
    backfill.add_argument("--start", default="earliest", help="with --from-kafka: earliest or an ISO time (default: earliest)")
    backfill.add_argument("--end", default="latest", help="with --from-kafka: latest or an ISO time (default: latest)")
    backfill.add_argument("--channels", metavar="ROLES", help="files: role of each audio channel, e.g. agent,customer")
    backfill.add_argument("--to", default="jsonl", choices=["kafka", "jsonl", "parquet"], help="where events go (default: jsonl)")
    backfill.add_argument("--out", metavar="FILE", help="output file for jsonl or parquet")
    _add_cluster_options(backfill)
    backfill.add_argument("--perception-actors", type=int, default=1, metavar="N",
                          help="parallel per-segment perception actors (default: 1)")
    backfill.set_defaults(func=cmd_backfill)

    train = commands.add_parser("train", help="train an emotion model (Ray Train + DeepSpeed)",
                                description="Extract features of a labelled dataset (cached, Ray Data), train with Ray "
                                            "Train workers running DeepSpeed, checkpoint every epoch (a re-run resumes), "
                                            "and export the model with save_pretrained.")
    train.add_argument("config_file", metavar="CONFIG.yaml", help="training config, e.g. deployments/train-lite.yaml")
    train.add_argument("--address", metavar="ADDR", help="Ray cluster to join, e.g. auto (default: start a local Ray)")
    train.add_argument("--cpus", type=int, metavar="N", help="CPUs for the local Ray instance (default: all)")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a model on the validation speakers of a training config",
                                   description="WAR, UAR, weighted F1, confusion matrix and valence/arousal error on "
                                               "speakers the model never trained on, with batch and live normalisation.")
    evaluate.add_argument("config_file", metavar="CONFIG.yaml", help="training config naming the data and its validation speakers")
    evaluate.add_argument("--model", metavar="DIR", help="model folder or preset (default: the config's export folder)")
    evaluate.add_argument("--out", metavar="DIR", help="also write metrics.json and confusion.png here")
    evaluate.add_argument("--cpus", type=int, metavar="N", help="CPUs for the local Ray instance (default: all)")
    evaluate.set_defaults(func=cmd_evaluate)

    serve_config = commands.add_parser("serve-config", help="write the Serve config files of the deployment profiles",
                                       description="Generate deployments/serve-local.yaml and serve-cluster.yaml from the "
                                                   "Serve application (replicas, resources, autoscaling per profile), and "
                                                   "the RayService's serveConfigV2 in k8s/base/rayservice-serve-config.yaml.")
    serve_config.add_argument("--profile", action="append", choices=["local", "cluster"], help="only this profile (repeatable)")
    serve_config.add_argument("--check", action="store_true", help="fail if the files differ from what would be written")
    serve_config.set_defaults(func=cmd_serve_config)

    tail = commands.add_parser("tail", help="follow a topic and print its events",
                               description="Follow a topic (default: the emotions topic) and pretty-print its events.")
    tail.add_argument("topic", nargs="?", metavar="TOPIC", help="topic to follow (default: kafka.emotions_topic)")
    tail.add_argument("--json", action="store_true", help="print each event as one JSON object a line")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest event, not the next new one")
    tail.add_argument("--max-events", type=int, metavar="N", help="stop after N events")
    tail.add_argument("--timeout", type=float, metavar="S", help="stop after this many seconds")
    tail.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka to read (default: kafka.bootstrap_servers)")
    tail.set_defaults(func=cmd_tail)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except SettingsError as error:
        print(f"emostream: {error}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, TimeoutError, OSError) as error:
        print(f"emostream {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
