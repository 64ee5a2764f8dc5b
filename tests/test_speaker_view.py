"""The scorer's two views of a voice: z-scored against the speaker's utterances so far, and standardised over the
training set; answers mix them by how many utterances the speaker's statistics hold."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from emostream.models.inputs import collate
from emostream.models.model import EmotionModel
from emostream.models.presets import tiny
from emostream.models.score import (
    SPEAKER_VIEW_PRIOR,
    EmotionScorer,
    StreamContexts,
    as_scored,
    speaker_floor,
    speaker_view_weight,
    standardised_view,
    views_forward,
)
from emostream.training.data import Sample, call_statistics
from emostream.training.evaluate import predict
from tests.model_helpers import random_bundle


@pytest.fixture
def model() -> EmotionModel:
    torch.manual_seed(0)
    return tiny().eval()


def test_the_weight_grows_with_the_statistics() -> None:
    assert speaker_view_weight(0) == 0.0
    assert speaker_view_weight(2) == pytest.approx(2 / (2 + SPEAKER_VIEW_PRIOR))
    weights = [speaker_view_weight(n) for n in range(2, 60)]
    assert weights == sorted(weights) and 0.5 < weights[-1] < 1
    assert speaker_view_weight(2, prior=0) == 1.0  # the rule before the mix: statistics trusted at once


@torch.inference_mode()
def test_views_forward_mixes_the_two_answers_geometrically(model: EmotionModel) -> None:
    bundles = [random_bundle(seed=i) for i in range(3)]
    z = [np.random.default_rng(i).normal(size=model.config.voice_features).astype(np.float32) for i in range(2)] + [None]
    inputs = collate(bundles, model.config, speaker_z=z)  # the third utterance's speaker has no statistics yet
    normalised, standard = model(inputs), model(standardised_view(inputs))
    assert not torch.allclose(normalised.probabilities[:2], standard.probabilities[:2])  # the views differ
    torch.testing.assert_close(normalised.probabilities[2], standard.probabilities[2])  # ... unless there is no z
    mixed = views_forward(model, inputs, torch.tensor([0.5, 0.0, 0.5]))
    expected = (normalised.probabilities[0] * standard.probabilities[0]).sqrt()
    torch.testing.assert_close(mixed.probabilities[0], expected / expected.sum())
    torch.testing.assert_close(mixed.probabilities[1], standard.probabilities[1])  # weight 0: the standardised view
    torch.testing.assert_close(mixed.probabilities[2], normalised.probabilities[2])
    torch.testing.assert_close(mixed.valence[0], (normalised.valence[0] + standard.valence[0]) / 2)
    torch.testing.assert_close(mixed.memory, normalised.memory)  # the stream remembers the speaker-normalised view
    whole = views_forward(model, inputs, torch.ones(3))  # full trust: one pass, the speaker-normalised answer
    torch.testing.assert_close(whole.probabilities, normalised.probabilities)


@torch.inference_mode()
def test_the_scorer_leans_on_a_speakers_statistics_as_they_grow(model: EmotionModel) -> None:
    """A speaker's third utterance (two before it: statistics exist) is scored by the mix at 2 / (2 + prior)."""
    scorer = EmotionScorer(model, "tiny", "test")
    earlier = [replace(random_bundle(seed=i, face=False, frames=False), speaker_id="agent", start=2.0 * i, end=2.0 * i + 1)
               for i in range(2)]
    third = replace(random_bundle(seed=7, face=False, frames=False), speaker_id="agent", start=10.0, end=11.0)
    contexts = StreamContexts()
    scorer.score(earlier, contexts)
    before = copy.deepcopy(contexts)
    event = scorer.score([third], contexts)[0]

    z, earlier = before.speaker_z(third, speaker_floor(model))
    assert earlier == 2
    inputs = as_scored(collate([third], model.config, speaker_z=[z]), model.config)
    memory, memory_mask = before.get(third.stream_id, model)
    for prior, same in ((SPEAKER_VIEW_PRIOR, True), (0.0, False)):
        weight = torch.tensor([speaker_view_weight(2, prior)])
        expected = views_forward(model, inputs, weight, memory[None], memory_mask[None]).probabilities[0]
        got = torch.tensor([event.probabilities[label] for label in model.config.labels])
        assert torch.allclose(got, expected, atol=1e-5) == same


def test_call_statistics_record_how_many_utterances_came_before(model: EmotionModel) -> None:
    bundles = [replace(random_bundle(seed=i, face=False, frames=False), speaker_id="s1") for i in range(5)]
    samples = [Sample(b, None, 0, 0.0, 0.0, f"clip-{i}", 0) for i, b in enumerate(bundles)]
    called = call_statistics(samples, np.full(model.config.voice_features, 1e-3), turns=12)
    assert sorted(s.speaker_count for s in called) == [0, 1, 2, 3, 4]
    assert all((s.speaker_z is None) == (s.speaker_count < 2) for s in called)
    without_mix = predict(model, called, prior=0)[0]
    with_mix = predict(model, called)[0]
    late = [i for i, s in enumerate(called) if s.speaker_count >= 2]
    early = [i for i, s in enumerate(called) if s.speaker_count < 2]
    np.testing.assert_allclose(with_mix[early], without_mix[early], rtol=1e-5, atol=1e-6)
    assert not np.allclose(with_mix[late], without_mix[late])


# -- the site's statistics: the view without speaker statistics, standardised over what the scorer has scored ------

def shifted(bundle, offset: np.ndarray):  # type: ignore[no-untyped-def]
    """The bundle as another line or microphone would give it: every Whisper feature moved by `offset`."""
    return replace(bundle, audio_embedding=bundle.audio_embedding + offset)


@torch.inference_mode()
def test_site_statistics_standardise_the_voice_over_what_the_scorer_scored(model: EmotionModel) -> None:
    from emostream.models.inputs import voice_vector
    from emostream.models.score import SiteStatistics

    bundles = [random_bundle(seed=i, face=False, frames=False) for i in range(5)]
    inputs = collate(bundles[:2] + [random_bundle(seed=9, audio=False, face=False, frames=False)], model.config)
    site = SiteStatistics(model, after=3)
    site.add(bundles[:2])
    assert site.standardise(inputs) is inputs  # two utterances: still the training set's standardisation
    assert not site.known
    site.add(bundles[2:])
    assert site.known
    moved = site.standardise(inputs)
    vectors = np.stack([voice_vector(b) for b in bundles])
    std = np.maximum(vectors.std(axis=0, ddof=1), speaker_floor(model))
    adapter = model.audio_adapter
    got = (moved.voice[:2] - adapter.voice_mean) / adapter.voice_std  # what the model's standardisation reads
    np.testing.assert_allclose(got.numpy(), (vectors[:2] - vectors.mean(axis=0)) / std, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(moved.voice[2], inputs.voice[2])  # no audio: nothing to move
    assert SiteStatistics(model, after=0).standardise(inputs) is inputs  # 0: off


@torch.inference_mode()
def test_a_new_line_that_moves_every_voice_feature_gives_the_same_first_answers_once_the_site_is_known(
        model: EmotionModel) -> None:
    """A site whose line adds the same offset to every Whisper feature: once the scorer has scored enough of it, a new
    speaker's first utterance (no statistics of their own) gets the answer it would get on the original line.
    Standardised over the training set instead, the offset changes the answer."""
    offset = np.random.default_rng(1).normal(0, 2.0, 768).astype(np.float32)
    site = [replace(random_bundle(seed=i, face=False, frames=False), stream_id=f"call-{i}") for i in range(6)]
    newcomer = replace(random_bundle(seed=42, face=False, frames=False), stream_id="call-new")

    def first_answer(after: int, move: np.ndarray) -> np.ndarray:
        scorer = EmotionScorer(model, "tiny", "test", site_after=after)
        for bundle in site:
            scorer.score([shifted(bundle, move)], StreamContexts())
        event = scorer.score([shifted(newcomer, move)], StreamContexts())[0]
        return np.array([event.probabilities[label] for label in model.config.labels])

    zero = np.zeros_like(offset)
    np.testing.assert_allclose(first_answer(5, offset), first_answer(5, zero), atol=1e-5)
    assert not np.allclose(first_answer(0, offset), first_answer(0, zero), atol=1e-3)
