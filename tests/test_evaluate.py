"""`emostream evaluate` on labelled recordings (issue 19): a corpus folder scored as the product scores it, each
recording one answer (the mean of the utterances the live path cut from it), with WAR, UAR, weighted F1, ECE and
the confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emostream.cli import main
from emostream.models.presets import DEFAULT_CHECKPOINT
from emostream.training.data import Sample
from emostream.training.evaluate import per_clip
from tests.model_helpers import random_bundle

TESS = ("OAF_angry/OAF_back_angry.flac", "OAF_happy/OAF_back_happy.flac", "OAF_Sad/OAF_back_sad.flac",
        "YAF_neutral/YAF_back_neutral.flac", "YAF_fear/YAF_back_fear.flac", "YAF_disgust/YAF_back_disgust.flac")


def sample(key: str, piece: int, label: int = 0) -> Sample:
    return Sample(bundle=random_bundle(seed=piece), speaker_z=None, label=label, valence=0.0,
                  arousal=0.0, key=key, variant=0, piece=piece)


def test_a_clip_cut_in_pieces_is_one_answer_the_mean_of_theirs() -> None:
    samples = [sample("a", 0), sample("a", 1), sample("b", 0, label=2)]
    probabilities = np.array([[0.9, 0.1, 0.0], [0.1, 0.5, 0.4], [0.0, 0.0, 1.0]])
    clips, (pooled,) = per_clip(samples, probabilities)
    assert [c.key for c in clips] == ["a", "b"] and [c.label for c in clips] == [0, 2]
    np.testing.assert_allclose(pooled, [[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]])
    clips, (pooled,) = per_clip([], np.zeros((0, 3)))
    assert clips == [] and pooled.shape == (0, 3)


@pytest.fixture(scope="module")
def tess_sample(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six labelled TESS recordings, one per emotion, in the corpus's own layout (links, not copies)."""
    folder = tmp_path_factory.mktemp("tess")
    for name in TESS:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).symlink_to(shared_data / "tess-16k" / name)
    return folder


def test_evaluate_scores_a_labelled_folder_as_the_live_path_cuts_it(
        tess_sample: Path, tmp_path: Path, ray_local, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "eval"
    assert main(["evaluate", str(tess_sample), "--dataset", "tess", "--cache", str(tmp_path / "cache"),
                 "--out", str(out), "--cpus", "2"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if "labelled recordings" in line)
    assert header.startswith("6 labelled recordings of 2 speakers, cut as the live path cuts them (as recorded)")
    lost = int(header.split(" lost")[0].rsplit(" ", 1)[1])
    for regime in ("batch", "live"):
        metrics = json.loads((out / regime / "metrics.json").read_text())
        assert metrics["count"] == 6 - lost == np.sum(metrics["confusion"])
        assert 0 <= metrics["ece"] <= 1 and 1 / 8 <= metrics["mean_confidence"] <= 1
        assert set(metrics["per_class_recall"]) <= {"neutral", "happy", "sad", "angry", "fearful", "disgust"}
        assert (out / regime / "confusion.png").is_file()
    assert printed.count("ECE") == 2 and printed.count("confusion (rows: truth") == 2
    # the default model trained on these speakers: most of its answers are right (chance is 1 in 8)
    assert json.loads((out / "batch" / "metrics.json").read_text())["war"] >= 0.5


def test_evaluate_scores_whole_recordings_and_the_phone_line_when_asked(
        tess_sample: Path, tmp_path: Path, ray_local, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    assert main(["evaluate", str(tess_sample), "--dataset", "tess", "--speakers", "tess-OAF", "--whole-clips",
                 "--cache", str(cache)]) == 0
    assert "3 labelled recordings of 1 speakers, each scored whole (as recorded)" in capsys.readouterr().out
    assert main(["evaluate", str(tess_sample), "--dataset", "tess", "--speakers", "tess-OAF", "--telephone",
                 "--cache", str(cache)]) == 0
    assert "3 labelled recordings of 1 speakers, cut as the live path cuts them (after an 8 kHz phone line)" in \
        capsys.readouterr().out
    assert len(list(cache.iterdir())) == 2  # whole and phone-line features are cached apart


def test_evaluate_reads_a_training_configs_validation_speakers(
        tess_sample: Path, tmp_path: Path, ray_local, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "train.yaml"
    config.write_text(f"preset: lite\nlabel_set: ravdess8\ndata:\n  dataset: tess\n  path: {tess_sample}\n"
                      f"  validation_speakers: [tess-YAF]\nfeature_cache: {tmp_path / 'cache'}\nexport: {tmp_path / 'none'}\n"
                      "stages: [{name: all, epochs: 1}]\n")
    assert main(["evaluate", str(config), "--model", str(DEFAULT_CHECKPOINT)]) == 0
    assert "3 labelled recordings of 1 speakers, cut as the live path cuts them" in capsys.readouterr().out


def test_evaluate_names_what_is_missing(tess_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tess_sample)]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main(["evaluate", str(tess_sample), "--dataset", "emodb"]) == 1
    error = capsys.readouterr().err  # the reader names a file it cannot label
    assert "is not an EmoDB name" in error and str(tess_sample) in error
    assert main(["evaluate", str(tess_sample), "--dataset", "tess", "--speakers", "tess-XYZ"]) == 2
    assert "tess-XYZ" in capsys.readouterr().err
    config = tmp_path / "train.yaml"
    config.write_text(f"data:\n  dataset: tess\n  path: {tess_sample}\nstages: [{{name: all, epochs: 1}}]\n")
    assert main(["evaluate", str(config), "--dataset", "emodb"]) == 2  # a config names its own readers
    assert "is a training config" in capsys.readouterr().err
