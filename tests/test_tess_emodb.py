"""TESS and EmoDB readers (emostream.training.datasets): the real folders in ../shared/data, bad names in tmp_path."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from emostream.training.datasets import DatasetError, Example, read_emodb, read_tess
from emostream.training.train import DataConfig, read_dataset


def touch(path: Path) -> Path:
    """A dummy media file (readers only check that it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00not really media")
    return path


def by_key(examples: list[Example]) -> dict[str, Example]:
    return {example.key: example for example in examples}


# ---------------------------------------------------------------------------------------------------- TESS


def test_tess_real_folder(shared_data: Path) -> None:
    examples = read_tess(shared_data / "tess-16k")
    assert len(examples) == 1400
    assert Counter(e.speaker for e in examples) == {"tess-OAF": 700, "tess-YAF": 700}
    # seven classes of 200, all of them ravdess8 concepts (pleasant surprise = surprised); no calm
    assert Counter(e.label for e in examples) == {label: 200 for label in
                                                  ("angry", "disgust", "fearful", "happy", "neutral", "surprised", "sad")}
    named = by_key(examples)
    ps = named["OAF_back_ps"]
    assert ps.label == "surprised" and ps.speaker == "tess-OAF" and ps.media.parent.name == "OAF_Pleasant_surprise"
    assert ps.transcript == "Say the word back" and ps.media.is_file() and ps.dataset == "tess" and ps.whole_file
    assert named["YAF_base_ps"].label == "surprised" and named["YAF_base_ps"].media.parent.name == "YAF_pleasant_surprised"
    assert named["OAF_base_fear"].label == "fearful" and named["OAF_base_fear"].media.parent.name == "OAF_Fear"
    assert named["YAF_back_sad"].label == "sad" and named["YAF_back_sad"].speaker == "tess-YAF"
    assert (named["YAF_back_angry"].valence, named["YAF_back_angry"].arousal) == (-0.6, 0.8)


def test_tess_in_its_own_label_set_and_in_one_without_surprise(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    own = by_key(read_tess(shared_data / "tess-16k", "tess7"))
    assert own["OAF_back_ps"].label == "pleasant_surprise" and own["OAF_base_fear"].label == "fear"
    with caplog.at_level(logging.INFO, logger="emostream.training.datasets"):
        examples = read_tess(shared_data / "tess-16k", "emodb7")  # EmoDB has no surprise class
    unlabelled = [e for e in examples if e.label is None]
    assert len(examples) == 1400 and len(unlabelled) == 200 and all(e.key.endswith("_ps") for e in unlabelled)
    assert all((e.valence, e.arousal) == (0.2, 0.8) for e in unlabelled)  # surprised's anchor: kept, not relabelled
    assert "tess: no emodb7 class for 200 pleasant_surprise clips" in caplog.text


@pytest.mark.parametrize(
    ("folder", "name", "problem"),
    [
        ("OAF_angry", "OAF_back.flac", "is not a TESS name"),
        ("OAF_angry", "OAF_back_angry_2.flac", "is not a TESS name"),
        ("OAF_angry", "OAF_back_furious.flac", "unknown emotion 'furious'"),
        ("OAF_angry", "OAF_back_sad.flac", "(OAF, sad) inside folder OAF_angry (OAF, angry)"),
        ("YAF_Pleasant_surprise", "OAF_back_ps.flac", "(OAF, pleasant_surprise) inside folder YAF_Pleasant_surprise"),
    ],
)
def test_tess_file_it_cannot_label_is_an_error_naming_it(tmp_path: Path, folder: str, name: str, problem: str) -> None:
    touch(tmp_path / "OAF_angry" / "OAF_bite_angry.flac")
    bad = touch(tmp_path / folder / name)
    with pytest.raises(DatasetError) as caught:
        read_tess(tmp_path)
    assert str(bad) in str(caught.value) and problem in str(caught.value)


def test_tess_tmp_folder(tmp_path: Path) -> None:
    touch(tmp_path / "YAF_pleasant_surprised" / "YAF_bite_ps.wav")
    touch(tmp_path / "loose" / "OAF_dog_neutral.flac")  # outside a TESS folder: the file name alone labels it
    (tmp_path / "README.md").write_text("not media")
    examples = read_tess(tmp_path)
    assert [(e.key, e.speaker, e.label, e.transcript) for e in examples] == [  # sorted by path
        ("YAF_bite_ps", "tess-YAF", "surprised", "Say the word bite"),
        ("OAF_dog_neutral", "tess-OAF", "neutral", "Say the word dog"),
    ]
    with pytest.raises(DatasetError, match="TESS folder not found"):
        read_tess(tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown label set 'ravdess'"):
        read_tess(tmp_path, "ravdess")


# ---------------------------------------------------------------------------------------------------- EmoDB


def test_emodb_real_folder(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="emostream.training.datasets"):
        examples = read_emodb(shared_data / "emodb-16k")
    assert len(examples) == 535
    speakers = Counter(e.speaker for e in examples)
    assert set(speakers) == {f"emodb-{s}" for s in ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")}
    assert speakers["emodb-03"] == 49 and speakers["emodb-16"] == 71
    # ravdess8 has no boredom: those 81 clips keep no class, and the log says so; EmoDB has no calm, no surprise
    assert Counter(e.label for e in examples) == {"angry": 127, None: 81, "neutral": 79, "happy": 71, "fearful": 69, "sad": 62,
                                                  "disgust": 46}
    assert "emodb: no ravdess8 class for 81 boredom clips: kept without a class label" in caplog.text
    named = by_key(examples)
    assert named["03a01Fa"].label == "happy" and named["03a01Fa"].speaker == "emodb-03" and named["03a01Fa"].media.is_file()
    assert named["03a01Wa"].label == "angry" and named["03a02Ta"].label == "sad" and named["03a01Nc"].label == "neutral"
    assert named["03a04Ad"].label == "fearful"
    bored = named["03a04Lc"]
    assert bored.label is None and (bored.valence, bored.arousal) == (-0.4, -0.7) and bored.dataset == "emodb"
    assert bored.transcript is None  # German, and cut to 2.0 s in this copy: the full sentence is not what it says
    own = by_key(read_emodb(shared_data / "emodb-16k", "emodb7"))
    assert own["03a04Lc"].label == "boredom" and own["03a01Fa"].label == "happiness"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("03a01Xa.flac", "unknown emotion letter 'X'; allowed: W anger, L boredom"),
        ("04a01Wa.flac", "speaker 04 is not one of EmoDB's 03, 08"),
        ("03a01W.flac", "is not an EmoDB name SSTTTEV"),
        ("03a01wa.flac", "is not an EmoDB name SSTTTEV"),
        ("angry_clip.wav", "is not an EmoDB name SSTTTEV"),
    ],
)
def test_emodb_file_it_cannot_label_is_an_error_naming_it(tmp_path: Path, name: str, problem: str) -> None:
    touch(tmp_path / "03a01Wa.flac")
    bad = touch(tmp_path / name)
    with pytest.raises(DatasetError) as caught:
        read_emodb(tmp_path)
    assert str(bad) in str(caught.value) and problem in str(caught.value)


def test_emodb_tmp_folder(tmp_path: Path) -> None:
    touch(tmp_path / "16b10Tb.wav")
    touch(tmp_path / "08a02Ea.flac")
    (tmp_path / "notes.txt").write_text("not media")
    assert [(e.key, e.speaker, e.label) for e in read_emodb(tmp_path)] == [("08a02Ea", "emodb-08", "disgust"),
                                                                          ("16b10Tb", "emodb-16", "sad")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no media files"):
        read_emodb(empty)


# ---------------------------------------------------------------------------------------------------- training configs


def test_a_training_config_can_name_tess_and_emodb(shared_data: Path) -> None:
    tess = read_dataset(DataConfig(dataset="tess", path=shared_data / "tess-16k"), "ravdess8")
    emodb = read_dataset(DataConfig(dataset="emodb", path=shared_data / "emodb-16k"), "emodb7")
    assert len(tess) == 1400 and {e.dataset for e in tess} == {"tess"}
    assert len(emodb) == 535 and Counter(e.label for e in emodb)["boredom"] == 81
