"""Backfill: score recorded media with a bounded Ray Data job, through the live job's operators.

    files (one stream each) ─┐
                             ├→ media records → map_batches(SegmentStage) → StreamScorer actors (stream
    Kafka offset range ──────┘   (read_kafka)     check, decode, perceive      hashed): session, encoders, model

Events go to Kafka, a JSONL file or a Parquet file. The stages are the live job's: the same
perception stage, sessions, encoders and scorer, fed each stream's segments in seq order, so
the utterance ids and events are those the live job gives; only the model runs in the
scorer actors instead of behind Serve.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from emostream.live.sessions import owner, with_roles
from emostream.live.source import RECORD
from emostream.live.stages import REJECTED, SEGMENT, SegmentStage, perceived
from emostream.media.records import media_records
from emostream.settings import Settings

EVENT_SCHEMA = pa.schema([
    ("kind", pa.string()),  # event | dead_letter
    ("stream_id", pa.string()),
    ("utterance_id", pa.string()),
    ("start", pa.float64()),
    ("label", pa.string()),
    ("json", pa.string()),  # the whole event (UtteranceEmotionEvent or DeadLetterEvent)
])


def _record(stream_id: str, headers: list[tuple[str, bytes]], value: bytes, seq: int, topic: str) -> dict[str, Any]:
    return {"kind": RECORD, "topic": topic, "partition": 0, "offset": seq, "key": stream_id.encode(), "value": value,
            "header_keys": [k for k, _ in headers], "header_values": [v for _, v in headers],
            "timestamp_ms": int(time.time() * 1000), "highwater": -1, "task": 0, "index": seq}


class FileRecords:
    """flat_map: one media file → the records a live source of it would have sent (its segments, then the end)."""

    def __init__(self, settings_json: str) -> None:
        self.ingest = Settings.model_validate_json(settings_json).ingest

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        path, stream_id = row["path"], row["stream_id"]
        channels = tuple(row["channels"]) if row.get("channels") else None
        return [_record(stream_id, record.headers.to_kafka(), record.payload, record.headers.seq, f"file:{path}")
                for record in media_records(path, stream_id, self.ingest, channels)]


def kafka_record(row: dict[str, Any]) -> dict[str, Any]:
    """A `ray.data.read_kafka` row as a media record."""
    headers = list((row.get("headers") or {}).items()) if isinstance(row.get("headers"), dict) else list(row.get("headers") or [])
    return {"kind": RECORD, "topic": row["topic"], "partition": row["partition"], "offset": row["offset"],
            "key": row["key"], "value": row["value"] or b"", "header_keys": [k for k, _ in headers],
            "header_values": [v for _, v in headers], "timestamp_ms": row["timestamp"], "highwater": -1,
            "task": 0, "index": row["offset"]}


@ray.remote(num_cpus=0.25)
class StreamScorer:
    """Stitches, encodes and scores the streams hashed onto it, segment by segment as live, in-process."""

    def __init__(self, settings_json: str) -> None:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        from emostream.models.score import StreamContexts, load_scorer  # noqa: PLC0415
        from emostream.perception.encode import UtteranceEncoder  # noqa: PLC0415
        from emostream.perception.session import StreamSessions  # noqa: PLC0415

        threadpool_limits(1)
        self.settings = Settings.model_validate_json(settings_json)
        self.sessions = StreamSessions(self.settings)
        self.sessions.warm_up()
        self.encoder = UtteranceEncoder(self.settings.voice)
        self.scorer = load_scorer(self.settings.serve.model, self.settings.serve.model_name)
        self.contexts = StreamContexts()
        self.seen: dict[str, set[int]] = {}

    def push(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """Event rows (EVENT_SCHEMA) of one perceived row: its dead letter, or the utterances it closed."""
        if row["kind"] == REJECTED:
            return [{"kind": "dead_letter", "stream_id": row["stream_id"], "utterance_id": None, "start": row["start"],
                     "label": None, "json": row["payload"].decode()}]
        seen = self.seen.setdefault(row["stream_id"], set())
        if row["kind"] != SEGMENT or row["seq"] in seen:  # a re-sent segment counts once
            return []
        seen.add(row["seq"])
        return self._score(self.sessions.push(perceived(row["payload"])))

    def finish(self) -> list[dict[str, Any]]:
        """Close the streams that had no end marker in the range."""
        bundles = [b for session in self.sessions.sessions.values() for b in session.flush()]
        self.sessions.sessions.clear()
        return self._score(bundles)

    def _score(self, bundles: list[Any]) -> list[dict[str, Any]]:
        bundles = with_roles(bundles, self.settings.live.score_roles)
        if not bundles:
            return []
        events = self.scorer.score(self.encoder(bundles), self.contexts)
        return [{"kind": "event", "stream_id": e.stream_id, "utterance_id": e.utterance_id, "start": e.start,
                 "label": e.label, "json": e.model_dump_json()} for e in events]


def records_from_files(paths: list[Path], settings: Settings, channels: tuple[str, ...] | None) -> ray.data.Dataset:
    items = [{"path": str(p), "stream_id": p.stem, "channels": list(channels) if channels else None} for p in paths]
    return ray.data.from_items(items).flat_map(FileRecords, fn_constructor_args=(settings.model_dump_json(),),
                                               compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)


def records_from_kafka(settings: Settings, start: str, end: str) -> ray.data.Dataset:
    """The media topic between `start` and `end` ("earliest"/"latest" or an ISO time)."""
    kafka = settings.kafka
    config: dict[str, Any] = {"security.protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        config.update({"sasl.mechanism": kafka.sasl_mechanism, "sasl.username": kafka.sasl_plain_username,
                       "sasl.password": kafka.sasl_plain_password})
    if kafka.ssl_cafile:
        config["ssl.ca.location"] = kafka.ssl_cafile

    def bound(value: str) -> Any:
        return value if value in ("earliest", "latest") else datetime.fromisoformat(value)

    ds = ray.data.read_kafka(kafka.media_topic, bootstrap_servers=kafka.bootstrap_servers, start_offset=bound(start),
                             end_offset=bound(end), consumer_config=config, num_cpus=0.25)
    return ds.map(kafka_record, num_cpus=0.1)


def backfill(records: ray.data.Dataset, settings: Settings, perception_actors: int = 1,
             scorers: int = 1) -> Iterator[dict[str, Any]]:
    """Event rows (EVENT_SCHEMA) of every stream in `records`.

    Perception runs in a Ray Data actor pool; its rows come back in source order (a stream's in
    seq order) and go to the scorer actor that owns their stream, as the live job's sessions do.
    """
    from ray.data import DataContext  # noqa: PLC0415

    context = DataContext.get_current()
    context.enable_progress_bars = True
    context.execution_options.preserve_order = True
    blob = settings.model_dump_json()
    perceived_rows = records.map_batches(SegmentStage, fn_constructor_args=(blob,), batch_size=1, batch_format="pyarrow",
                                         compute=ray.data.ActorPoolStrategy(size=perception_actors),
                                         num_cpus=settings.live.perception_cpus)
    actors = [StreamScorer.remote(blob) for _ in range(scorers)]  # type: ignore[attr-defined]
    try:
        pending: list[Any] = []
        for row in perceived_rows.iter_rows():
            pending.append(actors[owner(row["stream_id"] or "", scorers)].push.remote(row))
            while len(pending) > 32:  # bounded: results flow out while perception goes on
                yield from ray.get(pending.pop(0))
        for ref in pending:
            yield from ray.get(ref)
        for rows in ray.get([actor.finish.remote() for actor in actors]):
            yield from rows
    finally:
        for actor in actors:
            ray.kill(actor)


def write_events(rows: Iterator[dict[str, Any]], settings: Settings, to: str, out: Path | None) -> dict[str, int]:
    """Send or write the rows; counts of events and dead letters."""
    counts = {"event": 0, "dead_letter": 0}
    rows = sorted(rows, key=lambda r: (r["stream_id"] or "", r["start"] or 0.0))
    if to == "kafka":
        from emostream.kafka.clients import producer  # noqa: PLC0415

        sender = producer(settings.kafka)
        for row in rows:
            topic = settings.kafka.emotions_topic if row["kind"] == "event" else settings.kafka.deadletter_topic
            sender.send(topic, key=(row["stream_id"] or "").encode() or None, value=row["json"].encode())
            counts[row["kind"]] += 1
        sender.flush()
        sender.close()
        return counts
    if out is None:
        raise ValueError(f"--out is needed to write {to}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if to == "jsonl":
        with out.open("w") as file:
            for row in rows:
                file.write(row["json"] + "\n")
                counts[row["kind"]] += 1
        return counts
    if to == "parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415

        table = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
        pq.write_table(table, out)
        for row in rows:
            counts[row["kind"]] += 1
        return counts
    raise ValueError(f"unknown output {to!r} (kafka, jsonl or parquet)")

