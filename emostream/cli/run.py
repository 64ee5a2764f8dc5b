"""`emostream run` (the live job) and `emostream backfill` (recorded media through the same operators): the two
commands that run on a Ray cluster and talk to Kafka."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from emostream.cli.common import Commands, live_job, ray_connect, settings_from

# Backfill loads Ray and the models: imported inside cmd_backfill, so that the other commands start fast.


def add_cluster_options(command: argparse.ArgumentParser) -> None:
    """Where a Ray job runs and which Kafka it talks to (`run`, `backfill`)."""
    command.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka to read and write (default: from settings)")
    command.add_argument("--address", metavar="ADDR", help="Ray cluster to join, e.g. auto (default: start a local Ray)")
    command.add_argument("--cpus", type=int, metavar="N", help="CPUs for a local Ray instance (default: all)")


def add_run(commands: Commands) -> None:
    run = commands.add_parser("run", help="the live job: score every utterance of the media topic's streams",
                              description="Read the media topic (from the consumer group's committed offsets), perceive "
                                          "each segment with Ray Data, stitch utterances in session actors, score them "
                                          "through the Ray Serve app (deployed if it is not running) and write one event "
                                          "per utterance to the emotions topic. Stops on SIGINT/SIGTERM; a restart "
                                          "resumes from the last commit.")
    add_cluster_options(run)
    run.add_argument("--profile", default="local", choices=["local", "cluster"],
                     help="Serve replicas and resources if the job deploys the app (default: local)")
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    ray_connect(args.address, args.cpus, settings.live.spill_directory)
    job = live_job(settings, args.profile)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"live job: {settings.kafka.media_topic} → {settings.kafka.emotions_topic} at {settings.kafka.bootstrap_servers} "
          f"(group {settings.kafka.group_id}); metrics on {settings.live.metrics_host}:{settings.live.metrics_port}", flush=True)
    stats = job.run(stop)
    print(f"stopped: {stats.segments} segments, {stats.events} events, {stats.dead_letters} dead letters, "
          f"{stats.restarts} restarts, {stats.renewals} Ray Data flows renewed")
    return 0


def add_backfill(commands: Commands) -> None:
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
    add_cluster_options(backfill)
    backfill.add_argument("--perception-actors", type=int, default=1, metavar="N",
                          help="parallel per-segment perception actors (default: 1)")
    backfill.add_argument("--describe", action="store_true",
                          help="add the describer's open-vocabulary words and explanation to every event (needs "
                               "serve.describer; an LLM answer per utterance: slower)")
    backfill.set_defaults(func=cmd_backfill)


def cmd_backfill(args: argparse.Namespace) -> int:
    from emostream.live.backfill import backfill, describer_path, records_from_files, records_from_kafka, write_events
    from emostream.sinks import open_sink

    settings = settings_from(args)
    if bool(args.files) == bool(args.from_kafka):
        print("give media files/folders, or --from-kafka (not both)", file=sys.stderr)
        return 2
    if args.describe:
        try:
            describer_path(settings)
        except ValueError as error:
            print(f"--{error}", file=sys.stderr)
            return 2
    ray_connect(args.address, args.cpus, settings.live.spill_directory)
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
    counts = write_events(backfill(records, settings, args.perception_actors, describe=args.describe),
                          open_sink(args.to, settings, args.out))
    seconds = time.monotonic() - started
    where = settings.kafka.emotions_topic if args.to == "kafka" else args.out
    print(f"{counts['event']} events, {counts['dead_letter']} dead letters → {where} in {seconds:.1f} s")
    return 0
