"""bench/calls.py: calls assembled from labelled clips, run through the backfill path, turns matched to events."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.calls import assemble_call, call_figures, plan_calls, run_calls
from emostream.labels import LABEL_SETS
from emostream.training.train import CorpusConfig, read_corpus


def ravdess(shared_data: Path):  # type: ignore[no-untyped-def]
    return read_corpus(CorpusConfig(dataset="ravdess", path=shared_data / "ravdess-speech-16k"), "ravdess8")


def test_a_call_puts_each_speaker_on_its_own_channel_and_the_phone_copy_loses_the_upper_band(shared_data: Path, tmp_path: Path) -> None:
    (agent, customer), = plan_calls(ravdess(shared_data), ["ravdess-15", "ravdess-16"], turns=2)
    turns = assemble_call(agent, customer, tmp_path / "call.wav", gap=0.8)
    audio, rate = sf.read(tmp_path / "call.wav", always_2d=True)
    assert rate == 16000 and audio.shape[1] == 2 and [t.role for t in turns] == ["agent", "customer"] * 2
    for turn, following in zip(turns, turns[1:], strict=False):
        assert following.start - turn.end == pytest.approx(0.8, abs=1e-3)  # alternating, 0.8 s apart
    for turn in turns:
        own, other = (0, 1) if turn.role == "agent" else (1, 0)
        span = audio[int(turn.start * rate) : int(turn.end * rate)]
        assert np.abs(span[:, own]).max() > 0.01 and np.abs(span[:, other]).max() == 0  # silent on the other channel
    assemble_call(agent, customer, tmp_path / "phone.wav", gap=0.8, telephone=True)
    phone, _ = sf.read(tmp_path / "phone.wav", always_2d=True)

    def upper_band_share(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x[:, 0])) ** 2
        return float(spectrum[len(spectrum) // 2 + 50 :].sum() / spectrum.sum())  # above ~4 kHz

    assert upper_band_share(audio) > 100 * upper_band_share(phone)
    with pytest.raises(ValueError, match="even number"):
        plan_calls(ravdess(shared_data), ["ravdess-15"], turns=2)


@pytest.mark.broker  # starts Ray
@pytest.mark.slow  # a short call through the whole backfill pipeline (Whisper, the default model): minutes on busy cores
def test_a_call_through_backfill_accounts_for_every_turn(shared_data: Path, tmp_path: Path) -> None:
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    calls = plan_calls(ravdess(shared_data), ["ravdess-15", "ravdess-16"], turns=3)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results, labels = run_calls(calls, tmp_path, None, gap=0.8, telephone=False)
    finally:
        ray.shutdown()
    assert labels == list(LABEL_SETS["ravdess8"]) and len(results) == 6
    figures = call_figures(results, labels)
    assert figures.turns == 6 and figures.lost == sum(r.label is None for r in results) < 6
    assert 0 <= figures.right <= 1 and 0 < figures.confidence <= 1 and 0 <= figures.ece <= 1
    for result in results:
        assert result.label is None or result.label in labels
