"""The whole perception path in one process: decoded segments in, encoded utterance bundles out.

Per-segment perception -> per-stream session -> utterance encoders, in order.
The live job spreads the same three steps over Ray (Data, session actors,
Serve); this is the single-process form for files, tests and the command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from emostream.media.decode import DecodedSegment, decode_record
from emostream.media.records import media_records
from emostream.perception.encode import UtteranceEncoder
from emostream.perception.segment import SegmentPerceiver
from emostream.perception.session import StreamSessions
from emostream.perception.utterance import UtteranceBundle
from emostream.perception.voice.speakers import VoiceEmbedder
from emostream.settings import Settings


def file_segments(
    path: str | Path, stream_id: str, settings: Settings, channels: tuple[str, ...] | None = None
) -> Iterator[DecodedSegment]:
    """A media file as the decoded segments a live stream of it would bring, ending with the end marker."""
    for record in media_records(path, stream_id, settings.ingest, channels):
        yield decode_record(record.headers, record.payload, settings.ingest)


class Perception:
    """Segment perception, stream sessions and utterance encoders, chained in one process."""

    def __init__(
        self,
        settings: Settings,
        perceiver: SegmentPerceiver | None = None,
        encoder: UtteranceEncoder | None = None,
        voices: VoiceEmbedder | None = None,
    ) -> None:
        self.settings = settings
        self.perceiver = perceiver or SegmentPerceiver(settings)
        self.sessions = StreamSessions(settings, voices)
        self.encoder = encoder or UtteranceEncoder(settings.voice)

    def push(self, segment: DecodedSegment) -> list[UtteranceBundle]:
        """One decoded segment of any stream (each stream's in order); the utterances it completed."""
        bundles = self.sessions.push(self.perceiver(segment))
        return self.encoder(bundles) if bundles else []

    def flush_idle(self) -> list[UtteranceBundle]:
        bundles = self.sessions.flush_idle()
        return self.encoder(bundles) if bundles else []

    def analyze_file(self, path: str | Path, stream_id: str = "file", channels: tuple[str, ...] | None = None) -> list[UtteranceBundle]:
        return [bundle for segment in file_segments(path, stream_id, self.settings, channels) for bundle in self.push(segment)]
