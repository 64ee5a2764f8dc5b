"""The emotion model on the tiny preset: shapes, modality subsets, memory, save/load, freezing, the LLM path."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from emostream.contracts import UtteranceEmotionEvent
from emostream.models.inputs import collate
from emostream.models.llm import add_lora, bundled_tokenizer, generate, language_loss
from emostream.models.model import EmotionEnsemble, EmotionModel
from emostream.models.presets import load_model, tiny
from emostream.models.score import EmotionScorer, StreamContexts
from tests.model_helpers import random_bundle


@pytest.fixture
def model() -> EmotionModel:
    torch.manual_seed(0)
    return tiny().eval()


def test_shapes_through_every_block(model: EmotionModel) -> None:
    config = model.config
    bundles = [random_bundle(seed=i, face_frames=5 + 7 * i) for i in range(3)]  # different lengths
    inputs = collate(bundles, config)
    assert inputs.face.shape == (3, 16, 146) and inputs.face_mask.sum(1).tolist() == [5, 12, 16]  # capped at max_face_frames
    visual, visual_mask = model.visual_encoder(inputs)
    assert visual.shape == (3, 16 + config.max_frames, config.hidden_size) and visual_mask.shape == visual.shape[:2]
    memory, memory_mask = model.empty_memory(3)
    queries = model.qformer(visual, visual_mask, memory, memory_mask)
    assert queries.shape == (3, config.num_queries, config.hidden_size)
    assert model.audio_adapter(inputs).shape == (3, config.audio_tokens, config.hidden_size)
    output = model(inputs)
    assert output.logits.shape == output.probabilities.shape == (3, len(config.labels))
    torch.testing.assert_close(output.probabilities.sum(1), torch.ones(3))
    assert output.valence.shape == output.arousal.shape == (3,) and output.valence.abs().max() <= 1
    assert output.memory.shape == (3, config.memory_size, config.hidden_size) and output.memory_mask[:, -1].all()


def test_voice_read_out_is_its_own_expert_and_silent_without_audio(model: EmotionModel) -> None:
    inputs = collate([random_bundle(seed=1), random_bundle(seed=2, audio=False)], model.config)
    output = model(inputs)
    expected = model.voice_head(model.audio_adapter.voice_features(inputs))[0]
    torch.testing.assert_close(output.voice_logits[0], expected)  # the logits training puts a loss on of its own
    assert output.voice_logits[0].abs().sum() > 0 and not output.voice_logits[1].any()


@pytest.mark.parametrize("audio,face,frames,text", [m for m in itertools.product([False, True], repeat=4) if any(m)])
def test_every_modality_subset(model: EmotionModel, audio: bool, face: bool, frames: bool, text: bool) -> None:
    bundles = [random_bundle(seed=1, audio=audio, face=face, frames=frames, text=text), random_bundle(seed=2)]
    output = model(collate(bundles, model.config))
    assert torch.isfinite(output.probabilities).all() and torch.isfinite(output.valence).all()
    alone = model(collate(bundles[:1], model.config))
    torch.testing.assert_close(alone.probabilities[0], output.probabilities[0], atol=1e-5, rtol=1e-4)  # padding changes nothing


def test_missing_modality_is_really_ignored(model: EmotionModel) -> None:
    a = random_bundle(seed=3, text=False)
    b = random_bundle(seed=3, text=False)
    object.__setattr__(b, "text_embedding", a.text_embedding)  # same (absent) text: identical
    different = random_bundle(seed=3, text=False)
    object.__setattr__(different, "transcript", None)
    object.__setattr__(different, "text_embedding", torch.randn(384).numpy())  # an embedding without a transcript is not text
    outputs = model(collate([a, different], model.config))
    torch.testing.assert_close(outputs.probabilities[0], outputs.probabilities[1])


def test_context_memory_changes_a_later_utterance(model: EmotionModel) -> None:
    scorer = EmotionScorer(model, "tiny", "test")
    later = random_bundle("call", start=10.0, seed=5)
    fresh = scorer.score([later], StreamContexts())[0]
    contexts = StreamContexts()
    scorer.score([random_bundle("call", start=0.0, seed=6), random_bundle("call", start=4.0, seed=7)], contexts)
    remembered = scorer.score([later], contexts)[0]
    assert remembered.probabilities != fresh.probabilities
    # other streams keep their own memory
    assert scorer.score([random_bundle("other", start=10.0, seed=5)], contexts)[0].probabilities == fresh.probabilities


def test_save_and_load_give_identical_outputs(model: EmotionModel, tmp_path: Path) -> None:
    inputs = collate([random_bundle(seed=i) for i in range(2)], model.config)
    model.save_pretrained(tmp_path / "tiny")
    loaded = load_model(tmp_path / "tiny").eval()
    torch.testing.assert_close(loaded(inputs).probabilities, model(inputs).probabilities, rtol=0, atol=0)
    assert loaded.config.labels == model.config.labels
    with pytest.raises(FileNotFoundError, match="expected a preset"):
        load_model(tmp_path / "nothing-here")


def test_an_ensemble_averages_its_members_and_each_keeps_its_own_memory(tmp_path: Path) -> None:
    torch.manual_seed(0)
    members = [tiny().eval() for _ in range(3)]
    ensemble = EmotionEnsemble.of(members).eval()
    earlier, later = random_bundle("call", start=0.0, seed=6), random_bundle("call", start=4.0, seed=7)
    first, second = collate([earlier], ensemble.config), collate([later], ensemble.config)
    with torch.no_grad():
        output = ensemble(first)
        alone = [member(first) for member in members]
        torch.testing.assert_close(output.probabilities, torch.stack([o.probabilities for o in alone]).mean(0))
        torch.testing.assert_close(output.valence, torch.stack([o.valence for o in alone]).mean(0))
        # the second utterance: each member reads the memory it wrote itself
        expected = torch.stack([m(second, o.memory, o.memory_mask).probabilities for m, o in zip(members, alone, strict=True)]).mean(0)
        torch.testing.assert_close(ensemble(second, output.memory, output.memory_mask).probabilities, expected)
    assert output.memory.shape == (1, 3, ensemble.config.memory_size, ensemble.config.hidden_size)
    ensemble.config.words_carry_emotion = True  # as the model read them above (the scorer masks untrained words)
    events = EmotionScorer(ensemble, "tiny", "test").score([earlier, later], StreamContexts())
    for event, probabilities in zip(events, (output.probabilities[0], expected[0]), strict=True):
        assert list(event.probabilities.values()) == pytest.approx(probabilities.tolist(), abs=1e-6)
    ensemble.save_pretrained(tmp_path / "ensemble")
    loaded = load_model(tmp_path / "ensemble").eval()
    assert isinstance(loaded, EmotionEnsemble) and len(loaded.members) == 3
    torch.testing.assert_close(loaded(first).probabilities, output.probabilities, rtol=0, atol=0)


def test_an_ensemble_needs_one_architecture_and_one_training_set() -> None:
    torch.manual_seed(0)
    other_data = tiny()
    other_data.audio_adapter.voice_mean.fill_(0.5)
    with pytest.raises(ValueError, match="voice statistics differ"):
        EmotionEnsemble.of([tiny(), other_data])
    with pytest.raises(ValueError, match="one configuration"):
        EmotionEnsemble.of([tiny(), tiny("mer2023_6")])
    with pytest.raises(ValueError, match="language model"):
        EmotionEnsemble.of([tiny(llm=True), tiny(llm=True)])


def test_frozen_encoders_get_no_gradients() -> None:
    torch.manual_seed(0)
    model = tiny(llm=True).train()
    frozen = [model.visual_encoder.frame_encoder, model.language_model]
    for part in frozen:
        part.requires_grad_(False)
    tokenizer = bundled_tokenizer()
    inputs = collate([random_bundle(seed=i) for i in range(2)], model.config)
    output = model(inputs)
    loss = output.logits.logsumexp(1).mean() + language_loss(model, output, tokenizer, ["hello", None], ["calm; steady voice"] * 2)
    loss.backward()
    for name, parameter in model.named_parameters():
        is_frozen = any(parameter is p for part in frozen for p in part.parameters())
        if is_frozen:
            assert parameter.grad is None, name
    trainable = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(n.startswith("qformer") for n in trainable) and any(n.startswith("llm_projection") for n in trainable)
    assert any(n.startswith("visual_encoder.local_in") for n in trainable)


def test_llm_path_generates_with_the_real_tokenizer() -> None:
    torch.manual_seed(0)
    model = tiny(llm=True).eval()
    tokenizer = bundled_tokenizer()
    bundles = [random_bundle(seed=1), random_bundle(seed=2, text=False, face=False)]
    output = model(collate(bundles, model.config))
    texts = generate(model, output, tokenizer, [b.transcript for b in bundles], max_new_tokens=8)
    assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)
    events = EmotionScorer(model, "tiny-llm", "test", tokenizer, max_new_tokens=8).score(bundles, StreamContexts())
    assert all(isinstance(e, UtteranceEmotionEvent) and e.explanation for e in events)


def test_lora_trains_only_the_adapters_of_the_language_model() -> None:
    torch.manual_seed(0)
    model = add_lora(tiny(llm=True).train(), rank=2)
    tokenizer = bundled_tokenizer()
    output = model(collate([random_bundle(seed=1)], model.config))
    language_loss(model, output, tokenizer, ["hello"], ["calm; steady voice"]).backward()
    lm_grads = {n for n, p in model.language_model.named_parameters() if p.grad is not None}
    assert lm_grads and all("lora_" in n for n in lm_grads)


def test_scores_are_schema_valid_events(model: EmotionModel) -> None:
    bundles = [random_bundle("a", start=0.0, seed=1), random_bundle("b", start=1.0, seed=2, face=False, frames=False)]
    events = EmotionScorer(model, "tiny", "test").score(bundles, StreamContexts())
    for event, bundle in zip(events, bundles, strict=True):
        again = UtteranceEmotionEvent.model_validate_json(event.model_dump_json())
        assert again.utterance_id == bundle.utterance_id and sum(again.probabilities.values()) == pytest.approx(1.0)
        assert again.label in again.explanation and again.cues
    assert {c.modality for c in events[1].cues} <= {"voice", "words"}  # no face, no face cues


def test_untrained_visual_tokens_can_be_kept_out() -> None:
    """lite was trained without video or stream memory: with visual_tokens off, neither changes its output."""
    torch.manual_seed(0)
    model = tiny().eval()
    model.config.visual_tokens = False
    with_face = random_bundle(seed=4)
    without = replace(with_face, face=None, frames=(), has_video=False)
    memory, mask = model.empty_memory(1)
    mask[:] = True
    memory = torch.randn_like(memory)
    plain = model(collate([without], model.config)).probabilities
    torch.testing.assert_close(model(collate([with_face], model.config)).probabilities, plain)
    torch.testing.assert_close(model(collate([without], model.config), memory, mask).probabilities, plain)


def test_scoring_skips_the_visual_path_it_keeps_out() -> None:
    """With visual_tokens off, inference never runs the visual encoder or the Q-Former, and gives what running them
    gives (training mode still runs them; this tiny model has no dropout, so both modes compute alike)."""
    torch.manual_seed(0)
    model = tiny()
    model.config.visual_tokens = False
    model.config.modality_dropout = 0.0
    inputs = collate([random_bundle(seed=4), random_bundle(seed=5, face_frames=3)], model.config)
    with torch.no_grad():
        computed = model.train()(inputs)
        model.eval()
        model.visual_encoder.forward = model.qformer.forward = pytest.fail  # any call fails the test
        skipped = model(inputs)
    torch.testing.assert_close(skipped.probabilities, computed.probabilities)
    torch.testing.assert_close(skipped.valence, computed.valence)
    memory, mask = model.empty_memory(2)
    torch.testing.assert_close(skipped.memory, memory)  # nothing visual to remember
    assert not skipped.memory_mask.any() and computed.memory_mask[:, -1].all()
