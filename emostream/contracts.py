"""Wire contracts: what goes into and comes out of Kafka (ARCHITECTURE.md §2).

Every message carries `schema_version`; a consumer rejects a major version it
does not know. JSON Schemas of these models live in `deployments/schemas/`
(`emostream schema` writes them).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = "1.0"

# Kafka header names of a media segment (values are UTF-8 text).
HEADER_PREFIX = "emostream-"

# Content types a segment may have. Parameters follow a `;` (e.g. raw PCM).
CONTAINER_CONTENT_TYPES = {
    "video/mp2t": "mpegts",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/x-matroska": "matroska",
    "audio/wav": "wav",
    "audio/webm": "webm",
    "audio/ogg": "ogg",
    "audio/mpeg": "mp3",
}
# Raw little-endian 16-bit PCM, e.g. "audio/pcm;rate=8000;channels=2" (telephony).
RAW_PCM_CONTENT_TYPE = "audio/pcm"
SUPPORTED_CONTENT_TYPES = (*CONTAINER_CONTENT_TYPES, RAW_PCM_CONTENT_TYPE)

StreamId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@/-]+$")]

# Bounds on what a header may claim, so one record cannot overflow a column or a buffer downstream.
MAX_SEQ = 2**63 - 1  # the int64 seq column of the live perception stage
MAX_STREAM_SECONDS = 1e7  # stream time of any segment (about 115 days)
# Media in one segment, declared or decoded (publishers cut 2-10 s, at most ingest.max_segment_seconds = 120):
# per-segment perception holds several times the decoded audio, so a longer segment is refused.
MAX_SEGMENT_SECONDS = 120.0
MAX_AUDIO_CHANNELS = 16  # each channel is a voice of its own (activity, prosody, speakers); 7.1 sound is 8
# A channel role is a short name ("agent"); the map is one comma-separated header, so no commas in a role.
Role = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^,\x00-\x1f\x7f]+$")]
# A dead letter stays small whatever the record held: long texts are cut (with a marker) to these lengths.
MAX_DEAD_LETTER_KEY = 256  # characters of the original key (and of a stream id taken from it)
MAX_DEAD_LETTER_DETAIL = 2000  # characters of the reason's detail
MAX_ECHOED_INPUT = 120  # characters of a bad header value repeated in an error message


class ContractError(ValueError):
    """A message does not follow its wire contract; the text says which field and why."""


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: str = SCHEMA_VERSION  # major.minor of this contract

    @field_validator("schema_version")
    @classmethod
    def _known_major(cls, value: str) -> str:
        if value.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"unsupported schema version {value!r} (this build reads {SCHEMA_VERSION.split('.')[0]}.x)")
        return value


class SegmentHeaders(_Contract):
    """Kafka headers of one message on the media topic (key = stream id)."""

    stream_id: StreamId  # the call or meeting this segment belongs to
    seq: int = Field(ge=0, le=MAX_SEQ)  # position of the segment in its stream, 0, 1, 2, … without gaps
    # stream time (s) of the earliest sample in the segment
    start: float = Field(ge=0, le=MAX_STREAM_SECONDS, allow_inf_nan=False)
    # media seconds in the segment, to detect truncation
    duration: float | None = Field(None, ge=0, le=MAX_SEGMENT_SECONDS, allow_inf_nan=False)
    # Stream time = container timestamp + this. When absent, the segment's earliest
    # timestamp stands for `start`. Media decoding to before stream time 0 is pre-roll and dropped.
    timestamp_offset: float | None = Field(None, ge=-MAX_STREAM_SECONDS, le=MAX_STREAM_SECONDS, allow_inf_nan=False)
    content_type: str = Field(max_length=200)  # one of SUPPORTED_CONTENT_TYPES, with parameters for raw PCM
    end_of_stream: bool = False  # true on the last segment or on an empty end marker
    # role of each audio channel, e.g. ("agent", "customer")
    channels: tuple[Role, ...] | None = Field(None, min_length=1, max_length=MAX_AUDIO_CHANNELS)
    sent_at: float | None = Field(None, ge=0, allow_inf_nan=False)  # producer wall clock (Unix seconds), for ingest lag

    @field_validator("content_type")
    @classmethod
    def _supported(cls, value: str) -> str:
        base = value.split(";")[0].strip().lower()
        if base not in SUPPORTED_CONTENT_TYPES:
            raise ValueError(f"unsupported content type {value!r} (supported: {', '.join(SUPPORTED_CONTENT_TYPES)})")
        if base == RAW_PCM_CONTENT_TYPE:
            raw_pcm_format(value)
        return value

    def to_kafka(self) -> list[tuple[str, bytes]]:
        """Headers as kafka-python wants them: (name, bytes) pairs; unset fields are left out."""
        headers = []
        for name, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (tuple, list)):
                text = ",".join(value)
            else:
                text = str(value)
            headers.append((HEADER_PREFIX + name.replace("_", "-"), text.encode()))
        return headers

    @classmethod
    def from_kafka(cls, headers: list[tuple[str | bytes, bytes]] | None) -> SegmentHeaders:
        """Parse Kafka headers (names as text, or as the bytes on the wire); raise ContractError naming what is
        missing or malformed."""
        values: dict[str, object] = {}
        for wire_name, raw in headers or []:
            try:  # a name read leniently (emostream.kafka.header_names) holds its undecodable bytes as surrogates
                name = (wire_name if isinstance(wire_name, bytes) else wire_name.encode("utf-8", "surrogateescape")).decode()
            except UnicodeDecodeError:
                raise ContractError(f"header name {clip(repr(wire_name), MAX_ECHOED_INPUT)} is not UTF-8") from None
            if not name.startswith(HEADER_PREFIX):
                continue  # other systems' headers (tracing, …) pass through untouched
            field = name[len(HEADER_PREFIX):].replace("-", "_")
            try:
                text = raw.decode()
            except (UnicodeDecodeError, AttributeError):
                raise ContractError(f"header {clip(repr(name), MAX_ECHOED_INPUT)} is not UTF-8 text") from None
            if field == "channels":
                values[field] = tuple(part.strip() for part in text.split(",")) if text else None
            elif field == "end_of_stream":
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ContractError(f"header {name!r} = {clip(repr(text), MAX_ECHOED_INPUT)}: expected true or false")
                values[field] = text.lower() in ("true", "1")
            else:
                values[field] = text
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise ContractError(describe_validation_error(error, prefix=HEADER_PREFIX)) from None


def raw_pcm_format(content_type: str) -> tuple[int, int]:
    """(sample rate, channels) of an `audio/pcm;rate=R;channels=C` content type."""
    params = dict(
        part.strip().split("=", 1) for part in content_type.split(";")[1:] if "=" in part
    )
    try:
        rate, channels = int(params["rate"]), int(params.get("channels", "1"))
    except (KeyError, ValueError):
        raise ValueError(f"raw PCM needs integer parameters, e.g. 'audio/pcm;rate=8000;channels=1', got {content_type!r}") from None
    if not (1000 <= rate <= 384_000 and 1 <= channels <= MAX_AUDIO_CHANNELS):
        raise ValueError(f"raw PCM rate {rate} or channels {channels} out of range "
                         f"(1000–384000 Hz, 1–{MAX_AUDIO_CHANNELS} channels)")
    return rate, channels


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "message"
        name = prefix + field.replace("_", "-") if prefix else field
        if item["type"] == "missing":
            parts.append(f"{name} is missing")
        else:
            parts.append(f"{name} = {clip(repr(item.get('input')), MAX_ECHOED_INPUT)}: {item['msg']}")
    return "; ".join(parts)


def clip(text: str, limit: int) -> str:
    """`text`, or its first characters and a marker saying how long it was, within `limit` characters."""
    if len(text) <= limit:
        return text
    marker = f"…[{len(text)} chars]"
    return text[: max(0, limit - len(marker))] + marker


# -- output ------------------------------------------------------------------------------------


class Speaker(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str  # channel role ("customer"), channel index ("ch1") or diarised id ("spk2")
    role: str | None = None  # from the channel map, when there is one
    channel: int | None = None  # audio channel the voice came from
    face_track: int | None = None  # track id of the speaking face, when one is visible


class Cue(BaseModel):
    """One measured signal behind the decision, e.g. pitch 1.8 σ above the speaker's mean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: Literal["face", "voice", "words"]
    name: str  # e.g. "pitch_mean", "brow_lower", "expression:angry"
    value: float  # the measurement (z-score, probability, …)
    detail: str  # human-readable form of the same


class ListenerEmotion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    face_track: int
    label: str  # most likely facial expression over the utterance
    probabilities: dict[str, float]


class Timings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ingest_lag_seconds: float | None = None  # producer send → first processing of the utterance's audio
    processing_seconds: float  # utterance closed → event produced
    stages: dict[str, float] = {}  # per-stage seconds, e.g. {"asr": 0.2, "model": 0.01}


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str  # e.g. "emostream-lite"
    version: str  # checkpoint version or hash


class UtteranceEmotionEvent(_Contract):
    """One message on the emotions topic: the emotion of one utterance (key = stream id)."""

    stream_id: StreamId
    utterance_id: str  # deterministic: utterance_id(stream, speaker, start)
    speaker: Speaker
    start: float = Field(ge=0)  # stream time (s)
    end: float = Field(ge=0)
    transcript: str | None = None  # None when ASR is off or nothing was heard
    label: str  # most likely emotion in `labels`
    probabilities: dict[str, float]  # over the configured label set, summing to 1
    valence: float = Field(ge=-1, le=1)  # unpleasant −1 … pleasant +1
    arousal: float = Field(ge=-1, le=1)  # calm −1 … excited +1
    open_vocabulary: list[str] = []  # free emotion words, e.g. ["irritated", "impatient"]
    explanation: str  # why, in one or two sentences grounded in the cues
    cues: list[Cue] = []
    listeners: list[ListenerEmotion] = []  # other visible faces during the utterance
    model: ModelInfo
    timings: Timings
    produced_at: datetime  # UTC

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: float, info) -> float:  # type: ignore[no-untyped-def]
        start = info.data.get("start")
        if start is not None and value < start:
            raise ValueError(f"end {value} is before start {start}")
        return value


_UTTERANCE_NAMESPACE = uuid.UUID("6f1c3c1e-8a0d-4c43-9c59-6d0c2b7c5e11")


def utterance_id(stream_id: str, speaker_id: str, start: float) -> str:
    """Deterministic id, so a replay after a crash yields the same id (start rounded to ms)."""
    return str(uuid.uuid5(_UTTERANCE_NAMESPACE, f"{stream_id}|{speaker_id}|{round(start * 1000)}"))


class DeadLetterReason(StrEnum):
    BAD_HEADERS = "bad_headers"  # missing or malformed emostream-* headers
    EMPTY_VALUE = "empty_value"  # no bytes and not an end-of-stream marker
    OVERSIZED = "oversized"  # larger than kafka.max_message_bytes
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    CORRUPT_SEGMENT = "corrupt_segment"  # the container or codec could not decode it
    TRUNCATED_SEGMENT = "truncated_segment"  # decodes to less media than its header says
    DUPLICATE_SEQ = "duplicate_seq"  # the same stream and seq was already processed
    TOO_LATE = "too_late"  # the stream had moved past this seq (declared a gap) before it came
    AFTER_END_OF_STREAM = "after_end_of_stream"  # the stream had already ended
    PROCESSING_ERROR = "processing_error"  # a later stage failed on this input


class SourceCoordinates(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    partition: int
    offset: int


class DeadLetterEvent(_Contract):
    """One message on the dead-letter topic: something that could not be processed."""

    reason: DeadLetterReason
    detail: str = Field(max_length=MAX_DEAD_LETTER_DETAIL)  # what exactly was wrong, naming the field, value or codec
    source: SourceCoordinates  # where the original message is
    stream_id: str | None = Field(None, max_length=MAX_DEAD_LETTER_KEY)  # when the headers (or the key) named one
    seq: int | None = None
    key: str | None = Field(None, max_length=MAX_DEAD_LETTER_KEY)  # the original message key, as text (cut if long)
    value_bytes: int  # size of the original value; the media itself is never copied here
    produced_at: datetime


def now_utc() -> datetime:
    return datetime.now(UTC)


WIRE_CONTRACTS: dict[str, type[BaseModel]] = {
    "segment-headers": SegmentHeaders,
    "utterance-emotion-event": UtteranceEmotionEvent,
    "dead-letter-event": DeadLetterEvent,
}
