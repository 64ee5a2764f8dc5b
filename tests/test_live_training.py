"""Training on what the live path sees (issue 19, item 7): live-cut rows are the live session's utterances,
telephone copies are a phone line's, speaker statistics are the live scorer's, and the cache key follows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emostream.media.telephone import telephone_band, telephone_copy
from emostream.models.score import StreamContexts
from emostream.perception.voice.prosody import SpeakerProsodyStats
from emostream.settings import Settings, load_settings
from emostream.training.data import call_statistics, samples_from_rows
from emostream.training.datasets import Example
from emostream.training.features import (
    CUT_ONLY_VOICE_FIELDS,
    FEATURE_VERSION,
    LATER_VOICE_FIELDS,
    Augment,
    bundle_row,
    cache_folder,
    cache_key,
    feature_settings,
)
from emostream.training.train import DataConfig, TrainConfig, load_train_config
from tests.model_helpers import random_bundle

LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
RATE = 16000
CLIPS = ("Actor_01/03-01-05-02-01-01-01.flac", "Actor_16/03-01-01-01-01-01-16.flac")  # angry (strong), neutral


def high_share(audio: np.ndarray, above: float) -> float:
    """The share of the audio's energy above `above` Hz."""
    power = np.abs(np.fft.rfft(audio)) ** 2
    return float(power[np.fft.rfftfreq(len(audio), 1 / RATE) > above].sum() / power.sum())


# -- the phone line -----------------------------------------------------------------------------------------------

def test_telephone_copies_are_band_limited_to_the_8khz_line(shared_data: Path) -> None:
    speech, rate = sf.read(shared_data / "ravdess-speech-16k" / CLIPS[0], dtype="float32")
    noise = np.random.default_rng(0).normal(0, 0.1, 2 * RATE).astype(np.float32)  # as much energy above 4 kHz as below
    assert rate == RATE and high_share(noise, 4500) > 0.4 and high_share(speech, 4500) > 0.01
    for audio in (speech, noise):
        copy = telephone_copy(audio, np.random.default_rng(1), (20.0, 40.0))
        assert copy.shape == audio.shape and copy.dtype == np.float32
        # 8 kHz sampling keeps nothing above 4 kHz: what is left lies in the anti-aliasing filter's edge
        assert high_share(copy, 4500) < 1e-4 and high_share(copy, 4000) < 0.01
    band = telephone_band(np.stack([speech, speech]))  # a two-channel call, as bench/calls.py passes it
    assert band.shape == (2, len(speech))
    assert 0.95 < np.linalg.norm(band[0]) / np.linalg.norm(speech) < 1.05  # the speech itself goes through


def test_telephone_copies_are_deterministic_per_seed(shared_data: Path) -> None:
    speech, _ = sf.read(shared_data / "ravdess-speech-16k" / CLIPS[1], dtype="float32")
    first = telephone_copy(speech, np.random.default_rng(7), (20.0, 40.0))
    np.testing.assert_array_equal(first, telephone_copy(speech, np.random.default_rng(7), (20.0, 40.0)))
    assert not np.array_equal(first, telephone_copy(speech, np.random.default_rng(8), (20.0, 40.0)))
    # without noise the line is a fixed function: mu-law's 8 bits are audible, but the same every time
    np.testing.assert_array_equal(telephone_band(speech), telephone_band(speech))
    assert 0 < np.abs(telephone_band(speech) - speech).max()


# -- the cache key ----------------------------------------------------------------------------------------------

def test_the_cache_key_changes_with_the_live_options() -> None:
    settings = load_settings()
    keys = {cache_key(settings, augment) for augment in (
        Augment(), Augment(live_cut=True), Augment(telephone_copies=1), Augment(telephone_copies=2),
        Augment(telephone_copies=1, telephone_snr_db=(10.0, 20.0)), Augment(live_cut=True, telephone_copies=1))}
    assert len(keys) == 6
    # without the live options, the key is the version, the faces, the voice but what only the cut reads (and the
    # fields added since, unset), the copies
    resolved = feature_settings(settings)
    voice = {name: value for name, value in resolved.voice.model_dump(mode="json").items()
             if name not in CUT_ONLY_VOICE_FIELDS + LATER_VOICE_FIELDS}
    before = {"version": FEATURE_VERSION, "faces": resolved.faces.model_dump(mode="json"), "voice": voice,
              "augment": {"copies": 2, "speed": [0.9, 1.1], "gain_db": [-6.0, 6.0], "noise_snr_db": [15.0, 35.0], "seed": 3}}
    expected = hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()[:12]
    assert cache_key(settings, Augment(copies=2, seed=3)) == expected


def test_settings_only_the_cut_reads_key_live_cut_caches_alone() -> None:
    """A whole-clip cache keeps its key when the VAD or Smart Turn settings change (its extraction never cuts); a
    live-cut cache, whose rows are the cut's utterances, does not; a setting whole clips read changes both."""
    base = load_settings()
    cut_changed = load_settings(voice={"merge_gap_seconds": 0.5, "turn_model": "none", "vad_onset": 0.6})
    read_changed = load_settings(voice={"diarize_threshold": 0.7})
    assert cache_key(cut_changed, Augment()) == cache_key(base, Augment())
    assert cache_key(cut_changed, Augment(live_cut=True)) != cache_key(base, Augment(live_cut=True))
    assert cache_key(read_changed, Augment()) != cache_key(base, Augment())
    assert cache_key(read_changed, Augment(live_cut=True)) != cache_key(base, Augment(live_cut=True))
    assert set(CUT_ONLY_VOICE_FIELDS) <= set(base.voice.model_dump())  # no field renamed out from under the list


def test_a_feature_model_keys_the_cache_only_when_set(tmp_path: Path) -> None:
    """voice.feature_model_dir arrived after caches existed: unset, the keys are what they were; set, the features
    differ, and so do the keys of whole-clip and live-cut caches."""
    base = load_settings()
    other = load_settings(voice={"feature_model_dir": tmp_path})
    assert set(LATER_VOICE_FIELDS) <= set(base.voice.model_dump())
    for augment in (Augment(), Augment(live_cut=True)):
        assert cache_key(other, augment) != cache_key(base, augment)


def test_a_face_setting_keys_the_caches_of_media_with_pictures_alone(tmp_path: Path) -> None:
    """A voice corpus's cache (sound files only: no row can hold a face) keeps its folder when a face setting
    changes, as when the default face expert changed; a cache of video files does not."""
    def examples(suffix: str) -> list[Example]:
        return [Example(media=Path(f"/data/clip-{k}{suffix}"), start=None, end=None, speaker="s", label="angry",
                        valence=None, arousal=None, transcript=None, explanation=None, open_vocabulary=(),
                        dataset="d", key=f"k{k}") for k in range(2)]

    base = load_settings()
    faces_changed = load_settings(faces={"min_confidence": 0.7})
    def folder(settings: Settings, media: list[Example]) -> Path:
        return cache_folder(tmp_path, settings, Augment(), media)

    for suffix in (".wav", ".FLAC", ".mp3", ".m4a", ".opus"):
        assert folder(faces_changed, examples(suffix)) == folder(base, examples(suffix))
    video = examples(".mp4")
    assert folder(faces_changed, video) != folder(base, video)
    assert folder(base, examples(".wav") + video[:1]) == folder(base, video)  # one file with pictures keys them all
    voice_changed = load_settings(voice={"diarize_threshold": 0.7})  # a voice setting keys both
    assert folder(voice_changed, examples(".wav")) != folder(base, examples(".wav"))


def test_the_default_recipe_trains_on_what_the_live_path_sees(tmp_path: Path) -> None:
    """deployments/train-lite.yaml (the embedded default's recipe) cuts every clip as the live path does, also on a
    phone line, and keeps its early statistics from early_speaker_fraction; train-lite-whole.yaml is the same on
    whole clips, at the 20 epochs it had as the default."""
    deployments = Path(__file__).resolve().parent.parent / "deployments"
    recipe = load_train_config(deployments / "train-lite.yaml")
    assert recipe.data.live_cut and recipe.data.telephone_copies >= 1 and recipe.data.call_turns == 0
    assert recipe.augment == Augment(copies=recipe.data.augment_copies, seed=recipe.seed, live_cut=True,
                                     telephone_copies=recipe.data.telephone_copies)
    assert recipe.early_speaker_fraction > 0 and recipe.unknown_speaker_fraction > 0
    whole = load_train_config(deployments / "train-lite-whole.yaml")
    assert whole.augment == Augment(copies=recipe.data.augment_copies, seed=recipe.seed)
    different = {"data", "name", "export", "stages"}
    assert whole.model_dump(exclude=different) == recipe.model_dump(exclude=different)
    def schedule(config: TrainConfig) -> list[dict]:
        return [stage.model_dump(exclude={"epochs"}) for stage in config.stages]

    assert schedule(whole) == schedule(recipe)
    assert whole.name != recipe.name and whole.export != recipe.export
    with pytest.raises(ValueError, match="early_speaker_fraction"):
        TrainConfig(data=DataConfig(path=tmp_path, call_turns=12), early_speaker_fraction=0.5,
                    stages=[{"name": "all", "epochs": 1}])


# -- speaker statistics as a call has them ---------------------------------------------------------------------------

def rows_of(speaker: str, clips: int, pieces: int = 1, variant: int = 0) -> list[dict]:
    rows = []
    for k in range(clips):
        example = Example(media=Path("/data/x.wav").absolute(), start=None, end=None, speaker=speaker, label=LABELS[k % 8],
                          valence=None, arousal=None, transcript=None, explanation=None, open_vocabulary=(),
                          dataset="manifest", key=f"{speaker}-clip-{k:02d}")
        for piece in range(pieces):
            bundle = random_bundle(seed=1000 * variant + 10 * k + piece, face=False, frames=False, text=False)
            rows.append(bundle_row(bundle, example, variant, piece, pieces))
    return rows


def test_call_statistics_are_the_live_scorers_running_ones() -> None:
    rows = rows_of("a", 7, pieces=2) + rows_of("b", 5) + rows_of("a", 7, pieces=2, variant=1)
    samples = samples_from_rows(rows, LABELS, "ravdess8")
    floor = np.full(len(samples[0].speaker_z), 0.05)
    live = call_statistics(samples, floor, turns=3)
    assert [(s.key, s.variant, s.piece) for s in live] == [(s.key, s.variant, s.piece) for s in samples]  # same order
    # replay: speaker a's recorded clips in the fixed order, in calls of three clips (six utterances), each utterance
    # scored by a fresh StreamContexts / SpeakerProsodyStats per call, as the scorer and the session do
    mine = [s for s in live if s.bundle.speaker_id == "a" and s.variant == 0]
    clips = sorted({s.key for s in mine}, key=lambda key: hashlib.sha1(key.encode()).hexdigest())
    assert clips != sorted(clips)  # not the keys' order (a corpus sorted by name groups its emotions)
    replayed = 0
    for call in range(3):
        contexts, prosody = StreamContexts(), SpeakerProsodyStats()
        for key in clips[3 * call : 3 * call + 3]:
            for piece in (0, 1):
                sample = next(s for s in mine if s.key == key and s.piece == piece)
                expected, _ = contexts.speaker_z(sample.bundle, floor)
                if expected is None:
                    assert sample.speaker_z is None  # a call's first two utterances have no statistics, as live
                else:
                    np.testing.assert_allclose(sample.speaker_z, expected, rtol=1e-6)
                assert sample.bundle.prosody_z == pytest.approx(prosody.z(sample.bundle.prosody), nan_ok=True)
                prosody.add(sample.bundle.prosody)
                replayed += 1
    assert replayed == 14
    assert sum(s.speaker_z is None for s in mine) == 2 * 3  # three calls (3 + 3 + 1 clips), two utterances each
    assert sum(s.speaker_z is None for s in live if s.variant == 1) == 2 * 3  # the copies are calls of their own
    assert sum(s.speaker_z is None for s in live if s.bundle.speaker_id == "b") == 2 * 2
    assert all(s.speaker_z is not None for s in samples)  # whole-speaker statistics had every one


# -- live-cut rows are the live session's utterances --------------------------------------------------------------

@pytest.mark.slow
def test_live_cut_rows_are_what_the_backfill_session_cuts(shared_data: Path) -> None:
    """The same two real clips, through the training extraction with live_cut and through the spine the backfill's
    stream actors and `emostream analyze` run (perceive, StreamSessions, encode): the same utterances, edges and
    features. The live job's session actors run the same StreamSession and encoders (test_live, test_spine)."""
    import torch

    from emostream.spine import Spine
    from emostream.training.features import FeatureExtractor

    torch.set_num_threads(1)
    settings = feature_settings(load_settings())
    extractor = FeatureExtractor(settings.model_dump_json(), Augment(live_cut=True, telephone_copies=1))
    spine = Spine(settings, voices=extractor.voices)
    for name in CLIPS:
        path = shared_data / "ravdess-speech-16k" / name
        example = Example(media=path, start=None, end=None, speaker="ravdess-x", label="angry", valence=None, arousal=None,
                          transcript=None, explanation=None, open_vocabulary=(), dataset="ravdess", key=path.stem)
        rows = extractor.extract(example)
        recorded = [r for r in rows if r["variant"] == 0]
        bundles = spine.file_utterances(path, stream_id=path.stem)
        assert len(recorded) == len(bundles) >= 1, name
        assert [(r["piece"], r["pieces"]) for r in recorded] == [(k, len(bundles)) for k in range(len(bundles))]
        for row, bundle in zip(recorded, bundles, strict=True):
            assert (row["start"], row["end"]) == (bundle.start, bundle.end)
            assert row["end"] - row["start"] >= settings.voice.min_utterance_seconds
            np.testing.assert_allclose(row["audio_embedding"], bundle.audio_embedding, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(row["speaker_embedding"], bundle.speaker_embedding, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(row["prosody"], bundle.prosody.as_array(), rtol=1e-5, atol=1e-6, equal_nan=True)
        # the whole clip is longer than what the live path cuts from it: its silences are not an utterance
        assert sum(r["end"] - r["start"] for r in recorded) < sf.info(path).duration
        # the telephone copy is cut too, and its features differ from the recorded clip's
        phone = [r for r in rows if r["variant"] == 1]
        assert phone and not np.allclose(phone[0]["audio_embedding"], recorded[0]["audio_embedding"])
