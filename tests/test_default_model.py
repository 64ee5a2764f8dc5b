"""The embedded default model: its card states its training's CV, and it scores real utterances with grounded explanations."""

from __future__ import annotations

import json
from pathlib import Path

from emostream.contracts import UtteranceEmotionEvent
from emostream.models.presets import DEFAULT_CHECKPOINT
from emostream.models.score import StreamContexts, default_scorer
from emostream.settings import load_settings
from emostream.training.train import load_train_config

ROOT = Path(__file__).resolve().parent.parent


def test_the_default_is_what_its_recipe_exports_and_records_what_it_reads() -> None:
    """The default trained on every speaker of the three corpora, so it has no held-out figures of its own: the
    card's figures are its recipe's cross-validation (bench/cv.py). What a test can hold it to: the checkpoint is the
    export of deployments/train-lite.yaml, records the Whisper features serving must give it, and states (uncalibrated)
    the temperature the card says it has. A recipe with calibration_folds would also leave cv.json beside it."""
    recipe = load_train_config(ROOT / "deployments" / "train-lite.yaml")
    assert (ROOT / recipe.export).resolve() == DEFAULT_CHECKPOINT.resolve()
    corpora = {corpus.dataset for corpus in [recipe.data, *recipe.data.more_corpora]}
    assert not recipe.data.validation_speakers and corpora == {"ravdess", "tess", "emodb"}
    config = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    assert config["audio_features"] == "every_layer" and config["audio_embedding"] == recipe.preset_arguments["audio_embedding"]
    assert config["ensemble_size"] == recipe.ensemble_size
    card = (DEFAULT_CHECKPOINT / "MODEL_CARD.md").read_text()
    if recipe.calibration_folds:
        cv = json.loads((DEFAULT_CHECKPOINT / "cv.json").read_text())
        assert config["calibration_temperature"] == cv["temperature"] and f"T = {cv['temperature']:.2f}" in card
        for figures in [cv["pooled"], *cv["per_corpus"].values()]:  # the card states what the fold models measured
            stated = f"{100 * figures['war']:.1f}% / {100 * figures['uar']:.1f}% / {figures['ece']:.3f} → {figures['ece_calibrated']:.3f}"
            assert stated in card, stated
        assert sorted(speaker for fold in cv["folds"] for speaker in fold) == sorted(set().union(*map(set, cv["folds"])))
    else:
        assert config.get("calibration_temperature", 1.0) == 1.0 and "`calibration_temperature` is 1 (uncalibrated)" in card
    assert "86.7% / 86.4% / 0.057" in card  # the chosen recipe's probe CV over six speaker folds (bench/cv.py)


def test_default_model_scores_real_utterances_with_measured_cues(librivox: list[Path], make_spine) -> None:  # type: ignore[no-untyped-def]
    spine = make_spine(load_settings())
    bundles = [b for clip in librivox[:3] for b in spine.file_utterances(clip, stream_id="reading")]
    scorer = default_scorer()
    contexts = StreamContexts()
    events = scorer.score(bundles, contexts)
    assert len(events) == len(bundles) == 3
    for event, bundle in zip(events, bundles, strict=True):
        again = UtteranceEmotionEvent.model_validate_json(event.model_dump_json())
        assert again.model.name == "emostream-lite-ravdess" and again.transcript == bundle.transcript
        assert again.label in again.explanation
        quoted = [cue.detail for cue in again.cues if cue.detail in again.explanation]
        # the explanation quotes measured cues; with none notable it names the modality (the words are not trained on)
        assert quoted or "mostly from the voice" in again.explanation, (again.explanation, [c.detail for c in again.cues])
        assert -1 <= again.valence <= 1 and -1 <= again.arousal <= 1
