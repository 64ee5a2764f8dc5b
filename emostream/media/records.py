"""A media file as the records a live source of it sends: its segments' headers and bytes, then the end marker.

`emostream publish` sends these to Kafka; backfill, the in-process pipeline, `/v1/analyze` and feature
extraction feed the same records to the same stages, so a file and its published stream give the same
utterances.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from emostream.contracts import SegmentHeaders
from emostream.media.decode import DecodedSegment, decode_record
from emostream.media.segmenter import MediaError, MediaInfo, MediaSegment, probe, segment_file
from emostream.settings import IngestSettings


@dataclass(frozen=True)
class MediaRecord:
    """One message of a media stream: the headers and the container bytes (empty for the end marker)."""

    headers: SegmentHeaders
    payload: bytes

    @property
    def end(self) -> float:
        """Stream seconds at which the segment's media ends (as its headers declare)."""
        return self.headers.start + (self.headers.duration or 0.0)


def segment_headers(stream_id: str, segment: MediaSegment, channels: tuple[str, ...] | None) -> SegmentHeaders:
    return SegmentHeaders(
        stream_id=stream_id, seq=segment.seq, start=segment.start, duration=segment.duration,
        timestamp_offset=segment.timestamp_offset, content_type=segment.content_type,
        channels=channels if segment.audio_channels else None, sent_at=time.time(),
    )


def end_of_stream_headers(stream_id: str, seq: int, start: float) -> SegmentHeaders:
    """An empty end marker: `content_type` is required by the contract, any supported one does."""
    return SegmentHeaders(stream_id=stream_id, seq=seq, start=start, content_type="audio/wav",
                          end_of_stream=True, sent_at=time.time())


def media_records(path: str | Path, stream_id: str, ingest: IngestSettings, channels: tuple[str, ...] | None = None,
                  segment_seconds: float | None = None, info: MediaInfo | None = None) -> Iterator[MediaRecord]:
    """The records of `path` as stream `stream_id`: one per self-contained segment, then the end marker.

    channels : the role of each audio channel in order (e.g. ("agent", "customer")).
    Raises MediaError for unreadable input or a channel map that does not fit the audio.
    """
    info = info or probe(path)
    if channels is not None and info.has_audio and len(channels) != info.audio_channels:
        raise MediaError(f"{path}: the channel map names {len(channels)} channels ({','.join(channels)}) "
                         f"but the audio has {info.audio_channels}")
    seq, end = 0, 0.0
    for segment in segment_file(path, segment_seconds or ingest.segment_seconds, ingest.max_segment_seconds, info):
        yield MediaRecord(segment_headers(stream_id, segment, channels), segment.payload)
        seq, end = segment.seq + 1, max(end, segment.start + segment.duration)
    yield MediaRecord(end_of_stream_headers(stream_id, seq, end), b"")


def file_segments(path: str | Path, stream_id: str, ingest: IngestSettings,
                  channels: tuple[str, ...] | None = None) -> Iterator[DecodedSegment]:
    """A media file as the decoded segments a live stream of it would bring, ending with the end marker."""
    for record in media_records(path, stream_id, ingest, channels):
        yield decode_record(record.headers, record.payload, ingest)
