"""The feature cache is incremental: a file per block of examples, and a stopped extraction resumes with only
what is missing (hours of live-cut extraction must survive a stop), without cutting lost clips again."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emostream.settings import load_settings
from emostream.training import features
from emostream.training.datasets import read_ravdess
from emostream.training.features import Augment, cache_files, cached_keys, extract_features, read_features

pytestmark = pytest.mark.broker  # starts Ray: run in the loopback-only namespace like the broker tests

KEYS = ("03-01-01-01-01-01-16", "03-01-05-02-01-01-16", "03-01-04-01-02-01-16")  # actor 16: neutral, angry, sad


def test_a_stopped_extraction_resumes_with_only_the_missing_examples(
        tmp_path: Path, shared_data: Path, ray_local, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    examples = {e.key: e for e in read_ravdess(shared_data / "ravdess-speech-16k") if e.key in KEYS}
    first, second, third = (examples[key] for key in KEYS)
    monkeypatch.setattr(features, "EXAMPLES_PER_FILE", 1)
    folder = extract_features([first, second], load_settings(), tmp_path, workers=1, batch_size=1)
    done = cache_files(folder)
    assert len(done) == 2 and cached_keys(folder) == {first.key, second.key}  # a file per block, not one at the end

    # a job stopped while writing leaves a file without its footer: skipped, its example extracted again
    (folder / "stopped.parquet").write_bytes(done[1].read_bytes()[: done[1].stat().st_size // 2])
    done[1].unlink()
    with caplog.at_level(logging.WARNING, logger=features.__name__):
        assert cached_keys(folder) == {first.key}
    assert "stopped.parquet is unreadable" in caplog.text

    again = extract_features([first, second, third], load_settings(), tmp_path, workers=1, batch_size=1)
    assert again == folder
    new = [file for file in cache_files(folder) if file != done[0]]
    assert len(new) == 2  # only the two missing examples were extracted
    rows = read_features(folder)
    assert [row["key"] for row in rows] == sorted(KEYS)  # one row each: nothing extracted twice


def test_a_clip_the_live_cut_loses_is_marked_extracted_and_not_cut_again(
        tmp_path: Path, shared_data: Path, ray_local, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    spoken = next(e for e in read_ravdess(shared_data / "ravdess-speech-16k") if e.key == KEYS[0])
    hiss = np.random.default_rng(0).normal(0, 1e-4, 3 * 16000).astype(np.float32)  # no speech: the live path cuts nothing
    sf.write(tmp_path / "hiss.wav", hiss, 16000)
    silent = replace(spoken, media=tmp_path / "hiss.wav", key="hiss")
    monkeypatch.setattr(features, "EXAMPLES_PER_FILE", 2)  # both in one block: a marker beside real rows
    augment = Augment(live_cut=True)
    folder = extract_features([silent, spoken], load_settings(), tmp_path / "cache", augment, workers=1, batch_size=1)
    assert cached_keys(folder) == {"hiss", spoken.key}  # the lost clip counts as extracted
    rows = read_features(folder)
    assert {row["key"] for row in rows} == {spoken.key} and all(row["audio_embedding"] for row in rows)
    files = cache_files(folder)
    extract_features([silent, spoken], load_settings(), tmp_path / "cache", augment, workers=1, batch_size=1)
    assert cache_files(folder) == files  # nothing cut again
