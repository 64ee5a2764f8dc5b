"""Media-topic records: the checks every consumer applies, and the dead letter of a record that fails them.

Both consumers (the live job's perception stage and `SegmentConsumer`) validate records and build dead letters
here, so a bad record gets the same reason and detail wherever it is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from emostream.contracts import (
    MAX_DEAD_LETTER_DETAIL,
    MAX_DEAD_LETTER_KEY,
    MAX_ECHOED_INPUT,
    ContractError,
    DeadLetterEvent,
    DeadLetterReason,
    SegmentHeaders,
    SourceCoordinates,
    clip,
    now_utc,
)
from emostream.ingest.ordering import Rejection
from emostream.media.decode import DecodeError


@dataclass(frozen=True)
class MediaMessage:
    """One media-topic record whose headers passed validation."""

    headers: SegmentHeaders
    payload: bytes
    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> SourceCoordinates:
        return SourceCoordinates(topic=self.topic, partition=self.partition, offset=self.offset)


@dataclass(frozen=True)
class RecordRejection:
    """A media-topic record refused before ordering: its dead-letter reason and what it claimed to be."""

    reason: DeadLetterReason
    detail: str
    stream_id: str | None
    seq: int | None = None


def validate_record(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                    headers: list[tuple[str | bytes, bytes]], max_message_bytes: int) -> MediaMessage | RecordRejection:
    """Check one media-topic record's size, headers and key; the message, or why it is refused."""
    value = value or b""
    stream_hint = key.decode(errors="replace") if key else None
    if len(value) > max_message_bytes:
        return RecordRejection(DeadLetterReason.OVERSIZED,
                               f"value of {len(value)} bytes is over kafka.max_message_bytes ({max_message_bytes})",
                               stream_hint)
    try:
        parsed = SegmentHeaders.from_kafka(headers)
    except ContractError as error:
        reason = (DeadLetterReason.UNSUPPORTED_CONTENT_TYPE if "unsupported content type" in str(error)
                  else DeadLetterReason.BAD_HEADERS)
        return RecordRejection(reason, str(error), stream_hint)
    if key is not None and stream_hint != parsed.stream_id:
        return RecordRejection(DeadLetterReason.BAD_HEADERS,
                               f"message key {clip(repr(stream_hint), MAX_ECHOED_INPUT)} differs from "
                               f"emostream-stream-id {parsed.stream_id!r}",
                               parsed.stream_id, parsed.seq)
    if not value and not parsed.end_of_stream:
        return RecordRejection(DeadLetterReason.EMPTY_VALUE, "empty value without emostream-end-of-stream: true",
                               parsed.stream_id, parsed.seq)
    return MediaMessage(parsed, value, topic, partition, offset)


def decode_rejection(error: DecodeError) -> Rejection:
    reason = DeadLetterReason.TRUNCATED_SEGMENT if error.truncated else DeadLetterReason.CORRUPT_SEGMENT
    return Rejection(reason, str(error))


def dead_letter_event(rejection: Rejection | RecordRejection, source: SourceCoordinates, stream_id: str | None,
                      seq: int | None, key: str | None, value_bytes: int) -> DeadLetterEvent:
    """The dead letter of a record: why, and where the original is (the media itself is never copied).

    Its texts are cut to a few hundred characters, so a huge key or header cannot make a dead letter too
    large to send; the original record stays where `source` says.
    """
    return DeadLetterEvent(
        reason=rejection.reason, detail=clip(rejection.detail, MAX_DEAD_LETTER_DETAIL), source=source,
        stream_id=clip(stream_id, MAX_DEAD_LETTER_KEY) if stream_id is not None else None, seq=seq,
        key=clip(key, MAX_DEAD_LETTER_KEY) if key is not None else None, value_bytes=value_bytes, produced_at=now_utc())
