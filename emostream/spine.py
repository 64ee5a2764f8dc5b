"""The spine: perceive → stitch → encode → score, written once over typed values.

    DecodedSegment ─perceive─► PerceivedSegment ─stitch─► UtteranceBundle ─encode─► UtteranceBundle ─score─► UtteranceEmotionEvent
      (media/)      per segment, any     (perception/     per stream,      (perception/   per utterance   (models/score)  per stream's
                    worker, any order     segment.py)     in seq order      session.py)   (Whisper, text)                context

Each stage is a protocol; `Spine` chains them in one process (files, `emostream analyze`, tests, and the
backfill's stream actors after Ray Data has perceived). The live job runs the same stages apart: perceive in a
Ray Data actor pool, stitch in session actors, encode and score in Serve deployments, then a sink
(`emostream.sinks`). Training's feature extraction runs perceive and encode on labelled spans.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from emostream.contracts import UtteranceEmotionEvent
from emostream.media.decode import DecodedSegment
from emostream.media.records import file_segments
from emostream.models.score import StreamContexts, serve_scorer
from emostream.perception.encode import UtteranceEncoder, scoring_voice
from emostream.perception.segment import PerceivedSegment, SegmentPerceiver
from emostream.perception.session import StreamSessions
from emostream.perception.utterance import UtteranceBundle, with_roles
from emostream.perception.voice.speakers import VoiceEmbedder
from emostream.settings import Settings


class Perceive(Protocol):
    """Per segment, on any worker, in any order: faces, prosody frames, thumbnails (`SegmentPerceiver`)."""

    def __call__(self, segment: DecodedSegment) -> PerceivedSegment: ...


class Encode(Protocol):
    """Per utterance: transcript, audio and text embeddings (`UtteranceEncoder`)."""

    def __call__(self, bundles: list[UtteranceBundle]) -> list[UtteranceBundle]: ...


class Score(Protocol):
    """Utterances with their streams' contexts (model memory, speaker statistics) → events (`EmotionScorer`)."""

    def score(self, bundles: list[UtteranceBundle], contexts: StreamContexts) -> list[UtteranceEmotionEvent]: ...


class Spine:
    """The whole chain in one process, for any number of streams (each stream's segments in order).

    The scorer loads on first use (`settings.serve.model`), so a caller that wants utterances only never pays for it.
    """

    def __init__(self, settings: Settings, perceive: Perceive | None = None, encode: Encode | None = None,
                 scorer: Score | None = None, voices: VoiceEmbedder | None = None) -> None:
        self.settings = settings
        self.perceive: Perceive = perceive or SegmentPerceiver(settings)
        self.sessions = StreamSessions(settings, voices)  # stitch
        self.encode: Encode = encode or UtteranceEncoder(scoring_voice(settings))
        self._scorer = scorer
        self.contexts = StreamContexts()

    @property
    def scorer(self) -> Score:
        if self._scorer is None:
            self._scorer = serve_scorer(self.settings.serve)
        return self._scorer

    # -- stages after per-segment perception ------------------------------------------------------

    def closed(self, perceived: PerceivedSegment) -> list[UtteranceBundle]:
        """Stitch a perceived segment into its stream; the utterances it closed, encoded."""
        return self._encoded(self.sessions.push(perceived))

    def score(self, bundles: list[UtteranceBundle]) -> list[UtteranceEmotionEvent]:
        """Events of the bundles, each stream with its own context (kept here across calls)."""
        return self.scorer.score(bundles, self.contexts) if bundles else []

    def flush_idle(self) -> list[UtteranceBundle]:
        """Close the streams idle for `voice.idle_seconds`; their last utterances, encoded."""
        return self._encoded(self.sessions.flush_idle())

    def finish(self) -> list[UtteranceBundle]:
        """Close every open stream (its media ended without an end marker); the last utterances, encoded."""
        return self._encoded([b for stream in list(self.sessions.sessions) for b in self.sessions.close(stream)])

    # -- the whole chain --------------------------------------------------------------------------

    def utterances(self, segment: DecodedSegment) -> list[UtteranceBundle]:
        """One decoded segment of any stream: the utterances it closed, encoded."""
        return self.closed(self.perceive(segment))

    def events(self, segment: DecodedSegment) -> list[UtteranceEmotionEvent]:
        """One decoded segment of any stream: the events of the utterances it closed."""
        return self.score(self.utterances(segment))

    def file_utterances(self, path: str | Path, stream_id: str = "file",
                        channels: tuple[str, ...] | None = None) -> list[UtteranceBundle]:
        """A media file as one stream: its utterances, encoded."""
        return [bundle for segment in self._segments(path, stream_id, channels) for bundle in self.utterances(segment)]

    def file_events(self, path: str | Path, stream_id: str = "file",
                    channels: tuple[str, ...] | None = None) -> Iterator[UtteranceEmotionEvent]:
        """A media file as one stream: each utterance's event as soon as the utterance closes."""
        for segment in self._segments(path, stream_id, channels):
            yield from self.events(segment)

    def _encoded(self, bundles: list[UtteranceBundle]) -> list[UtteranceBundle]:
        """Only the roles `live.score_roles` names are encoded (and so scored): the others' words are never processed."""
        scored = with_roles(bundles, self.settings.live.score_roles)
        return self.encode(scored) if scored else []

    def _segments(self, path: str | Path, stream_id: str, channels: tuple[str, ...] | None) -> Iterator[DecodedSegment]:
        return file_segments(path, stream_id, self.settings.ingest, channels)

