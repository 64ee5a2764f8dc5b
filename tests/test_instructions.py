"""Instruction data for the LLM: a labelled clip's answer in one fixed shape, its words from the documented lexicon,
its explanation from cues measured for that clip, and the parser that reads the shape back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from emostream.labels import INTENSITIES, OPEN_WORDS, open_words
from emostream.models.explain import face_cues, voice_cues
from emostream.models.instructions import NO_CUE, Answer, grounded, labelled_answer, parse_answer
from emostream.perception.voice.prosody import PROSODY_NAMES
from emostream.training.data import target_answer
from emostream.training.datasets.ravdess import ravdess_intensity
from tests.model_helpers import random_bundle


def test_words_come_from_the_lexicon_by_intensity() -> None:
    assert open_words("sad", "ravdess8", "strong") == ("grief", "sadness")
    assert open_words("sad", "ravdess8", "normal") == ("sadness",)
    assert open_words("fear", "tess7", "unknown") == ("fear",)  # the set's own spelling, through the canonical concept
    assert open_words("calm", "ravdess8", "strong") == ("calmness",)  # no intense tier: the basic word only
    with pytest.raises(ValueError, match="unknown intensity 'loud'; known: normal, strong, unknown"):
        open_words("sad", "ravdess8", "loud")


def test_a_labelled_clip_cites_only_cues_measured_for_it() -> None:
    bundle = random_bundle(seed=4, face=False, frames=False)
    calm = {name: 0.2 for name in PROSODY_NAMES}
    pitched = replace(bundle, prosody_z={**calm, "f0_mean": 2.5, "energy_mean": -1.5})
    answer = labelled_answer("angry", "ravdess8", "strong", pitched)
    assert answer.text() == ("emotion: angry; intensity: strong; words: rage, anger; "
                             "because: pitch +2.5 σ above this speaker's norm; quieter than usual (-1.5 σ)")
    measured = {cue.detail for cue in voice_cues(pitched) + face_cues(pitched)}
    assert set(answer.because.split("; ")) <= measured
    flat = replace(bundle, prosody_z=calm, prosody=replace(bundle.prosody, speaking_rate=4.0))
    assert labelled_answer("neutral", "ravdess8", "normal", flat).because == NO_CUE  # nothing notable: nothing invented


def test_a_generated_answer_keeps_only_the_cues_measured_for_its_utterance_in_their_measured_wording() -> None:
    bundle = random_bundle(seed=6, face=False, frames=False)
    bundle = replace(bundle, prosody_z={**{name: 0.0 for name in PROSODY_NAMES}, "f0_mean": -1.4})
    written = Answer("sad", "strong", ("grief", "sadness"), "pitch -1.4 σ below this speaker's norm; louder than usual (+3.0 σ)")
    assert grounded(written, bundle).because == "pitch -1.4 σ below this speaker's norm"  # the loudness was never measured
    assert grounded(replace(written, because="louder than usual (+3.0 σ)"), bundle).because == NO_CUE
    # the measured cue named with another number: kept, in its measured wording; the other direction is not it
    roughly = replace(written, because="pitch -2.0 σ below this speaker's norm")
    assert grounded(roughly, bundle).because == "pitch -1.4 σ below this speaker's norm"
    twice = replace(written, because="pitch -2.0 σ below this speaker's norm; pitch -1.4 σ below this speaker's norm")
    assert grounded(twice, bundle).because == "pitch -1.4 σ below this speaker's norm"  # one cue, cited once
    assert grounded(replace(written, because="pitch +1.4 σ above this speaker's norm"), bundle).because == NO_CUE


@pytest.mark.parametrize("answer", [
    Answer("sad", "strong", ("grief", "sadness"), "pitch -1.4 σ below this speaker's norm; slower speech (-1.1 σ)"),
    Answer("neutral", "normal", ("neutral",), NO_CUE),
    Answer("happy", "unknown", (), "a caption's explanation: she laughs; then smiles"),
])
def test_an_answer_round_trips_through_its_text(answer: Answer) -> None:
    assert parse_answer(answer.text()) == answer


def test_text_without_the_shape_is_a_parse_failure() -> None:
    assert parse_answer("The speaker sounds sad.") is None
    assert parse_answer("emotion: sad; intensity: very; words: grief; because: x") is None  # not an intensity
    assert parse_answer("Sure. Emotion: Sad; intensity: Normal; words: Sadness ; because: slower speech\n") == \
        Answer("sad", "normal", ("sadness",), "slower speech")
    assert parse_answer("emotion: sad; words: grief; because: slower speech") is None  # a field missing


def test_feature_rows_get_their_target_from_a_caption_or_their_label(shared_data: Path) -> None:
    media = next((shared_data / "ravdess-speech-16k").rglob("03-01-04-02-*.flac"))  # sad, strong intensity
    assert ravdess_intensity(media) == "strong" and set(INTENSITIES) == {"normal", "strong", "unknown"}
    bundle = random_bundle(seed=5, face=False, frames=False)
    row = {"media": str(media), "dataset": "ravdess", "explanation": None, "open_vocabulary": []}
    assert target_answer(row, "sad", "ravdess8", bundle) == labelled_answer("sad", "ravdess8", "strong", bundle)
    assert target_answer(row, None, "ravdess8", bundle) is None
    captioned = {**row, "dataset": "mer2023", "explanation": "she frowns and sighs", "open_vocabulary": ["weary"]}
    assert target_answer(captioned, None, "ravdess8", bundle) == Answer("unknown", "unknown", ("weary",), "she frowns and sighs")
    assert set(OPEN_WORDS["sad"]) == {"sadness", "grief"}
