"""Backfill: score recorded media with a bounded Ray Data job, through the live job's operators.

    files (one stream each) ─┐
                             ├→ media records → map_batches(SegmentStage) → BackfillStreams actors (stream
    Kafka offset range ──────┘   (read_kafka)     check, decode, perceive      hashed): a Spine's stitch, encode, score

Events go to a sink (`emostream.sinks`: Kafka, a JSONL file or a Parquet file). The stages are the live job's: the same
perception stage, then the spine's sessions, encoders and scorer, fed each stream's segments in seq order, so
the utterance ids and events are those the live job gives; only the encoders and the model run in the
stream actors instead of behind Serve. With `describe`, the stream actors also load the describer (`serve.describer`)
and every event gets its open-vocabulary words and, where it cites measured cues, its explanation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import ray
from ray.data import DataContext
from threadpoolctl import threadpool_limits

from emostream.contracts import DeadLetterEvent, UtteranceEmotionEvent
from emostream.live.sessions import owner
from emostream.live.source import RECORD, record_row
from emostream.live.stages import REJECTED, SEGMENT, SegmentStage, StageRow
from emostream.media.records import media_records
from emostream.perception.utterance import UtteranceBundle
from emostream.settings import KafkaSettings, Settings
from emostream.sinks import Sink
from emostream.spine import Spine


class FileRecords:
    """flat_map: one media file → the records a live source of it would have sent (its segments, then the end)."""

    def __init__(self, settings_json: str) -> None:
        self.ingest = Settings.model_validate_json(settings_json).ingest

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        path, stream_id = row["path"], row["stream_id"]
        channels = tuple(row["channels"]) if row.get("channels") else None
        now_ms = int(time.time() * 1000)
        return [record_row(RECORD, f"file:{path}", 0, record.headers.seq, stream_id.encode(), record.payload,
                           record.headers.to_kafka(), now_ms, now_ms, -1, index=record.headers.seq)
                for record in media_records(path, stream_id, self.ingest, channels)]


def kafka_record(row: dict[str, Any]) -> dict[str, Any]:
    """A `ray.data.read_kafka` row as a media record."""
    headers = list((row.get("headers") or {}).items()) if isinstance(row.get("headers"), dict) else list(row.get("headers") or [])
    return record_row(RECORD, row["topic"], row["partition"], row["offset"], row["key"], row["value"], headers,
                      row["timestamp"], row["timestamp"], -1, index=row["offset"])


Output = UtteranceEmotionEvent | DeadLetterEvent


@ray.remote(num_cpus=0.25)
class BackfillStreams:
    """Stitches, encodes and scores the streams hashed onto it, segment by segment as live, in-process."""

    def __init__(self, settings_json: str, describe: bool = False) -> None:
        threadpool_limits(1)
        self.settings = Settings.model_validate_json(settings_json)
        self.spine = Spine(self.settings)
        self.spine.sessions.warm_up()
        self.seen: dict[str, set[int]] = {}
        self.describer = Describer(self.settings) if describe else None

    def push(self, row: StageRow) -> list[Output]:
        """The events of one perceived row: its dead letter, or the utterances it closed."""
        if row.kind == REJECTED:
            return [row.dead_letter_event()]
        seen = self.seen.setdefault(row.stream_id or "", set())
        if row.kind != SEGMENT or row.seq in seen:  # a re-sent segment counts once
            return []
        seen.add(row.seq)
        return self._score(self.spine.closed(row.segment()))

    def finish(self) -> list[Output]:
        """Close the streams that had no end marker in the range."""
        return self._score(self.spine.finish())

    def _score(self, bundles: list[UtteranceBundle]) -> list[Output]:
        events = self.spine.score(bundles)
        return list(self.describer.add_words(bundles, events) if self.describer and bundles else events)


class Describer:
    """The describer model (`serve.describer`) in a backfill's stream actor: what the Serve app's Describer
    deployment adds to an event, added in-process."""

    def __init__(self, settings: Settings) -> None:
        from emostream.models.llm import load_describer  # noqa: PLC0415

        self.model, self.tokenizer = load_describer(describer_path(settings))
        self.batch = settings.serve.describer_max_batch_size
        self.max_new_tokens = settings.serve.describer_max_new_tokens

    def add_words(self, bundles: list[UtteranceBundle], events: list[UtteranceEmotionEvent]) -> list[UtteranceEmotionEvent]:
        """The events of `bundles` (in their order) with the describer's words and explanation."""
        from emostream.models.llm import describe, described_fields, description  # noqa: PLC0415

        answers = [answer for first in range(0, len(bundles), self.batch)
                   for answer in describe(self.model, self.tokenizer, bundles[first : first + self.batch], self.max_new_tokens)]
        return [event.model_copy(update=described_fields(description(answer), event.explanation))
                for event, answer in zip(events, answers, strict=True)]


def describer_path(settings: Settings) -> Path:
    """The describer a backfill with `describe` loads; ValueError naming the setting when there is none."""
    if settings.serve.describer is None:
        raise ValueError("describe needs a describer: set serve.describer (EMOSTREAM_SERVE__DESCRIBER) to a model with a "
                         "language model, e.g. a fine-tuned mllm export")
    return settings.serve.describer


def records_from_files(paths: list[Path], settings: Settings, channels: tuple[str, ...] | None) -> ray.data.Dataset:
    _ordered()
    items = [{"path": str(p), "stream_id": p.stem, "channels": list(channels) if channels else None} for p in paths]
    return ray.data.from_items(items).flat_map(FileRecords, fn_constructor_args=(settings.model_dump_json(),),
                                               compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)


def confluent_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The connection options of `kafka` in confluent-kafka's names (`ray.data.read_kafka` uses that client)."""
    config: dict[str, Any] = {"security.protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        config.update({"sasl.mechanism": kafka.sasl_mechanism, "sasl.username": kafka.sasl_plain_username,
                       "sasl.password": kafka.sasl_plain_password})
    for name, option in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                         ("ssl_keyfile", "ssl.key.location")):
        if getattr(kafka, name):
            config[option] = getattr(kafka, name)
    return config


def records_from_kafka(settings: Settings, start: str, end: str) -> ray.data.Dataset:
    """The media topic between `start` and `end` ("earliest"/"latest" or an ISO time)."""
    _ordered()
    kafka = settings.kafka
    config = confluent_config(kafka)

    def bound(value: str) -> Any:
        return value if value in ("earliest", "latest") else datetime.fromisoformat(value)

    ds = ray.data.read_kafka(kafka.media_topic, bootstrap_servers=kafka.bootstrap_servers, start_offset=bound(start),
                             end_offset=bound(end), consumer_config=config, num_cpus=0.25)
    return ds.map(kafka_record, num_cpus=0.1)


def backfill(records: ray.data.Dataset, settings: Settings, perception_actors: int = 1, scorers: int = 1,
             describe: bool = False) -> Iterator[Output]:
    """The events (and dead letters) of every stream in `records` (made by `records_from_files` or
    `records_from_kafka`, which keep the records in order); `describe`: with the describer's words and explanation.

    Perception runs in a Ray Data actor pool; its rows come back in source order (a stream's in
    seq order) and go to the actor that owns their stream, as the live job's sessions do.
    """
    if describe:
        describer_path(settings)  # no describer: fail before any media is read
    blob = settings.model_dump_json()
    perceived_rows = records.map_batches(SegmentStage, fn_constructor_args=(blob,), batch_size=1, batch_format="pyarrow",
                                         compute=ray.data.ActorPoolStrategy(size=perception_actors),
                                         num_cpus=settings.live.perception_cpus)
    actors = [BackfillStreams.remote(blob, describe) for _ in range(scorers)]  # type: ignore[attr-defined]
    try:
        pending: list[Any] = []
        for row in map(StageRow.from_arrow, perceived_rows.iter_rows()):
            pending.append(actors[owner(row.stream_id or "", scorers)].push.remote(row))
            while len(pending) > 32:  # bounded: results flow out while perception goes on
                yield from ray.get(pending.pop(0))
        for ref in pending:
            yield from ray.get(ref)
        for outputs in ray.get([actor.finish.remote() for actor in actors]):
            yield from outputs
    finally:
        for actor in actors:
            ray.kill(actor)


def write_events(outputs: Iterator[Output], sink: Sink) -> dict[str, int]:
    """Hand every output to the sink in stream and time order, flush and close it; the counts of each kind."""
    counts = {"event": 0, "dead_letter": 0}
    ordered = sorted(outputs, key=lambda o: (o.stream_id or "", o.start if isinstance(o, UtteranceEmotionEvent) else 0.0))
    try:
        for output in ordered:
            if isinstance(output, UtteranceEmotionEvent):
                sink.send(output)
                counts["event"] += 1
            else:
                sink.dead_letter(output)
                counts["dead_letter"] += 1
    finally:
        sink.close()
    return counts


def _ordered() -> None:
    """Ray Data keeps a dataset's execution options from when it is created: records must come out in order
    (a stream's segments out of order look like gaps and cut utterances differently)."""
    DataContext.get_current().execution_options.preserve_order = True
