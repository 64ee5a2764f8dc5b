"""Ingest throughput: how fast sample media is cut, decoded and published (and consumed) through Kafka.

Stages, per input file, each timed `--runs` times (median printed):
  segment   segment_file() only, no Kafka
  decode    decode_segment() over the segments cut beforehand
  publish   publish() to a real embedded broker (Tansu on 127.0.0.1), one warm producer for all runs
  e2e       publish() in a thread while one already-joined SegmentConsumer consumes and decodes,
            until the stream's end marker is handled

Timings are printed, never asserted. Run it with loopback only, e.g.
    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/ingest.py --runs 3'
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
from kafka import KafkaProducer

from emostream.ingest.consumer import SegmentConsumer
from emostream.ingest.publish import PublishReport, publish
from emostream.kafka.broker import EmbeddedBroker, free_port
from emostream.kafka.clients import ensure_topics
from emostream.kafka.clients import producer as make_producer
from emostream.media.decode import DecodedSegment, DecodeError, decode_segment
from emostream.media.records import segment_headers
from emostream.media.segmenter import MediaError, MediaSegment, probe, segment_file
from emostream.media.synthetic import mux_files, write_clip
from emostream.settings import Settings, load_settings

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
VIDEO = Path("faces-pyfeat/WolfgangLanger_Pexels.mp4")
SPEECH = Path("speech-librivox/sense_and_sensibility_01_austen_64kb-0870.wav")
E2E_TOPIC = "emostream.bench.e2e"  # its own topic, so the e2e consumer never sees the publish stage's messages
JOIN_TIMEOUT = 30.0  # s for the consumer's first group join (~3 s on Tansu)
E2E_TIMEOUT = 60.0  # s for one end-to-end run before it counts as failed


@dataclass(frozen=True)
class Sample:
    """What one run processed and how long it took."""

    wall: float  # s
    segments: int
    media_seconds: float
    bytes: int = 0
    frames: int = 0
    audio_seconds: float = 0.0


@dataclass(frozen=True)
class Input:
    label: str  # short name for the table and the stream ids
    path: Path


@dataclass
class Row:
    input: str  # Input.label
    stage: str
    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    def median(self, value: Callable[[Sample], float]) -> float:
        return statistics.median(value(s) for s in self.samples)


# -- inputs ---------------------------------------------------------------------------------------


def prepare_inputs(data_dir: Path, tmp: Path) -> tuple[list[Input], str]:
    """The three inputs (video+audio, speech only, the two muxed) and where they come from."""
    video, speech = data_dir / VIDEO, data_dir / SPEECH
    if video.is_file() and speech.is_file():
        source = f"real recordings from {data_dir}"
    else:
        video = write_clip(tmp / "test-pattern.mp4", seconds=20, width=640, height=360, fps=25, gop=75, audio_channels=2)
        speech = write_clip(tmp / "test-tone.wav", seconds=7, audio_channels=1, sample_rate=16000, video=False)
        source = f"GENERATED test patterns and tones ({data_dir / VIDEO} or {data_dir / SPEECH} not found)"
    muxed = mux_files(video, speech, tmp / f"{video.stem}+{speech.stem}.mp4")
    return [Input("video", video), Input("speech", speech), Input("muxed", muxed)], source


def describe(path: Path) -> str:
    info = probe(path)
    parts = [f"{info.duration:.1f} s"]
    with av.open(str(path)) as container:
        for stream in container.streams.video[:1]:
            parts.append(f"video {stream.codec_context.name} {stream.codec_context.width}x{stream.codec_context.height}"
                         f" @ {float(stream.average_rate or 0):.2f} fps")
        for stream in container.streams.audio[:1]:
            seconds = float(stream.duration * stream.time_base) if stream.duration else info.duration
            parts.append(f"audio {stream.codec_context.name} {stream.codec_context.sample_rate} Hz "
                         f"{stream.codec_context.channels} ch {seconds:.1f} s")
    return f"{path.name}: " + ", ".join(parts) + f", {path.stat().st_size / 1e6:.1f} MB"


# -- stages ---------------------------------------------------------------------------------------


def media_end(segments: list[MediaSegment]) -> float:
    return max((s.start + s.duration for s in segments), default=0.0)


def bench_segment(media: Input, runs: int, segment_seconds: float, settings: Settings) -> tuple[Row, list[MediaSegment]]:
    row = Row(media.label, "segment")
    segments: list[MediaSegment] = []
    for _ in range(runs):
        started = time.perf_counter()
        segments = list(segment_file(media.path, segment_seconds, settings.ingest.max_segment_seconds))
        wall = time.perf_counter() - started
        row.samples.append(Sample(wall, len(segments), media_end(segments), sum(len(s.payload) for s in segments)))
    return row, segments


def bench_decode(media: Input, segments: list[MediaSegment], runs: int, settings: Settings) -> Row:
    row = Row(media.label, "decode")
    ingest = settings.ingest
    work = [(segment_headers("bench", s, None), s.payload) for s in segments]
    for _ in range(runs):
        frames, audio = 0, 0.0
        started = time.perf_counter()
        try:
            for headers, payload in work:
                decoded = decode_segment(headers, payload, ingest.decode_threads, ingest.max_decoded_megabytes, ingest.max_frame_side)
                frames += len(decoded.frames)
                audio += decoded.audio_seconds
        except DecodeError as error:
            row.note = f"segment {headers.seq}: {error}"
            return row
        wall = time.perf_counter() - started
        row.samples.append(Sample(wall, len(work), media_end(segments), sum(len(p) for _, p in work), frames, audio))
    return row


def bench_publish(media: Input, runs: int, segment_seconds: float, settings: Settings, producer: KafkaProducer) -> Row:
    row = Row(media.label, "publish")
    for run in range(runs):
        started = time.perf_counter()
        try:
            report = publish(media.path, f"bench-publish-{media.label}-{run}", settings,
                             segment_seconds=segment_seconds, producer=producer)
        except MediaError as error:
            row.note = str(error)
            return row
        wall = time.perf_counter() - started
        row.samples.append(Sample(wall, report.segments, report.media_seconds, report.bytes))
    return row


class EndToEnd:
    """One SegmentConsumer, joined once, that counts what it decodes for the stream being timed.

    It has its own producer: a kafka-python 3.0 producer that has sent to two topics can lose one
    topic's leaders on a metadata refresh and then spin its sender thread for seconds, holding the
    GIL, which would make decoding here look several times slower than it is.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stream_id = ""
        self.frames = self.segments = 0
        self.audio_seconds = 0.0
        self.done = threading.Event()
        self.consumer = SegmentConsumer(settings, self.handle, group_id="emostream-bench")
        self.producer = make_producer(settings.kafka)

    def join(self) -> float:
        """Poll until the group assigned partitions; returns the seconds it took (raises TimeoutError)."""
        started = time.monotonic()
        deadline = started + JOIN_TIMEOUT
        self.consumer.run(until=lambda: bool(self.consumer.consumer.assignment()) or time.monotonic() > deadline)
        if not self.consumer.consumer.assignment():
            raise TimeoutError(f"the consumer joined no group within {JOIN_TIMEOUT:.0f} s")
        return time.monotonic() - started

    def handle(self, segment: DecodedSegment) -> None:
        if segment.stream_id != self.stream_id:
            return
        if segment.is_end_marker:
            self.done.set()
            return
        self.segments += 1
        self.frames += len(segment.frames)
        self.audio_seconds += segment.audio_seconds
        if segment.end_of_stream:
            self.done.set()

    def run(self, path: Path, stream_id: str, segment_seconds: float) -> Sample:
        self.stream_id, self.frames, self.segments, self.audio_seconds = stream_id, 0, 0, 0.0
        self.done.clear()
        reports: list[PublishReport] = []
        errors: list[BaseException] = []

        def send() -> None:
            try:
                reports.append(publish(path, stream_id, self.settings, segment_seconds=segment_seconds, producer=self.producer))
            except BaseException as error:  # reported by the caller's thread
                errors.append(error)

        started = time.perf_counter()
        sender = threading.Thread(target=send, name="bench-publish")
        sender.start()
        deadline = time.monotonic() + E2E_TIMEOUT
        self.consumer.run(until=lambda: self.done.is_set() or bool(errors) or time.monotonic() > deadline)
        wall = time.perf_counter() - started
        sender.join()
        if errors:
            raise errors[0]
        if not self.done.is_set():
            raise TimeoutError(f"the end marker of {stream_id} was not consumed within {E2E_TIMEOUT:.0f} s")
        report = reports[0]
        return Sample(wall, self.segments, report.media_seconds, report.bytes, self.frames, self.audio_seconds)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.close()


def bench_e2e(media: Input, runs: int, segment_seconds: float, e2e: EndToEnd) -> Row:
    row = Row(media.label, "e2e")
    dead_before = dict(e2e.consumer.stats.dead_letters)
    for run in range(runs):
        try:
            row.samples.append(e2e.run(media.path, f"bench-e2e-{media.label}-{run}", segment_seconds))
        except (MediaError, TimeoutError) as error:
            row.note = str(error)
            break
    dead = {reason: n - dead_before.get(reason, 0) for reason, n in e2e.consumer.stats.dead_letters.items()
            if n > dead_before.get(reason, 0)}
    if dead:
        row.note = (row.note + "; " if row.note else "") + f"dead letters: {dead}"
    return row


# -- output ---------------------------------------------------------------------------------------

COLUMNS = ("input", "stage", "runs", "wall s", "segments/s", "frames/s", "audio s/s", "MB/s", "x real time")


def cells(row: Row) -> list[str]:
    if not row.samples:
        return [row.input, row.stage, "0", "-", "-", "-", "-", "-", "-"]
    has_frames = any(s.frames for s in row.samples)
    has_audio = any(s.audio_seconds for s in row.samples)
    decodes = row.stage in ("decode", "e2e")
    return [
        row.input,
        row.stage,
        str(len(row.samples)),
        f"{row.median(lambda s: s.wall):.3f}",
        f"{row.median(lambda s: s.segments / s.wall):.1f}",
        f"{row.median(lambda s: s.frames / s.wall):.0f}" if decodes and has_frames else "-",
        f"{row.median(lambda s: s.audio_seconds / s.wall):.1f}" if decodes and has_audio else "-",
        f"{row.median(lambda s: s.bytes / s.wall / 1e6):.1f}",
        f"{row.median(lambda s: s.media_seconds / s.wall):.1f}",
    ]


def table(rows: list[Row]) -> str:
    body = [list(COLUMNS)] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    lines = []
    for n, line in enumerate(body):
        # Text columns left-aligned, figures right-aligned.
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {r.input} {r.stage}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report_runs(rows: list[Row]) -> None:
    """Every run's wall time, on stderr: the table shows only medians."""
    for row in rows:
        progress(f"  {row.input} {row.stage} runs (s): " + " ".join(f"{s.wall:.3f}" for s in row.samples))


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print publish and decode throughput of sample media (median of runs).")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per file and stage (default: 5)")
    parser.add_argument("--segment-seconds", type=float, default=2.0, help="target segment length (default: 2.0)")
    parser.add_argument("--data", type=Path, default=DATA_DIR, help=f"the shared data folder (default: {DATA_DIR})")
    parser.add_argument("--no-e2e", action="store_true", help="skip the publish+consume+decode stage")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.segment_seconds <= 0:
        parser.error("--runs must be at least 1 and --segment-seconds above 0")

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="emostream-bench-") as tmp_name:
        tmp = Path(tmp_name)
        progress("preparing inputs…")
        inputs, source = prepare_inputs(args.data, tmp)
        print(f"emostream ingest bench: {cpus} CPUs, Python {platform.python_version()}, PyAV {av.__version__} "
              f"(FFmpeg libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}), "
              f"{args.runs} runs, {args.segment_seconds:g} s segments, medians")
        print(f"inputs: {source}")
        for media in inputs:
            print(f"  {media.label:<7}{describe(media.path)}")
        sys.stdout.flush()

        port = free_port()
        settings = load_settings(kafka={"bootstrap_servers": f"127.0.0.1:{port}"})
        for media in inputs:
            progress(f"segment + decode {media.label}…")
            row, segments = bench_segment(media, args.runs, args.segment_seconds, settings)
            rows += [row, bench_decode(media, segments, args.runs, settings)]
            report_runs(rows[-2:])

        progress(f"starting the embedded broker on 127.0.0.1:{port}…")
        with EmbeddedBroker(port, tmp / "broker", settings.kafka, settings.broker.start_timeout_seconds):
            e2e_settings = load_settings(kafka={"bootstrap_servers": f"127.0.0.1:{port}", "media_topic": E2E_TOPIC})
            producer = make_producer(settings.kafka)
            e2e: EndToEnd | None = None
            e2e_note = "skipped (--no-e2e)"
            try:
                if not args.no_e2e:
                    ensure_topics(e2e_settings.kafka, [E2E_TOPIC])
                    e2e = EndToEnd(e2e_settings)
                    progress("joining the consumer group (once, untimed)…")
                    try:
                        e2e_note = f"consumer group joined once in {e2e.join():.1f} s (untimed)"
                    except TimeoutError as error:
                        e2e_note = f"skipped: {error}"
                        e2e.close()
                        e2e = None
                for media in inputs:
                    progress(f"publish {media.label}…")
                    rows.append(bench_publish(media, args.runs, args.segment_seconds, settings, producer))
                    report_runs(rows[-1:])
                    if e2e is not None:
                        progress(f"publish + consume + decode {media.label}…")
                        rows.append(bench_e2e(media, args.runs, args.segment_seconds, e2e))
                        report_runs(rows[-1:])
            finally:
                producer.close()
                if e2e is not None:
                    e2e.close()

    order = {"segment": 0, "decode": 1, "publish": 2, "e2e": 3}
    labels = [media.label for media in inputs]
    rows.sort(key=lambda r: (labels.index(r.input), order[r.stage]))
    print()
    print(table(rows))
    print()
    print(f"segment = segment_file() only; decode = decode_segment() over pre-cut segments "
          f"({settings.ingest.decode_threads} thread(s), RGB frames, 16 kHz audio);")
    print("publish = publish() to an embedded Tansu broker with one warm producer (acks=all), including segmenting;")
    print(f"e2e = publish() in a thread while one SegmentConsumer consumes + decodes until the end marker; {e2e_note}.")
    print("x real time = media seconds processed per wall second.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
