"""`emostream consume` (decode the media topic and print each segment) and `emostream tail` (follow a topic and
print its events)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from emostream.cli.common import Commands, settings_from
from emostream.ingest.consumer import SegmentConsumer
from emostream.kafka import clients
from emostream.labels import FER7
from emostream.media.decode import DecodedSegment
from emostream.settings import Settings

# The face models load torch: imported inside FaceReport, which only `consume --faces` builds.


def add_consume(commands: Commands) -> None:
    consume = commands.add_parser("consume", help="decode the media topic and print each segment",
                                  description="Join the consumer group, put each stream's segments in order, decode "
                                              "them and print what they hold; bad input goes to the dead-letter topic.")
    consume.add_argument("--group-id", metavar="GROUP", help="consumer group (default: kafka.group_id)")
    consume.add_argument("--faces", action="store_true", help="also analyse faces: tracks, expressions, micro-expressions")
    consume.add_argument("--until-end-of", metavar="STREAM", help="stop after this stream's end-of-stream marker")
    consume.add_argument("--timeout", type=float, metavar="S", help="stop after this many seconds")
    consume.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka to read (default: kafka.bootstrap_servers)")
    consume.set_defaults(func=cmd_consume)


def cmd_consume(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    ended: set[str] = set()
    faces = FaceReport(settings) if args.faces else None

    def show(segment: DecodedSegment) -> None:
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


def describe_segment(segment: DecodedSegment) -> str:
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

    def describe(self, segment: DecodedSegment) -> str:
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
            parts.append(f"face {track_id}: {FER7[int(mean.argmax())]} {mean.max():.2f} ({len(expressions)} frames)")
        parts += [f"{m.measure.replace('_', ' ')} flicker on face {m.track_id} at {m.apex:.2f} s ({m.amplitude:+.1f} σ)"
                  for u in updates for m in u.micro_expressions]
        parts += [f"face {t} left" for u in updates for t in u.ended]
        return "; ".join(parts) or "no faces"


def add_tail(commands: Commands) -> None:
    tail = commands.add_parser("tail", help="follow a topic and print its events",
                               description="Follow a topic (default: the emotions topic) and pretty-print its events.")
    tail.add_argument("topic", nargs="?", metavar="TOPIC", help="topic to follow (default: kafka.emotions_topic)")
    tail.add_argument("--json", action="store_true", help="print each event as one JSON object a line")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest event, not the next new one")
    tail.add_argument("--max-events", type=int, metavar="N", help="stop after N events")
    tail.add_argument("--timeout", type=float, metavar="S", help="stop after this many seconds")
    tail.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka to read (default: kafka.bootstrap_servers)")
    tail.set_defaults(func=cmd_tail)


def cmd_tail(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    topic = args.topic or settings.kafka.emotions_topic
    reader = clients.consumer(settings.kafka, [topic], group_id=None,
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


def format_event(topic: str, value: bytes, settings: Settings) -> str:
    """One line for a record of an events topic: an utterance event, a dead letter, or the JSON as it is."""
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
