"""`emostream publish FILE`: a media file as a stream of segments on the media topic."""

from __future__ import annotations

import argparse

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from emostream.cli.common import Commands, settings_from
from emostream.ingest.publish import publish
from emostream.media.segmenter import probe


def add_publish(commands: Commands) -> None:
    command = commands.add_parser("publish", help="publish a media file as a stream of segments",
                                  description="Cut a video or audio file (mp4, mov, mkv, webm, wav, flac, mp3) into "
                                              "self-contained segments and publish them to the media topic, then an "
                                              "end-of-stream marker.")
    command.add_argument("input", metavar="INPUT", help="the media file")
    command.add_argument("--stream-id", required=True, metavar="ID",
                         help="the stream's id: message key and header (letters, digits, . _ : @ / -)")
    command.add_argument("--realtime", action="store_true", help="pace segments to the media clock, like a live source")
    command.add_argument("--segment-seconds", type=float, metavar="S",
                         help="target segment length; video is cut at the next key frame (default: ingest.segment_seconds)")
    command.add_argument("--channels", metavar="ROLES",
                         help="comma-separated role of each audio channel, e.g. agent,customer")
    command.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka to publish to (default: kafka.bootstrap_servers)")
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    command.set_defaults(func=cmd_publish)


def cmd_publish(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    channels = tuple(c.strip() for c in args.channels.split(",")) if args.channels else None
    total = probe(args.input).duration or None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} s"),
                  TimeElapsedColumn(), disable=args.quiet) as progress:
        task = progress.add_task(f"publishing {args.stream_id}", total=total)
        report = publish(
            args.input, args.stream_id, settings, realtime=args.realtime, segment_seconds=args.segment_seconds,
            channels=channels,
            on_segment=lambda record: progress.update(task, completed=record.end),
        )
    print(f"published {report.segments} segments ({report.media_seconds:.1f} s of media, {report.bytes / 1e6:.1f} MB) "
          f"of stream {report.stream_id!r} to {settings.kafka.media_topic} in {report.wall_seconds:.1f} s")
    return 0
