"""How the live expression crop frames FER+ faces: accuracy (and UAR) of both face experts by crop margin.

The live analyser aligns each face to the ArcFace template with a margin around it (`analyze.EXPRESSION_MARGIN`)
and feeds that crop to the expression network, which was trained on FER's own 48x48 framing. Here each
majority-labelled FER+ face of a split is shown as a frame would show it (`face_data.as_frame`: enlarged 4x, its
border replicated), found and meshed as the analyser finds faces (`FaceAnalyzer.largest_face`), and cut at each
margin; the faces found are also scored resized whole, as `emostream evaluate --faces SPLIT.npz` scores them.
Choose the margin on valid; read test once. Figures are printed, never asserted.
Run: .venv/bin/python bench/face_crop.py --split ../shared/data/ferplus/valid.npz [--margins -0.1,-0.05,0,0.05,0.1]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from emostream.perception.faces.analyze import EXPRESSION_MARGIN, FaceAnalyzer
from emostream.perception.faces.expression import ExpressionModel
from emostream.settings import FaceSettings
from emostream.training.face_data import live_crops, majority_labels, read_ferplus, to_network_input

EXPERTS = ("fer2013", "ferplus")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, required=True, help="a FER+ split file, e.g. ../shared/data/ferplus/valid.npz")
    parser.add_argument("--margins", default="-0.1,-0.05,0,0.05,0.1", help="comma-separated crop margins")
    args = parser.parse_args()
    torch.set_num_threads(1)
    margins = [float(m) for m in args.margins.split(",")]
    images, votes = read_ferplus(args.split)
    labels = majority_labels(votes)
    experts = {name: ExpressionModel.load(name) for name in EXPERTS}
    analyzer = FaceAnalyzer(FaceSettings(), expression=experts["fer2013"])
    started = time.perf_counter()
    kept = np.flatnonzero(labels >= 0)
    found, crops = live_crops(images[kept], analyzer.largest_face, margins)
    truth, whole = labels[kept][found], to_network_input(images[kept][found])
    print(f"# face crop bench: {platform.machine()}, {args.split.name}: {len(found)} of {len(kept)} "
          f"majority-labelled faces found in their frames ({time.perf_counter() - started:.0f} s); live margin "
          f"{EXPRESSION_MARGIN:g}")
    print("expert    resized whole  " + "  ".join(f"   margin {m:+.2f}" for m in margins) + "   (UAR)")
    for name, model in experts.items():
        def scores(faces: np.ndarray, model: ExpressionModel = model) -> str:
            """Accuracy (UAR over the classes present) of the model's answers."""
            right = model(faces).probabilities_in("ferplus8").argmax(axis=1) == truth
            uar = np.mean([right[truth == c].mean() for c in np.unique(truth)])
            return f"{right.mean():.1%} ({uar:.1%})"

        print(f"{name:8s}  {scores(whole):>13s}  " + "  ".join(f"{scores(crops[m]):>15s}" for m in margins))


if __name__ == "__main__":
    main()
