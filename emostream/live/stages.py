"""The per-segment Ray Data stage: check, decode and perceive media records (live and backfill).

Input rows are media records (`source.SCHEMA`); output rows (`SCHEMA`) carry either a
perceived segment (pickled; it holds the segment's 16 kHz audio, face measurements and a
few thumbnails, never the full frames) or the dead-letter event that replaces it.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Any

import cv2
import pyarrow as pa
import torch
from kafka import TopicPartition
from threadpoolctl import threadpool_limits

from emostream.contracts import DeadLetterEvent, DeadLetterReason, SourceCoordinates
from emostream.ingest.ordering import Rejection
from emostream.ingest.records import RecordRejection, dead_letter_event, decode_rejection, validate_record
from emostream.live.source import SCHEMA as RECORD_SCHEMA
from emostream.live.source import TICK
from emostream.media.decode import DecodeError, decode_record
from emostream.perception.segment import PerceivedSegment, SegmentPerceiver
from emostream.settings import Settings

SEGMENT, REJECTED = "segment", "rejected"
CARRIED = ("topic", "partition", "offset", "timestamp_ms", "read_ms", "highwater", "task", "index")  # record columns passed on as read
SCHEMA = pa.schema([
    ("kind", pa.string()),  # segment | rejected | tick
    *(RECORD_SCHEMA.field(name) for name in CARRIED),
    ("stream_id", pa.string()),
    ("seq", pa.int64()),  # null when a record was refused before its headers could be read
    ("end_of_stream", pa.bool_()),
    ("start", pa.float64()),
    ("end", pa.float64()),
    ("payload", pa.large_binary()),  # pickled PerceivedSegment, or the DeadLetterEvent's JSON
    ("frames", pa.int32()),  # frames analysed for faces
    ("faces", pa.int32()),  # faces found in them
    ("decode_seconds", pa.float64()),
    ("perceive_seconds", pa.float64()),
    ("value_bytes", pa.int64()),  # size of the record's value, for dead letters
])


@dataclass(frozen=True)
class StageRow:
    """One output row of the perception stage (`SCHEMA`), as the driver reads it."""

    kind: str  # SEGMENT | REJECTED | TICK
    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # producer wall clock of the record
    read_ms: int  # when the read task got it
    highwater: int | None  # the partition's end offset when read (-1 or None: unknown)
    task: int  # the read task that read it
    index: int  # its position in that task's output
    stream_id: str | None
    seq: int | None  # None when the record was refused before its headers could be read
    end_of_stream: bool
    start: float | None
    end: float | None
    payload: bytes  # the pickled PerceivedSegment, or the DeadLetterEvent's JSON
    frames: int
    faces: int
    decode_seconds: float
    perceive_seconds: float
    value_bytes: int

    @classmethod
    def from_arrow(cls, row: dict[str, Any]) -> StageRow:
        return cls(**row)

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @property
    def source(self) -> SourceCoordinates:
        return SourceCoordinates(topic=self.topic, partition=self.partition, offset=self.offset)

    def segment(self) -> PerceivedSegment:
        """The perceived segment a SEGMENT row carries."""
        return perceived(self.payload)

    def dead_letter_event(self) -> DeadLetterEvent:
        """The dead letter a REJECTED row carries."""
        return DeadLetterEvent.model_validate_json(self.payload)


def perceived(payload: bytes) -> PerceivedSegment:
    segment = pickle.loads(payload)  # noqa: S301 (our own stage wrote it, inside the job)
    if not isinstance(segment, PerceivedSegment):
        raise TypeError(f"expected a PerceivedSegment, got {type(segment).__name__}")
    return segment


class SegmentStage:
    """Ray Data `map_batches` callable (one per actor: the face models load once)."""

    def __init__(self, settings_json: str) -> None:
        # One thread per library: the actor holds a fraction of a CPU, and idle pool threads that spin after
        # each call (OpenCV's, OpenMP's) burn a second core for nothing.
        cv2.setNumThreads(1)
        threadpool_limits(1)
        torch.set_num_threads(1)
        self.settings = Settings.model_validate_json(settings_json)
        self.perceiver = SegmentPerceiver(self.settings)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.process(row) for row in batch.to_pylist()], schema=SCHEMA)

    def process(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {name: row.get(name) for name in CARRIED}
        out.update(kind=TICK, stream_id=None, seq=None, end_of_stream=False, start=None, end=None, payload=b"",
                   frames=0, faces=0, decode_seconds=0.0, perceive_seconds=0.0, value_bytes=len(row["value"] or b""))
        if row["kind"] == TICK:
            return out
        checked = validate_record(row["topic"], row["partition"], row["offset"], row["key"], row["value"],
                                  list(zip(row["header_keys"], row["header_values"], strict=True)),
                                  self.settings.kafka.max_message_bytes)
        if isinstance(checked, RecordRejection):
            event = self._dead_letter(checked, row, checked.stream_id, checked.seq)
            return {**out, "kind": REJECTED, "stream_id": event.stream_id, "payload": event.model_dump_json().encode()}
        headers = checked.headers
        out.update(stream_id=headers.stream_id, seq=headers.seq, end_of_stream=headers.end_of_stream,
                   start=headers.start, end=headers.start + (headers.duration or 0.0))
        started = time.perf_counter()
        try:
            segment = decode_record(checked.headers, checked.payload, self.settings.ingest, self.perceiver.frame_rates)
        except DecodeError as error:
            event = self._dead_letter(decode_rejection(error), row, headers.stream_id, headers.seq)
            return {**out, "kind": REJECTED, "payload": event.model_dump_json().encode()}
        out["decode_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        try:
            result = self.perceiver(segment)
        except Exception as error:  # a failing model loses this segment, never the stream  # noqa: BLE001
            rejection = Rejection(DeadLetterReason.PROCESSING_ERROR, f"{type(error).__name__}: {error}")
            event = self._dead_letter(rejection, row, headers.stream_id, headers.seq)
            return {**out, "kind": REJECTED, "payload": event.model_dump_json().encode()}
        out["perceive_seconds"] = time.perf_counter() - started
        analysed = result.faces.analysed if result.faces is not None else ()
        return {**out, "kind": SEGMENT, "end": result.end, "payload": pickle.dumps(result, protocol=5),
                "frames": len(analysed), "faces": sum(len(frame.faces) for frame in analysed)}

    @staticmethod
    def _dead_letter(rejection: Rejection | RecordRejection, record: dict[str, Any], stream_id: str | None,
                     seq: int | None) -> DeadLetterEvent:
        key = record["key"].decode(errors="replace") if record.get("key") else None
        source = SourceCoordinates(topic=record["topic"], partition=record["partition"], offset=record["offset"])
        return dead_letter_event(rejection, source, stream_id, seq, key, len(record["value"] or b""))
