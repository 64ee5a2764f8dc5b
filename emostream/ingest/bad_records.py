"""Known-bad media-topic records, one of each kind issue 22 found, for soak runs and end-to-end tests.

Each `BadRecord` is what a broken or hostile producer could send: headers out of range or not UTF-8, a key of
100 KB, a payload over the size limit, garbage media, audio with too many channels, a WAV at 1 Hz, a segment a
million seconds after its stream's first (within the header bounds: the session refuses it). The live job must
turn each into exactly one bounded dead letter (`reason`) and go on. Some are valid but hostile (16-channel audio,
which once crashed the resampler): those have no reason, and must pass without a dead letter and without taking
anything down. A record whose headers pass belongs to a stream of its own, which the record's end marker
(`closing`) closes: without it the stream would stay open and hold the commit; `lead` is a good record sent
before it in the same stream.
"""

from __future__ import annotations

import io
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from emostream.contracts import MAX_AUDIO_CHANNELS, DeadLetterReason
from emostream.media.records import end_of_stream_headers
from emostream.settings import KafkaSettings

Headers = list[tuple[str, bytes]]


class RawName(str):
    """A header name whose bytes are not UTF-8: kafka-python encodes header names with `str.encode`."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:  # noqa: ARG002 (the raw bytes, always)
        return self.raw


@dataclass(frozen=True)
class BadRecord:
    kind: str
    key: bytes | None
    value: bytes
    headers: Headers
    reason: DeadLetterReason | None  # the dead letter it must give (None: valid, it must give none)
    closing: Headers | None = None  # the end marker of its stream, when its headers pass the checks
    lead: tuple[bytes, Headers] | None = None  # a good record of the same stream, sent before it


def wav_bytes(rate: int, n_channels: int, seconds: float) -> bytes:
    """A WAV of a quiet tone on every channel (the `wave` module writes any channel count)."""
    t = np.arange(int(rate * seconds)) / rate
    tone = (3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(n_channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.repeat(tone[:, None], n_channels, axis=1).tobytes())
    return out.getvalue()


def _headers(stream: str, **changes: str) -> Headers:
    base = {"emostream-stream-id": stream, "emostream-seq": "0", "emostream-start": "0", "emostream-duration": "1",
            "emostream-content-type": "audio/wav", "emostream-sent-at": f"{time.time():.3f}", **changes}
    return [(name, value.encode()) for name, value in base.items() if value]


def bad_records(tag: str, kafka: KafkaSettings) -> list[BadRecord]:
    """One record of each bad kind; stream ids start with `tag` (unique per call, so streams never meet)."""
    pcm = wav_bytes(16000, 1, 1.0)

    def closing(stream: str, seq: int = 1, start: float = 1.0) -> Headers:
        return end_of_stream_headers(stream, seq, start).to_kafka()

    return [
        BadRecord("seq-over-int64", tag.encode(), pcm, _headers(tag, **{"emostream-seq": str(2**64)}),
                  DeadLetterReason.BAD_HEADERS),
        BadRecord("start-not-finite", tag.encode(), pcm, _headers(tag, **{"emostream-start": "inf"}),
                  DeadLetterReason.BAD_HEADERS),
        BadRecord("duration-negative", tag.encode(), pcm, _headers(tag, **{"emostream-duration": "-1"}),
                  DeadLetterReason.BAD_HEADERS),
        BadRecord("seq-missing", tag.encode(), pcm, _headers(tag, **{"emostream-seq": ""}), DeadLetterReason.BAD_HEADERS),
        BadRecord("header-name-not-utf8", tag.encode(), pcm, [(RawName(b"emostream-\xff\xfe"), b"x"), *_headers(tag)],
                  DeadLetterReason.BAD_HEADERS),
        BadRecord("role-huge", tag.encode(), pcm, _headers(tag, **{"emostream-channels": "r" * 100_000}),
                  DeadLetterReason.BAD_HEADERS),
        BadRecord("key-100kb", b"k" * 100_000, pcm, _headers(tag), DeadLetterReason.BAD_HEADERS),
        BadRecord("content-type-unknown", tag.encode(), pcm, _headers(tag, **{"emostream-content-type": "video/x-flv"}),
                  DeadLetterReason.UNSUPPORTED_CONTENT_TYPE),
        BadRecord("empty-value", tag.encode(), b"", _headers(tag), DeadLetterReason.EMPTY_VALUE),
        BadRecord("oversized", f"{tag}-big".encode(), b"\0" * (kafka.max_message_bytes + 1), _headers(f"{tag}-big"),
                  DeadLetterReason.OVERSIZED),
        BadRecord("garbage-media", f"{tag}-junk".encode(), bytes(range(256)) * 40,
                  _headers(f"{tag}-junk", **{"emostream-content-type": "video/mp2t"}),
                  DeadLetterReason.CORRUPT_SEGMENT, closing(f"{tag}-junk")),
        BadRecord("audio-channels-over-limit", f"{tag}-wide".encode(), wav_bytes(16000, MAX_AUDIO_CHANNELS + 1, 0.2),
                  _headers(f"{tag}-wide", **{"emostream-duration": "0.2"}), DeadLetterReason.CORRUPT_SEGMENT,
                  closing(f"{tag}-wide")),
        BadRecord("audio-16-channels", f"{tag}-c16".encode(), wav_bytes(44100, 16, 0.5),
                  _headers(f"{tag}-c16", **{"emostream-duration": "0.5"}), None, closing(f"{tag}-c16", 1, 0.5)),
        BadRecord("wav-at-1-hz", f"{tag}-1hz".encode(), wav_bytes(1, 1, 200.0),
                  _headers(f"{tag}-1hz", **{"emostream-duration": ""}), DeadLetterReason.CORRUPT_SEGMENT,
                  closing(f"{tag}-1hz", 1, 200.0)),
        BadRecord("start-far-ahead", f"{tag}-far".encode(), pcm,
                  _headers(f"{tag}-far", **{"emostream-seq": "1", "emostream-start": "1e6"}),
                  DeadLetterReason.PROCESSING_ERROR, closing(f"{tag}-far", 2, 1.0), (pcm, _headers(f"{tag}-far"))),
    ]


def send_bad_records(producer: object, kafka: KafkaSettings, records: list[BadRecord]) -> Iterator[BadRecord]:
    """Send `records` to the media topic (each stream's end marker right after it); yields each as it is sent."""
    for record in records:
        if record.lead is not None:
            value, headers = record.lead
            producer.send(kafka.media_topic, key=record.key, value=value, headers=headers)  # type: ignore[attr-defined]
        producer.send(kafka.media_topic, key=record.key, value=record.value, headers=record.headers)  # type: ignore[attr-defined]
        if record.closing is not None:
            producer.send(kafka.media_topic, key=record.key, value=b"", headers=record.closing)  # type: ignore[attr-defined]
        yield record
