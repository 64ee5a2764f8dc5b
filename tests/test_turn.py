"""End of turn: Smart Turn v3.2 from the pipecat-ai wheel, and the utterance cutter closing at a short pause with it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from emostream.perception.session import StreamSession
from emostream.perception.voice import turn as turn_module
from emostream.perception.voice.turn import REQUIREMENT, WINDOW_SAMPLES, SmartTurn
from emostream.perception.voice.vad import FRAME_SAMPLES, FRAME_SECONDS, Span, TurnRule, UtteranceCutter
from emostream.settings import load_settings
from tests.speech_helpers import RATE, noise_floor_db, read_mono, room_noise, speech_bounds
from tests.test_session import segment_of

PAUSE = 0.2  # seconds of the clip's own background after the words, as the cutter asks at turn_pause_seconds


def spoken(path: Path) -> tuple[np.ndarray, float]:
    """The clip from its first clearly spoken frame on, and its noise level."""
    audio = read_mono(path)
    start, _ = speech_bounds(audio)
    return audio[int(start * RATE) :], noise_floor_db(audio)


def test_smart_turn_hears_the_end_of_a_sentence_and_not_its_middle(librivox: list[Path]) -> None:
    """'Had he married a more amiable woman he might have been made still more respectable than he was': finished
    at its last word, unfinished at every cut from 1.25 s into it to 1.5 s before its end (each cut followed by a
    short pause of the recording's own background, as the cutter hears it)."""
    (clip,) = [p for p in librivox if p.stem.endswith("0920")]
    audio, level = spoken(clip)
    _, end = speech_bounds(audio)
    model = SmartTurn()
    finished = model(np.concatenate([audio[: int(end * RATE)], room_noise(PAUSE, 5, level)]))
    cuts = np.arange(1.25, end - 1.5, 0.25)
    unfinished = [model(np.concatenate([audio[: int(cut * RATE)], room_noise(PAUSE, 5, level)])) for cut in cuts]
    assert len(cuts) >= 8
    assert finished > 0.9 and max(unfinished) < 0.5, (finished, [round(p, 2) for p in unfinished])


def test_features_are_whisper_log_mel_of_the_normalised_last_eight_seconds(librivox: list[Path]) -> None:
    """What pipecat feeds the model: transformers' WhisperFeatureExtractor (8 s chunk, waveform normalised) on the
    last 8 s, zero-padded at the start; a longer input keeps its end."""
    from transformers import WhisperFeatureExtractor

    reference = WhisperFeatureExtractor(chunk_length=8)
    audio = np.concatenate([read_mono(p) for p in librivox[:3]])  # 17 s
    for clip in (audio[: 3 * RATE], audio):
        window = np.zeros(WINDOW_SAMPLES, np.float32)
        tail = clip[-WINDOW_SAMPLES:]
        window[WINDOW_SAMPLES - len(tail) :] = tail
        expected = reference(window, sampling_rate=RATE, do_normalize=True, return_tensors="np").input_features[0]
        assert expected.shape == (80, 800)
        np.testing.assert_allclose(SmartTurn().features(clip), expected, atol=1e-4)


def test_a_missing_package_names_the_install_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turn_module, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps pipecat-ai==1\.14\.0.*voice\.turn_model: none"):
        turn_module.model_path()
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert any(line.split("#")[0].strip() == REQUIREMENT for line in pyproject["tool"]["emostream"]["no-deps"])


class Scorer:
    """A stand-in end-of-turn model with a fixed answer, recording what it was asked."""

    def __init__(self, probability: float) -> None:
        self.probability = probability
        self.asked: list[tuple[float, float]] = []

    def __call__(self, start: float, end: float) -> float:
        self.asked.append((start, end))
        return self.probability


def cut_frame_by_frame(probabilities: list[float], scorer: Scorer, pause: float = 0.1,
                       merge_gap: float = 0.5) -> list[tuple[int, Span]]:
    """(index of the frame whose push closed it, utterance) for each utterance."""
    cutter = UtteranceCutter(0.5, 0.35, merge_gap, 0.1, 10.0, turn=TurnRule(scorer, pause, 0.5))
    closed = []
    for i, p in enumerate(probabilities):
        closed += [(i, span) for span in cutter.push(np.array([i * FRAME_SECONDS]), np.array([p]))]
    return closed


def test_the_cutter_closes_at_a_short_pause_only_when_the_turn_is_over() -> None:
    s = FRAME_SECONDS
    speech = [0.1] * 5 + [0.9] * 20 + [0.1] * 30  # speech ends with frame 24; the pause starts at frame 25
    done = Scorer(0.9)
    # asked once, when the pause has lasted 0.1 s (4 frames: 25-28), about the utterance up to that frame's end
    assert cut_frame_by_frame(speech, done) == [(28, Span(pytest.approx(5 * s), pytest.approx(25 * s)))]
    assert done.asked == [(pytest.approx(5 * s), pytest.approx(29 * s))]
    not_done = Scorer(0.1)
    # the merge gap (0.5 s: 16 frames, 25-40) closes it, with the same edges; the model was asked once only
    assert cut_frame_by_frame(speech, not_done) == [(40, Span(pytest.approx(5 * s), pytest.approx(25 * s)))]
    assert len(not_done.asked) == 1
    # a 0.2 s pause inside speech: one utterance unless the speaker sounds finished there
    two_phrases = [0.9] * 20 + [0.1] * 6 + [0.9] * 20 + [0.1] * 30
    assert len(cut_frame_by_frame(two_phrases, Scorer(0.1))) == 1
    assert [span for _, span in cut_frame_by_frame(two_phrases, Scorer(0.9))] == [
        Span(pytest.approx(0.0), pytest.approx(20 * s)), Span(pytest.approx(26 * s), pytest.approx(46 * s))]
    # a pause rule no shorter than the merge gap never asks
    never = Scorer(0.9)
    assert cut_frame_by_frame(speech, never, pause=0.5) == [(40, Span(pytest.approx(5 * s), pytest.approx(25 * s)))]
    assert never.asked == []


def test_a_pause_reaching_the_merge_gap_in_the_frames_at_hand_asks_nothing() -> None:
    """Pushed at once (as a segment brings them), frames whose pause already lasts the merge gap close the utterance
    without a question: the same span the model's answer would have given, either way. Frames that end before the
    merge gap, or hold a frame that could start speech, still ask."""
    s = FRAME_SECONDS
    speech = [0.1] * 5 + [0.9] * 20 + [0.1] * 30
    for answer in (0.9, 0.1):
        scorer = Scorer(answer)
        cutter = UtteranceCutter(0.5, 0.35, 0.5, 0.1, 10.0, turn=TurnRule(scorer, 0.1, 0.5))
        assert cutter.push(np.arange(len(speech)) * s, np.array(speech)) == [Span(pytest.approx(5 * s), pytest.approx(25 * s))]
        assert scorer.asked == []
        assert [span for _, span in cut_frame_by_frame(speech, Scorer(answer))] == [Span(pytest.approx(5 * s), pytest.approx(25 * s))]
    # the push ends 10 frames into the pause, before the merge gap (16 frames): asked, as frame by frame
    scorer = Scorer(0.9)
    cutter = UtteranceCutter(0.5, 0.35, 0.5, 0.1, 10.0, turn=TurnRule(scorer, 0.1, 0.5))
    assert cutter.push(np.arange(35) * s, np.array(speech[:35])) == [Span(pytest.approx(5 * s), pytest.approx(25 * s))]
    assert scorer.asked == [(pytest.approx(5 * s), pytest.approx(29 * s))]
    # a frame reaching the onset inside the pause: closed at the question, it would start an utterance (a blip
    # too short to keep); left open, it only begins a resume. The two ways differ there, so the model is asked.
    blip = [0.9] * 20 + [0.1] * 6 + [0.7] * 2 + [0.1] * 30
    for answer in (0.9, 0.1):
        scorer = Scorer(answer)
        cutter = UtteranceCutter(0.5, 0.35, 0.5, 0.1, 10.0, min_resume=0.25, turn=TurnRule(scorer, 0.1, 0.5))
        assert cutter.push(np.arange(len(blip)) * s, np.array(blip)) == [Span(pytest.approx(0.0), pytest.approx(20 * s))]
        assert len(scorer.asked) == 1


def test_speech_resuming_in_the_pause_defers_the_question() -> None:
    """A VAD blip at the moment the pause reaches turn_pause is not yet speech (min_resume) nor silence: the model
    is asked once the blip is over, still once for the pause (frame by frame: no frames at hand after the question)."""
    s = FRAME_SECONDS
    probabilities = [0.9] * 20 + [0.1] * 2 + [0.7] * 4 + [0.1] * 30
    scorer = Scorer(0.9)
    cutter = UtteranceCutter(0.5, 0.35, 0.5, 0.1, 10.0, min_resume=0.25, turn=TurnRule(scorer, 0.1, 0.5))
    closed = [span for i, p in enumerate(probabilities) for span in cutter.push(np.array([i * s]), np.array([p]))]
    assert closed == [Span(pytest.approx(0.0), pytest.approx(20 * s))]
    assert scorer.asked == [(pytest.approx(0.0), pytest.approx(27 * s))]


def read_speech(librivox: list[Path]) -> np.ndarray:
    """Three read sentences, each finished (Smart Turn > 0.9 at its end), with 1 s of background after each."""
    clips = [read_mono(p) for p in librivox if p.stem[-4:] in ("0870", "0890", "0920")]
    level = min(noise_floor_db(c) for c in clips)
    return np.concatenate([room_noise(0.5, 0, level)] + [part for i, c in enumerate(clips) for part in (c, room_noise(1.0, i + 1, level))])


def closings(audio: np.ndarray, step: int, models: dict[str, object], **voice: object) -> list[tuple[float, Span, str]]:
    """(stream seconds at the end of the segment that closed it, utterance, its id) for each utterance of a session fed
    `step`-sample segments."""
    session = StreamSession("reading", load_settings(voice={"asr": False, **voice}), models["voices"])  # type: ignore[arg-type]
    closed = []
    for seq, first in enumerate(range(0, len(audio), step)):
        segment = audio[first : first + step]
        end = (first + len(segment)) / RATE
        closed += [(end, Span(b.start, b.end), b.utterance_id) for b in session.push(segment_of("reading", seq, segment, first / RATE))]
    return closed


def test_finished_sentences_close_sooner_and_the_cutter_closes_the_same_utterances_however_the_stream_is_cut(
        librivox: list[Path], models: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[float, float, float]] = []  # (start, end, probability) of each end-of-turn question
    original = StreamSession._end_of_turn

    def spy(session: StreamSession, index: int, start: float, end: float) -> float:
        asked.append((start, end, original(session, index, start, end)))
        return asked[-1][2]

    monkeypatch.setattr(StreamSession, "_end_of_turn", spy)
    audio = read_speech(librivox)
    # Segments of one VAD frame: an utterance comes out at the very frame that closes it.
    merge_gap = closings(audio, FRAME_SAMPLES, models, turn_model="none")
    assert asked == []
    smart = closings(audio, FRAME_SAMPLES, models)
    assert len(smart) == len(merge_gap) == 3
    assert [span for _, span, _ in smart] == [span for _, span, _ in merge_gap]
    by_model = 0
    for (closed, _, _), (waited, _, _) in zip(smart, merge_gap, strict=True):
        if any(end == pytest.approx(closed) and p >= 0.5 for _, end, p in asked):
            by_model += 1  # closed when the pause reached 0.2 s, not after the 0.3 s merge gap
            assert closed <= waited - 0.09
        else:  # a VAD blip held the pause open past 0.2 s: the merge gap closed it, as before
            assert closed == pytest.approx(waited)
    assert by_model >= 2, asked
    # The cutter's utterances are the same whatever the segments. The bundles' edges are then tightened on prosody
    # frames, whose 10 ms grid starts at each segment's start: 512- and 7777-sample segments lay it elsewhere than
    # segments of whole frames do, so the bundles' ids are compared between 0.5 s and 2 s segments only
    # (tests/test_session.py: edges of whole-frame segments of any length are the same).
    cut_spans: list[Span] = []
    push = UtteranceCutter.push

    def cutter_spy(cutter: UtteranceCutter, *args: object, **kwargs: object) -> list[Span]:
        cut_spans.extend(spans := push(cutter, *args, **kwargs))  # type: ignore[arg-type]
        return spans

    monkeypatch.setattr(UtteranceCutter, "push", cutter_spy)
    closings(audio, FRAME_SAMPLES, models)
    frame_by_frame, spared = list(cut_spans), 0
    ids_by_step: dict[int, list[str]] = {}
    for step in (RATE // 2, 7777, 2 * RATE):  # 2 s: the product's segments
        cut_spans[:], asked[:] = [], []
        cut = closings(audio, step, models)
        assert cut_spans == [Span(pytest.approx(s.start, abs=1e-9), pytest.approx(s.end, abs=1e-9)) for s in frame_by_frame]
        ids_by_step[step] = [uid for _, _, uid in cut]
        # Asking every pause (no look-ahead in the frames at hand) gives the same utterances, ids, and closing segments:
        # a question the merge gap made moot is spared, nothing else changes.
        looked_ahead = len(asked)
        with monkeypatch.context() as every_pause:
            every_pause.setattr(UtteranceCutter, "_merge_gap_ahead", lambda self, starts, levels: False)
            asked[:] = []
            assert closings(audio, step, models) == cut
            assert len(asked) >= looked_ahead
            spared += len(asked) - looked_ahead
    assert spared >= 1  # real pauses in segments of 0.5-2 s reach the merge gap with a question pending
    assert ids_by_step[RATE // 2] == ids_by_step[2 * RATE]
