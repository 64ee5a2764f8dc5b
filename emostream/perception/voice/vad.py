"""Voice activity: streaming speech probabilities per channel (Silero VAD) and utterance cutting.

Silero VAD (MIT; the model ships in the `silero-vad` wheel) is a small LSTM over
32 ms frames. We run its "sequence" ONNX export, which scores a whole block of
frames in one call (~2 ms per second of audio here), and carry its LSTM state,
the 64-sample context and any leftover samples from one segment to the next:
restarting it at every segment boundary changed probabilities near the cut by
up to 0.95 on real speech, so VAD is per-stream state, not per-segment work.
But the state does not forget a turn: after a louder turn and seconds of silence,
a quiet speaker's next sentence scored at most 0.83 (8 frames over 0.5) where the
same audio after a fresh start scored 1.0 (34 frames; a RAVDESS sad clip at -42 dBFS
peak, lost whole in a two-channel call, issue 19). So the model restarts once a
pause after speech has lasted `RESET_AFTER_SECONDS` with every frame under
`RESET_BELOW` (`_ChannelState.reset_at`): each turn is heard as training's live cut
hears a clip, from a fresh state, and where the restart falls depends on the
probabilities alone, never on how the stream was cut into segments.

`UtteranceCutter` turns probabilities into utterances with hysteresis: speech
starts when the probability reaches `vad_onset`, pauses when it falls below
`vad_offset`; pauses shorter than `merge_gap_seconds` are bridged; speech
that resumes in a pause counts only once it lasts `min_resume_seconds`
(Silero fires for 0.1-0.2 s on a click, a breath or a change of background
noise, and each such blip held the utterance open for another merge gap);
an utterance longer than `max_utterance_seconds` is cut; shorter than
`min_utterance_seconds` is dropped. An utterance is emitted as soon as the
pause after it is long enough, not at the end of the stream.

With an end-of-turn model (`turn.py`), a pause is put to it once, when it has
lasted `turn_pause_seconds` (and the utterance is at least `min_utterance_seconds`
long: closed shorter, it would be dropped; a shouted word sounds finished, and the
sentence it began was lost word by word): if the speaker sounds finished, the utterance
closes there instead of a merge gap later; otherwise the merge-gap rule
decides as before. The model hears the utterance from its start to the frame
where the pause reached that length, so the decision depends on the audio
alone, never on how the stream was cut into segments or when they arrived.
It is not asked when the frames at hand (one push: a segment's) already hold the
rest of the pause up to the merge gap with nothing in it that could start speech:
the utterance then closes in the same push, with the same edges and the same state
after it, whatever the model would answer. So the utterances, and the segment that
closes each, are those of asking every time; only which questions are asked depends
on how the stream is cut (a call costs ~45 ms of one core).

Silero misses strained, high-pitched voices: shouted, fearful or elated speech (RAVDESS's strong-intensity
clips, f0 around 300-400 Hz) scores 0.01-0.1 on every frame, at any gain and after the phone line alike, and
such clips were lost whole (issue 19: 15 of 1,080 RAVDESS clips). `voiced_speech` is the evidence it lacks:
a frame that the prosody's pitch tracker finds clearly voiced, at speaking level, with a pitch that moves (a
voice's always does; tones, hum and ringback do not) is speech, whatever Silero says. Such a voice reaches the
tracker in bursts (its unvoiced consonants are not voiced frames), so a voiced frame in a pause resumes speech at
once, and the merge gap bridges the consonants. The tracker needs 42 ms of a segment (its window and longest
period) to voice a frame: streams pushed in segments shorter than that (one VAD frame) are cut by Silero alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from emostream.media.decode import SAMPLE_RATE
from emostream.perception.voice.prosody import ProsodyFrames

FRAME_SAMPLES = 512  # samples per VAD frame (32 ms at 16 kHz)
CONTEXT_SAMPLES = 64  # samples of the previous frame the model sees before each frame
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
STATE_SIZE = 128  # LSTM hidden and cell size
# voiced_speech: a VAD frame is speech when at least VOICED_SHARE of its 10 ms prosody frames are voiced, its
# loudest is at least VOICED_SPEECH_DB, and the pitch of its voiced frames spans at least PITCH_MOVE (in log f0:
# 0.1%). Voices move by ~0.5-0.9% per 10 ms (RAVDESS, median); tones and mains hum move by under 0.01%.
VOICED_SHARE = 0.5
VOICED_SPEECH_DB = -35.0  # dBFS; RAVDESS's voiced frames lie around -30 (normal) to -10 (shouted)
PITCH_MOVE = 0.001
# StreamingVad restarts the model after this long a pause after speech (every frame under RESET_BELOW): longer
# than the merge gap and Smart Turn's pause, so within an utterance it never restarts.
RESET_AFTER_SECONDS = 1.0
RESET_BELOW = 0.1
SPEECH_PROBABILITY = 0.5  # a frame at least this likely is speech heard since the last restart


def _load_session():  # type: ignore[no-untyped-def]
    import onnxruntime  # noqa: PLC0415 (loaded on use)

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    path = resources.files("silero_vad.data").joinpath("silero_vad_16k_sequence.onnx")
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@dataclass
class _ChannelState:
    hidden: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, STATE_SIZE), np.float32))
    cell: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, STATE_SIZE), np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT_SAMPLES, np.float32))
    leftover: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    next_time: float | None = None  # stream time of the first sample not yet scored
    heard_speech: bool = False  # a frame of speech since the model (re)started
    quiet_frames: int = 0  # frames under RESET_BELOW since the last one that was not

    def reset_at(self, probabilities: np.ndarray) -> int | None:
        """Follow the frames' probabilities; the index of the frame after which the model restarts (None: it does
        not within these frames; the counts then carry over to the next)."""
        needed = round(RESET_AFTER_SECONDS / FRAME_SECONDS)
        for k, p in enumerate(probabilities):
            self.heard_speech = self.heard_speech or p >= SPEECH_PROBABILITY
            self.quiet_frames = self.quiet_frames + 1 if p < RESET_BELOW else 0
            if self.heard_speech and self.quiet_frames >= needed:
                self.hidden, self.cell = np.zeros_like(self.hidden), np.zeros_like(self.cell)
                self.heard_speech, self.quiet_frames = False, 0
                return k
        return None


class StreamingVad:
    """Speech probability of every 32 ms frame of a stream's channels, fed segment by segment, in order."""

    _session = None  # one ONNX session per process, shared by all streams

    def __init__(self) -> None:
        if StreamingVad._session is None:
            StreamingVad._session = _load_session()
        self._channels: dict[int, _ChannelState] = {}

    def push(self, channel: int, audio: np.ndarray, start: float) -> tuple[np.ndarray, np.ndarray]:
        """Score the new audio of one channel.

        audio : shape = (n_samples,) float32 at SAMPLE_RATE, following what was pushed before;
        start : stream seconds of audio[0]. A jump in time (a gap in the stream) restarts the model.
        Returns (frame start times, shape = (m,), probabilities, shape = (m,)).
        """
        state = self._channels.setdefault(channel, _ChannelState())
        expected = state.next_time
        if expected is None or abs(start - expected) > FRAME_SECONDS:
            state = self._channels[channel] = _ChannelState(next_time=start)
        samples = np.concatenate([state.leftover, audio.astype(np.float32)])
        first_time = state.next_time - len(state.leftover) / SAMPLE_RATE
        count = len(samples) // FRAME_SAMPLES
        state.leftover = samples[count * FRAME_SAMPLES :]
        state.next_time = start + len(audio) / SAMPLE_RATE
        if count == 0:
            return np.zeros(0), np.zeros(0, np.float32)
        frames = samples[: count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
        contexts = np.vstack([state.context[None], frames[:-1, -CONTEXT_SAMPLES:]])
        state.context = frames[-1, -CONTEXT_SAMPLES:].copy()
        inputs = np.concatenate([contexts, frames], axis=1)
        scored: list[np.ndarray] = []
        while len(inputs):  # the frames after a restart are scored again from the fresh state
            probabilities, hidden, cell = self._session.run(
                ["speech_probs", "hn", "cn"], {"input": inputs, "h": state.hidden, "c": state.cell})
            probabilities = np.asarray(probabilities, np.float32).reshape(-1)
            restart = state.reset_at(probabilities)
            if restart is None:
                state.hidden, state.cell = hidden, cell
                scored.append(probabilities)
                break
            scored.append(probabilities[: restart + 1])
            inputs = inputs[restart + 1 :]
        times = first_time + np.arange(count) * FRAME_SECONDS
        return times, np.concatenate(scored)


def voiced_speech(times: np.ndarray, frames: ProsodyFrames) -> np.ndarray:
    """Which VAD frames are clearly voiced speech by their prosody (see the module's docstring), Silero aside.

    times : shape = (m,), stream seconds where each VAD frame starts (`StreamingVad.push`);
    frames : the channel's prosody frames covering them (frames centred in [t, t + FRAME_SECONDS) belong to t).
    Returns shape = (m,) bool.
    """
    found = np.zeros(len(times), bool)
    for k, (first, last) in enumerate(zip(np.searchsorted(frames.times, times),
                                          np.searchsorted(frames.times, times + FRAME_SECONDS), strict=True)):
        voiced = frames.voiced[first:last]
        if not voiced.any() or voiced.mean() < VOICED_SHARE or frames.energy_db[first:last].max() < VOICED_SPEECH_DB:
            continue
        pitch = np.log(frames.f0[first:last][voiced])
        found[k] = pitch.max() - pitch.min() >= PITCH_MOVE
    return found


@dataclass(frozen=True)
class Span:
    """An utterance's extent on the stream clock."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


# Probability (0-1) that the speaker's turn is complete, given the stream seconds from the open utterance's start
# to the end of the frame where its pause reached `turn_pause` (StreamSession reads that audio from its buffer).
EndOfTurn = Callable[[float, float], float]


@dataclass(frozen=True)
class TurnRule:
    """Closing an utterance at a short pause when the speaker sounds finished."""

    end_of_turn: EndOfTurn
    pause: float  # seconds of pause after which the end-of-turn model is asked (once per pause)
    threshold: float  # the utterance closes at once when the probability reaches this


class UtteranceCutter:
    """Hysteresis over one channel's speech probabilities; emits utterances as soon as they close."""

    def __init__(self, onset: float, offset: float, merge_gap: float, min_seconds: float, max_seconds: float,
                 min_resume: float = 0.0, turn: TurnRule | None = None) -> None:
        self.onset, self.offset = onset, offset
        self.merge_gap, self.min_seconds, self.max_seconds, self.min_resume = merge_gap, min_seconds, max_seconds, min_resume
        self.turn = turn
        self.start: float | None = None  # of the open utterance
        self.last_speech: float | None = None  # end of its last speech frame
        self.speaking = False  # inside speech (continues while p >= offset) or in a pause
        self.resume_at: float | None = None  # in a pause: start of speech that has not lasted min_resume yet
        self.turn_asked = False  # the current pause was put to the end-of-turn model

    @property
    def pausing(self) -> bool:
        """In a pause after speech: the utterance closes as it stands unless speech resumes (lasting `min_resume`)
        before the pause lasts `merge_gap`."""
        return self.start is not None and not self.speaking

    def push(self, times: np.ndarray, probabilities: np.ndarray, voiced: np.ndarray | None = None) -> list[Span]:
        """Frames' start times and speech probabilities in, closed utterances out. `voiced` (shape = (m,) bool,
        `voiced_speech`): frames that are clearly voiced speech whatever the probability; they count as speech and,
        in a pause, resume it at once (min_resume is for the VAD's blips on clicks and breaths, which are not voiced)."""
        closed: list[Span] = []
        starts = times.tolist()
        levels = (probabilities if voiced is None else np.where(voiced, 1.0, probabilities)).tolist()  # voiced: speech
        for k, (t, p) in enumerate(zip(starts, levels, strict=True)):
            frame_end = t + FRAME_SECONDS
            v = voiced is not None and bool(voiced[k])
            if self.start is None:
                if p >= self.onset:
                    self.start, self.last_speech, self.speaking = t, frame_end, True
                continue
            if self.speaking:
                self.speaking = p >= self.offset
            else:
                closed += self._in_pause(t, p, v)
            if self.speaking:
                self.last_speech, self.turn_asked = frame_end, False
                if frame_end - self.start >= self.max_seconds:  # forced cut; speech goes on in a new utterance
                    closed += self._close()
                    self.start, self.last_speech, self.speaking = frame_end, frame_end, True
            elif self.resume_at is None and (frame_end - self.last_speech >= self.merge_gap
                                             or self._turn_over(frame_end, starts, levels, k + 1)):
                closed += self._close()
        return closed

    def _turn_over(self, frame_end: float, starts: list[float], levels: list[float], later: int) -> bool:
        """Once per pause, when it has lasted `turn.pause` (and no speech is resuming): does the speaker sound finished?
        Not asked when the merge gap closes the utterance in the frames at hand anyway (`_merge_gap_ahead`): the
        push's frame starts and levels, from index `later` on."""
        if self.turn is None or self.turn_asked or frame_end - self.last_speech < self.turn.pause:
            return False
        if self.last_speech - self.start < self.min_seconds:
            # Too short to keep if it closed here: a short burst (a shouted word) waits for the merge gap,
            # so the words after it join it instead of the utterance being closed and dropped word by word.
            return False
        self.turn_asked = True
        if self._merge_gap_ahead(starts[later:], levels[later:]):
            return False
        return self.turn.end_of_turn(self.start, frame_end) >= self.turn.threshold

    def _merge_gap_ahead(self, later_starts: list[float], later_levels: list[float]) -> bool:
        """Whether the frames at hand after this one keep the pause going until it lasts the merge gap, none of them
        reaching the onset (or voiced): the utterance then closes in this push with the same span whatever the
        end-of-turn model says, and leaves the same state. Closed now, such a frame would start a new utterance;
        in the pause it only begins a resume, so it would make the two ways differ."""
        for t, p in zip(later_starts, later_levels, strict=True):
            if p >= self.onset:
                return False
            if t + FRAME_SECONDS - self.last_speech >= self.merge_gap:
                return True
        return False

    def _in_pause(self, t: float, p: float, voiced: bool = False) -> list[Span]:
        """Speech resumes (p reaches onset, then stays over offset) only once it has lasted `min_resume`:
        the short false alarms of the VAD in a pause (a click, a breath) neither hold the utterance open
        nor join it. A voiced frame resumes it at once."""
        if self.resume_at is None and p >= self.onset:
            self.resume_at = t
        elif self.resume_at is not None and p < self.offset:
            self.resume_at = None
        if self.resume_at is None or (not voiced and t + FRAME_SECONDS - self.resume_at < self.min_resume):
            return []
        resumed_at, self.resume_at, self.speaking = self.resume_at, None, True
        if t + FRAME_SECONDS - self.start > self.max_seconds:
            # Speech resumes after a pause but would make the utterance too long: the pause ends it.
            closed = self._close()
            self.start, self.speaking = resumed_at, True
            return closed
        return []

    def flush(self) -> list[Span]:
        """Close the open utterance (end of stream, idle stream, or a gap in the audio)."""
        return self._close() if self.start is not None else []

    def _close(self) -> list[Span]:
        span = Span(self.start, self.last_speech)
        self.start = self.last_speech = self.resume_at = None
        self.speaking = self.turn_asked = False
        return [span] if span.duration >= self.min_seconds else []
