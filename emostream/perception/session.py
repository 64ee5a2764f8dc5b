"""Per-stream stitching: perceived segments in, utterance bundles out.

One `StreamSession` per stream, fed its segments in order (the live job keeps
them in session actors). It holds what needs the stream's history: face tracks,
streaming voice activity per channel, utterance cutting, speakers (channels or
diarisation) and each speaker's running prosody statistics. An utterance is
emitted once, as soon as it closes, whichever segments it spans. Memory is
bounded: media older than the oldest open utterance (and at most
`voice.buffer_seconds`) is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from emostream.contracts import utterance_id
from emostream.media.decode import SAMPLE_RATE
from emostream.perception.active_speaker import active_speaker_score, speaking_face
from emostream.perception.faces.tracking import FaceTracks
from emostream.perception.faces.types import FaceObservation, MicroExpression, TrackUpdate
from emostream.perception.segment import PerceivedSegment
from emostream.perception.utterance import FaceSlice, Thumbnail, UtteranceBundle, frame_quality
from emostream.perception.voice.prosody import ProsodyFrames, SpeakerProsodyStats, utterance_prosody
from emostream.perception.voice.speakers import OnlineDiarizer, VoiceEmbedder
from emostream.perception.voice.turn import WINDOW_SECONDS as TURN_WINDOW_SECONDS
from emostream.perception.voice.turn import SmartTurn
from emostream.perception.voice.vad import Span, StreamingVad, TurnRule, UtteranceCutter, voiced_speech
from emostream.settings import Settings

log = logging.getLogger(__name__)

GAP_TOLERANCE = 0.1  # seconds: audio further than this from where the last segment ended is a gap in the stream
# A segment starting this far beyond the stream's end is not a gap but a broken clock (a bad header): taken, it
# would move the stream's end so far that every later segment's audio is trimmed away. Streams that pause this
# long are closed as idle first (voice.idle_seconds, wall clock) and resume in a fresh session.
MAX_JUMP_SECONDS = 3600.0
# Silero reacts to breaths and lets speech trail off; utterance edges are tightened to where the sound is
# clearly speech: within EDGE_BELOW_LOUD_DB of the utterance's loud level and EDGE_ABOVE_FLOOR_DB over the
# channel's noise floor (its FLOOR_PERCENTILE-th percentile frame over the utterance and the FLOOR_WINDOW_SECONDS
# before it: a fixed window, so the edges do not depend on how the stream was cut into segments).
EDGE_BELOW_LOUD_DB = 30.0
EDGE_ABOVE_FLOOR_DB = 12.0
LOUD_PERCENTILE = 95.0
FLOOR_PERCENTILE = 10.0
FLOOR_WINDOW_SECONDS = 2.0
THUMBNAILS_PER_UTTERANCE = 4
# The recognisers get this much audio beyond each edge: the edges are set where speech is clearly
# above the background, and a soft first or last word can lie just outside.
AUDIO_MARGIN = 0.25  # seconds


class SegmentOutOfPlace(ValueError):
    """A segment far from where its stream's clock is: refused (the live job dead-letters it), the session unchanged."""


@dataclass(frozen=True)
class Draft:
    """An utterance that will close unless speech resumes within the pause: what its bundle's audio will be."""

    stream_id: str
    channel: int
    role: str | None  # the channel's role, when the stream names it (None for diarised speakers)
    audio: np.ndarray  # exactly the closed bundle's `audio`, if the utterance closes as it stands


@dataclass
class _Channel:
    """One audio channel's running state."""

    cutter: UtteranceCutter
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    audio_start: float = 0.0  # stream seconds of audio[0]
    prosody: list[ProsodyFrames] = field(default_factory=list)
    drafted: Span | None = None  # the last utterance handed out as a draft
    drafted_voice: np.ndarray | None = None  # its voice embedding, reused if it closes as drafted

    @property
    def audio_end(self) -> float:
        return self.audio_start + len(self.audio) / SAMPLE_RATE

    def append(self, audio: np.ndarray, start: float) -> bool:
        """Add a segment's audio; False (and a fresh buffer) when it does not follow on from the last."""
        follows = len(self.audio) == 0 or abs(start - self.audio_end) <= GAP_TOLERANCE
        if not follows:
            self.audio, self.audio_start, self.prosody = np.zeros(0, np.float32), start, []
        if len(self.audio) == 0:
            self.audio_start = start
        self.audio = np.concatenate([self.audio, audio.astype(np.float32)])
        return follows

    def cut(self, span: Span) -> np.ndarray:
        first = max(int(round((span.start - self.audio_start) * SAMPLE_RATE)), 0)
        last = max(int(round((span.end - self.audio_start) * SAMPLE_RATE)), first)
        return self.audio[first:last]

    def trim(self, before: float, prosody_before: float) -> None:
        """Drop audio before `before` and prosody frames before `prosody_before` (whole segments' frames)."""
        drop = int((before - self.audio_start) * SAMPLE_RATE)
        if drop > 0:
            self.audio = self.audio[drop:]
            self.audio_start += drop / SAMPLE_RATE
        self.prosody = [p for p in self.prosody if len(p.times) and p.times[-1] >= prosody_before]


class StreamSession:
    """Stitches one stream's perceived segments into utterance bundles."""

    def __init__(self, stream_id: str, settings: Settings, voices: VoiceEmbedder | None = None, cut: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """cut=False: no voice activity detection and nothing dropped; `utterance(span)` takes given spans
        (labelled training examples). `clock`: wall time, for idleness only (every media decision is on the
        segments' own times)."""
        self.cut = cut
        self.stream_id = stream_id
        self.settings = settings
        self.voice = settings.voice
        self._voices = voices
        self._vad = StreamingVad()
        self._turn = SmartTurn() if cut and self.voice.turn_model == "smart_turn" else None
        self._channels: dict[int, _Channel] = {}
        self._roles: tuple[str, ...] = ()
        self._faces = FaceTracks(settings.faces)
        self._observations: list[FaceObservation] = []
        self._micro: list[MicroExpression] = []
        self._thumbnails: list[Thumbnail] = []
        self._has_video = False
        self._diarizer = OnlineDiarizer(self.voice.diarize_threshold, self.voice.max_speakers)
        self._speaker_stats: dict[str, SpeakerProsodyStats] = {}
        self.clock = clock
        self.last_push = clock()  # wall time of the last push: a stream is idle when none came for a while
        self.end = 0.0  # stream seconds up to which segments were pushed
        self.pushed = False
        self.ended = False

    @property
    def voices(self) -> VoiceEmbedder:
        if self._voices is None:
            self._voices = VoiceEmbedder()
        return self._voices

    def push(self, segment: PerceivedSegment) -> list[UtteranceBundle]:
        """Add the stream's next segment; returns the utterances it closed."""
        if segment.stream_id != self.stream_id:
            raise ValueError(f"segment {segment.seq} of stream {segment.stream_id!r} pushed to the session of {self.stream_id!r}")
        self._check_place(segment)
        self.last_push = self.clock()
        self.pushed = True
        self.end = max(self.end, segment.end)
        if segment.channels:
            self._roles = segment.channels
        if segment.faces is not None:
            self._has_video = True
            self._take_faces(self._faces.update(segment.faces))
        self._thumbnails.extend(segment.thumbnails)
        bundles: list[UtteranceBundle] = []
        for index, audio in enumerate(segment.audio):
            channel = self._channels.get(index) or self._new_channel(index)
            if not channel.append(audio, segment.audio_start):
                bundles += self._emit(index, channel.cutter.flush())  # a gap ends whatever was being said
            channel.prosody.append(segment.prosody[index])
            if self.cut:
                times, probabilities = self._vad.push(index, audio, segment.audio_start)
                # Silero misses strained, shouted voices (vad.voiced_speech): clearly voiced frames count as speech.
                # A VAD frame lies at most one frame back, in this segment's or the previous one's prosody.
                voiced = voiced_speech(times, ProsodyFrames.concat(channel.prosody[-2:]))
                bundles += self._emit(index, channel.cutter.push(times, probabilities, voiced))
        if segment.end_of_stream and self.cut:
            bundles += self.flush()
        if self.cut:
            self._trim()
        return sorted(bundles, key=lambda b: b.start)

    def _check_place(self, segment: PerceivedSegment) -> None:
        """Refuse a segment far ahead of the stream's end, or so far behind that its audio is already dropped."""
        if not self.pushed:
            return  # the first segment sets the clock (a consumer may join mid-stream)
        ahead = segment.audio_start - self.end
        if ahead > MAX_JUMP_SECONDS or ahead < -self.voice.buffer_seconds:
            raise SegmentOutOfPlace(
                f"segment {segment.seq} of stream {self.stream_id!r} starts at {segment.audio_start:.3f} s, "
                f"{ahead:+.3f} s from the stream's end at {self.end:.3f} s (allowed: -{self.voice.buffer_seconds:g} "
                f"to +{MAX_JUMP_SECONDS:g} s); check the producer's emostream-start header")

    def flush(self) -> list[UtteranceBundle]:
        """Close everything: the stream ended or went idle."""
        self._take_faces(self._faces.flush())
        bundles = [b for index, channel in self._channels.items() for b in self._emit(index, channel.cutter.flush())]
        self.ended = True
        return sorted(bundles, key=lambda b: b.start)

    def utterance(self, start: float | None = None, end: float | None = None, channel: int = 0) -> UtteranceBundle:
        """A bundle for a given span of what was pushed (default: all of the channel's audio)."""
        if channel not in self._channels:
            raise ValueError(f"stream {self.stream_id!r} has no audio channel {channel}")
        buffer = self._channels[channel]
        first = buffer.audio_start if start is None else max(start, buffer.audio_start)
        last = buffer.audio_end if end is None else min(end, buffer.audio_end)
        if last <= first:
            raise ValueError(f"stream {self.stream_id!r}: no audio between {start} and {end} s")
        return self._bundle(channel, Span(first, last))

    def drafts(self) -> list[Draft]:
        """Utterances in a pause that closes them unless speech resumes, each once, with the audio their
        bundles will carry when closed: the audio encoders can start on it while the pause runs out."""
        drafts = []
        for index, channel in self._channels.items():
            cutter = channel.cutter
            if not cutter.pausing:
                continue
            span = tighten(Span(cutter.start, cutter.last_speech), ProsodyFrames.concat(channel.prosody))
            if (span != channel.drafted and span.duration >= self.voice.min_utterance_seconds
                    and channel.audio_end >= span.end + AUDIO_MARGIN):
                channel.drafted = span
                channel.drafted_voice = self.voices(channel.cut(span))  # off the closing push, like Whisper
                role = self._roles[index] if index < len(self._roles) else None
                drafts.append(Draft(self.stream_id, index, role, _utterance_audio(channel, span)[1]))
        return drafts

    def needed_from(self) -> float:
        """Stream seconds from which media is still needed: an open utterance's start, else the end so far.

        The live job commits a segment's offset only once every segment it needs is before this point.
        """
        starts = [c.cutter.start for c in self._channels.values() if c.cutter.start is not None]
        return min(starts, default=self.end)

    def _new_channel(self, index: int) -> _Channel:
        v = self.voice
        turn = TurnRule(partial(self._end_of_turn, index), v.turn_pause_seconds, v.turn_threshold) if self._turn is not None else None
        cutter = UtteranceCutter(v.vad_onset, v.vad_offset, v.merge_gap_seconds, v.min_utterance_seconds, v.max_utterance_seconds,
                                 v.min_resume_seconds, turn)
        channel = self._channels[index] = _Channel(cutter)
        return channel

    def _end_of_turn(self, index: int, start: float, end: float) -> float:
        """The turn model on the channel's audio from the open utterance's start (at most its window before the
        pause frame's end) to that end. The buffer always holds it (`_trim` keeps from the open utterance's start),
        so what the model hears is the same however the stream was cut into segments."""
        assert self._turn is not None
        return self._turn(self._channels[index].cut(Span(max(start, end - TURN_WINDOW_SECONDS), end)))

    def _take_faces(self, update: TrackUpdate) -> None:
        self._observations.extend(update.observations)
        self._micro.extend(update.micro_expressions)

    def _trim(self) -> None:
        keep_from = min(self.needed_from(), self.end) - self.voice.merge_gap_seconds
        keep_from = max(keep_from, self.end - self.voice.buffer_seconds)
        for channel in self._channels.values():
            # keep_from lies at least a merge gap before any utterance open or yet to start: the window of its noise floor
            # (tighten) stays
            channel.trim(keep_from, keep_from - FLOOR_WINDOW_SECONDS)
        self._observations = [o for o in self._observations if o.time >= keep_from]
        self._micro = [m for m in self._micro if m.offset >= keep_from]
        self._thumbnails = [t for t in self._thumbnails if t.time >= keep_from]

    def _emit(self, index: int, spans: list[Span]) -> list[UtteranceBundle]:
        channel = self._channels[index]
        tightened = (tighten(span, ProsodyFrames.concat(channel.prosody)) for span in spans)
        return [self._bundle(index, span) for span in tightened if span.duration >= self.voice.min_utterance_seconds]

    def _speaker(self, index: int, span: Span) -> tuple[str, str | None, np.ndarray | None, float]:
        """Speaker id, role, voice embedding and its similarity to the speaker."""
        channel = self._channels[index]
        # The voice is judged on the utterance alone: the audio margins may hold someone else.
        embedding = channel.drafted_voice if span == channel.drafted else self.voices(channel.cut(span))
        role = self._roles[index] if index < len(self._roles) else None
        several_channels = len(self._channels) > 1
        if role or several_channels or not self.voice.diarize:
            speaker = role or f"channel-{index}"
            return speaker, role, embedding, 1.0
        number, similarity = self._diarizer.assign(embedding)
        return f"speaker-{number + 1}", None, embedding, similarity

    def _bundle(self, index: int, span: Span) -> UtteranceBundle:
        started = time.perf_counter()
        channel = self._channels[index]
        audio_start, audio = _utterance_audio(channel, span)
        speaker, role, embedding, similarity = self._speaker(index, span)
        speaker_seconds = time.perf_counter() - started
        frames = ProsodyFrames.concat(channel.prosody).slice(span.start, span.end)
        prosody = utterance_prosody(frames)
        stats = self._speaker_stats.setdefault(speaker, SpeakerProsodyStats())
        prosody_z = stats.z(prosody)
        stats.add(prosody)
        face, listeners = self._faces_during(span, audio, audio_start)
        chosen = [t for t in self._thumbnails if span.start <= t.time <= span.end]
        if len(chosen) > THUMBNAILS_PER_UTTERANCE:
            chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, THUMBNAILS_PER_UTTERANCE).round().astype(int)]
        return UtteranceBundle(
            stream_id=self.stream_id,
            utterance_id=utterance_id(self.stream_id, speaker, span.start),
            speaker_id=speaker,
            role=role,
            channel=index,
            start=span.start,
            end=span.end,
            audio=audio,
            audio_start=audio_start,
            prosody=prosody,
            prosody_z=prosody_z,
            speaker_embedding=embedding,
            speaker_similarity=similarity,
            face=face,
            listeners=listeners,
            frames=tuple(chosen),
            has_video=self._has_video,
            timings={"speaker": speaker_seconds, "stitch": time.perf_counter() - started - speaker_seconds},
        )

    def _faces_during(self, span: Span, audio: np.ndarray, audio_start: float) -> tuple[FaceSlice | None, tuple[FaceSlice, ...]]:
        by_track: dict[int, list[FaceObservation]] = {}
        for observation in self._observations:
            if span.start <= observation.time <= span.end:
                by_track.setdefault(observation.track_id, []).append(observation)
        slices = {}
        for track_id, observations in by_track.items():
            observations.sort(key=lambda o: o.time)
            times = np.array([o.time for o in observations])
            geometry = np.array([o.face.geometry for o in observations], np.float32)
            slices[track_id] = FaceSlice(
                track_id=track_id,
                active_speaker_score=active_speaker_score(audio, audio_start, times, geometry),
                times=times,
                expression=np.array([o.face.expression for o in observations], np.float32),
                features=np.array([o.face.features for o in observations], np.float32),
                geometry=geometry,
                geometry_z=np.array([o.geometry_z for o in observations], np.float32),
                micro_expressions=tuple(m for m in self._micro if m.track_id == track_id and span.start <= m.apex <= span.end),
                quality=np.array([frame_quality(o.face) for o in observations]),
            )
        speaker = speaking_face({t: s.active_speaker_score for t, s in slices.items()})
        listeners = tuple(s for t, s in sorted(slices.items()) if t != speaker)
        return (slices[speaker] if speaker is not None else None), listeners


def _utterance_audio(channel: _Channel, span: Span) -> tuple[float, np.ndarray]:
    """Stream seconds of the first sample, and the audio the recognisers get: the utterance and a margin."""
    audio_start = max(span.start - AUDIO_MARGIN, channel.audio_start)
    return audio_start, channel.cut(Span(audio_start, span.end + AUDIO_MARGIN))


def tighten(span: Span, frames: ProsodyFrames) -> Span:
    """Move the utterance's edges inwards to the first and last frame that is clearly speech (never outwards).

    The noise floor is taken over the utterance and the FLOOR_WINDOW_SECONDS before it (or what the channel has
    of them: the stream's or a gap's start): not the pause that closes it, so the edges are the same while the
    pause runs and once it has closed the utterance (`StreamSession.drafts`); and not whatever the buffer holds,
    so they are the same however the stream was cut into segments."""
    inside = frames.slice(span.start, span.end)
    before = frames.slice(span.start - FLOOR_WINDOW_SECONDS, span.end)
    if len(inside) == 0 or len(before) < 10:
        return span
    threshold = max(
        float(np.percentile(inside.energy_db, LOUD_PERCENTILE)) - EDGE_BELOW_LOUD_DB,
        float(np.percentile(before.energy_db, FLOOR_PERCENTILE)) + EDGE_ABOVE_FLOOR_DB,
    )
    loud = np.flatnonzero(inside.energy_db >= threshold)
    if not len(loud):
        return span
    half_hop = (inside.times[1] - inside.times[0]) / 2 if len(inside) > 1 else 0.005
    return Span(max(span.start, float(inside.times[loud[0]] - half_hop)), min(span.end, float(inside.times[loud[-1]] + half_hop)))


class StreamSessions:
    """The sessions of many streams (one process's share of them), with idle flushing."""

    def __init__(self, settings: Settings, voices: VoiceEmbedder | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._voices = voices
        self.clock = clock  # wall time, for idleness only
        self.sessions: dict[str, StreamSession] = {}

    def push(self, segment: PerceivedSegment) -> list[UtteranceBundle]:
        session = self.sessions.get(segment.stream_id)
        if session is None:
            session = self.sessions[segment.stream_id] = StreamSession(segment.stream_id, self.settings,
                                                                       self._shared_voices(), clock=self.clock)
        bundles = session.push(segment)
        if session.ended:
            del self.sessions[segment.stream_id]
        return bundles

    def drafts(self, stream_id: str) -> list[Draft]:
        """The stream's new drafts (`StreamSession.drafts`); none once it ended."""
        session = self.sessions.get(stream_id)
        return session.drafts() if session is not None else []

    def close(self, stream_id: str) -> list[UtteranceBundle]:
        """Flush and forget a stream's session (its next segment starts a fresh one)."""
        session = self.sessions.pop(stream_id, None)
        return session.flush() if session is not None else []

    def flush_idle(self, now: float | None = None) -> list[UtteranceBundle]:
        """Flush and forget streams with no segment for `voice.idle_seconds`."""
        now = self.clock() if now is None else now
        idle = [s for s in self.sessions.values() if now - s.last_push >= self.settings.voice.idle_seconds]
        bundles = []
        for session in idle:
            log.info("stream %s idle for %.0f s: flushing", session.stream_id, now - session.last_push)
            bundles += self.close(session.stream_id)
        return bundles

    def warm_up(self) -> None:
        """Load the voice models and run each once. The first voice embedding in a process took 3 s
        (torch's first call); without this, a stream's first utterance on a fresh actor waited for it."""
        noise = np.random.default_rng(0).normal(0, 0.01, 2 * SAMPLE_RATE).astype(np.float32)
        self._shared_voices()(noise)
        StreamingVad().push(0, noise, 0.0)
        if self.settings.voice.turn_model == "smart_turn":
            SmartTurn()(noise)

    def _shared_voices(self) -> VoiceEmbedder:
        if self._voices is None:
            self._voices = VoiceEmbedder()
        return self._voices
