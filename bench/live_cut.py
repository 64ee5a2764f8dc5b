"""What the live cut keeps of labelled clips: how many it loses (no utterance) or splits, as recorded and on the phone line.

Each clip goes through the live path's segmentation exactly as the default recipe's feature extraction cuts it
(`features.live_cut`: a fresh StreamSession, VAD, merge gap, Smart Turn, edge tightening, minimum length): the clip
as recorded (the cache's variant 0) and its first telephone copy (variant 1: a noisy 8 kHz mu-law line, the same
random copy as the extraction's, from the recipe's seed). No Whisper, no model, no Ray: only the cut (all 2,934
labelled clips, both lines: 21 minutes at nice 19 on two cores shared with a memory soak, 2026-12-05). Prints
the counts per line and the keys of the lost clips; `--out` also writes one JSON line per clip and line (key,
pieces, seconds kept) to compare two versions of the cut. From the project root:
    nice -n 19 .venv/bin/python bench/live_cut.py --out /tmp/cut.jsonl
    nice -n 19 .venv/bin/python bench/live_cut.py --keys 03-01-05-02-02-01-14 03-01-06-02-01-01-06
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from emostream.labels import LABEL_SETS  # noqa: E402
from emostream.perception.segment import SegmentPerceiver  # noqa: E402
from emostream.perception.voice.speakers import VoiceEmbedder  # noqa: E402
from emostream.settings import load_settings  # noqa: E402
from emostream.training.features import example_rng, live_cut, span_segments, telephoned  # noqa: E402
from emostream.training.train import load_train_config, read_dataset  # noqa: E402

RECIPE = Path(__file__).resolve().parent.parent / "deployments" / "train-lite.yaml"
LINES = ("16 kHz", "8 kHz line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="the live recipe: its corpora, seed and phone line")
    parser.add_argument("--keys", nargs="+", help="only these clips (default: every labelled clip of the recipe)")
    parser.add_argument("--out", type=Path, help="one JSON line per clip and line")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_train_config(args.recipe)
    if config.augment.telephone_copies < 1:
        raise SystemExit(f"{args.recipe} has no telephone copies (data.telephone_copies): the 8 kHz line needs one")
    if config.augment.copies:
        raise SystemExit(f"{args.recipe} has augmented copies: the extraction's telephone copy is not its generator's "
                         "first draw then, and this bench would cut another one")
    labels = LABEL_SETS[config.label_set]
    examples = [e for e in read_dataset(config.data, config.label_set) if e.label in labels]
    if args.keys:
        examples = [e for e in examples if e.key in set(args.keys)]
        if missing := set(args.keys) - {e.key for e in examples}:
            raise SystemExit(f"no labelled clip {sorted(missing)} in {args.recipe}'s corpora")
    settings = load_settings()
    perceive, voices = SegmentPerceiver(settings), VoiceEmbedder()
    lost: dict[str, list[str]] = {line: [] for line in LINES}
    split = dict.fromkeys(LINES, 0)
    out = args.out.open("w") if args.out else None
    for number, example in enumerate(examples, start=1):
        segments, span = span_segments(example, settings)
        # the extraction's first telephone copy: the first draw of the example's generator (no augmented copies)
        phone = telephoned(segments, example_rng(config.augment, example.key), config.augment, span)
        for line, parts in zip(LINES, (segments, phone), strict=True):
            cut = live_cut(parts, span, settings, perceive, voices, example.key)
            if not cut:
                lost[line].append(example.key)
            split[line] += len(cut) > 1
            if out:
                out.write(json.dumps({"key": example.key, "dataset": example.dataset, "line": line, "pieces": len(cut),
                                      "seconds": round(sum(b.end - b.start for b in cut), 3)}) + "\n")
        if number % 100 == 0:
            print(f"# {number} of {len(examples)} clips: " + "; ".join(f"{line} {len(lost[line])} lost, {split[line]} split"
                                                                       for line in LINES), flush=True)
    print(f"{len(examples)} labelled clips through the live cut ({args.recipe.name}'s corpora)")
    for line in LINES:
        print(f"{line}: {len(lost[line])} lost, {split[line]} split; lost: {' '.join(lost[line]) or '-'}")


if __name__ == "__main__":
    main()
