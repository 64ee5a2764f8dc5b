"""Speech on real recordings: utterance boundaries and transcripts (LibriVox), speakers in calls (RAVDESS)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from emostream.models.score import default_scorer
from emostream.settings import load_settings
from tests.speech_helpers import build_call, noise_floor_db, read_mono, room_noise, speech_bounds, word_error_rate, write_wav

PAD = 1.0  # seconds of background before and after each clip, at the clip's own noise level


@pytest.fixture(scope="module")
def references(shared_data: Path) -> dict[str, str]:
    found = {}
    for line in (shared_data / "speech-librivox" / "transcription").read_text().splitlines():
        match = re.match(r"<s> (.*) </s> \((.*)\)", line.strip())
        if match:
            found[match.group(2)] = match.group(1)
    return found


def test_librivox_one_utterance_per_clip_with_words(
    librivox: list[Path], references: dict[str, str], make_spine, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    spine = make_spine(load_settings())
    width = default_scorer().model.config.audio_embedding
    hypotheses, truths = [], []
    for clip in librivox:
        audio = read_mono(clip)
        level = noise_floor_db(audio)  # the clips carry their own hiss: the padding continues it
        padded = np.concatenate([room_noise(PAD, 0, level), audio, room_noise(PAD, 2, level)])
        bundles = spine.file_utterances(write_wav(tmp_path / clip.name, padded), stream_id=clip.stem)
        assert len(bundles) == 1, [(b.start, b.end, b.transcript) for b in bundles]
        (bundle,) = bundles
        start, end = speech_bounds(audio)
        assert bundle.start == pytest.approx(PAD + start, abs=0.15)
        assert bundle.end == pytest.approx(PAD + end, abs=0.15)
        assert bundle.speaker_id == "channel-0" or bundle.speaker_id == "speaker-1"
        assert bundle.modalities.audio and bundle.modalities.text and not bundle.has_video and bundle.face is None
        assert bundle.audio_embedding is not None and bundle.audio_embedding.shape == (width,)  # the served model's
        assert bundle.speaker_embedding is not None
        assert bundle.text_embedding is None  # the default model does not read words (tests/test_text_embedding.py)
        assert 80 < bundle.prosody.f0_mean < 200  # a male reader
        hypotheses.append(bundle.transcript or "")
        truths.append(references[clip.stem])
    assert word_error_rate(truths, hypotheses) <= 0.15, hypotheses


def ravdess(shared_data: Path, actor: int, count: int) -> list[np.ndarray]:
    files = sorted((shared_data / "ravdess-speech-16k" / f"Actor_{actor:02d}").glob("*.flac"))
    return [read_mono(f) for f in files[5 : 5 + count]]


@pytest.fixture(scope="module")
def call(shared_data: Path):  # type: ignore[no-untyped-def]
    """An agent (male, actor 1) and a customer (female, actor 2) taking turns; the 5th turn overlaps the 4th."""
    agent, customer = ravdess(shared_data, 1, 4), ravdess(shared_data, 2, 4)
    clips = [(speaker, (agent, customer)[speaker][turn // 2]) for turn, speaker in enumerate([0, 1] * 4)]
    pauses = [0.8, 0.9, 0.7, -1.2, 1.0, 0.8, 0.9]
    return build_call(clips, pauses)


def test_two_channel_call_attributes_every_utterance_to_its_role(call, make_spine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    audio, turns = call
    spine = make_spine(load_settings(voice={"asr": False}))
    bundles = spine.file_utterances(write_wav(tmp_path / "call.wav", audio), "call-1", channels=("agent", "customer"))
    roles = ("agent", "customer")
    assert len(bundles) == len(turns), [(b.role, round(b.start, 2), round(b.end, 2)) for b in bundles]
    for bundle, turn in zip(bundles, turns, strict=True):
        assert bundle.role == roles[turn.speaker] == bundle.speaker_id
        assert bundle.channel == turn.speaker
        assert bundle.start == pytest.approx(turn.start, abs=0.25) and bundle.end == pytest.approx(turn.end, abs=0.25)
    assert [b.start for b in bundles] == sorted(b.start for b in bundles)
    assert len({b.utterance_id for b in bundles}) == len(bundles)


def test_mono_call_diarisation_keeps_speakers_apart(call, make_spine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    audio, turns = call
    spine = make_spine(load_settings(voice={"asr": False}))
    bundles = spine.file_utterances(write_wav(tmp_path / "mono.wav", audio.sum(axis=1)), "call-mono")
    truth = []
    for bundle in bundles:  # the true speaker of each utterance: the turn it overlaps most
        overlaps = [max(0.0, min(bundle.end, t.end) - max(bundle.start, t.start)) for t in turns]
        truth.append(turns[int(np.argmax(overlaps))].speaker)
    majority = {}
    for speaker in (0, 1):
        ids = [b.speaker_id for b, s in zip(bundles, truth, strict=True) if s == speaker]
        majority[speaker] = max(set(ids), key=ids.count)
    assert majority[0] != majority[1]
    consistent = sum(b.speaker_id == majority[s] for b, s in zip(bundles, truth, strict=True))
    assert consistent / len(bundles) >= 0.9, [(b.speaker_id, s) for b, s in zip(bundles, truth, strict=True)]
    assert len(bundles) >= len(turns) - 1  # the overlapping pair may merge into one utterance on a mono mix


def test_batched_recognition_gives_each_utterance_what_it_gets_alone(librivox: list[Path], models) -> None:  # type: ignore[no-untyped-def]
    """The Serve audio encoder batches streams' utterances together; no result may depend on its batch-mates
    (a 14 s clip has a longer window than the others and is encoded on its own)."""
    transcriber = models["transcriber"]
    clips = [read_mono(p) for p in librivox[:3]]
    clips.append(np.concatenate([clips[0], clips[1], clips[2][: len(clips[2]) // 2]]))
    alone = [transcriber(clip) for clip in clips]
    batched = transcriber.recognise(clips)
    assert [r.text for r in batched] == [r.text for r in alone]
    for one, many in zip(alone, batched, strict=True):
        np.testing.assert_allclose(many.audio_embedding, one.audio_embedding, atol=1e-5)
    assert transcriber.recognise([]) == []
