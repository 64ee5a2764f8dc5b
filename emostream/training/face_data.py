"""Labelled face images for the face expert: FER+ splits (.npz) and folders of images, as live-style inputs.

FER+ votes
----------
Each FER+ image (`../shared/data/ferplus/<split>.npz`: `images` N x 48 x 48 uint8 grey, `votes` N x 10) has
ten raters' votes over neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown and
NF (not a face). Two readings of them, both in the FERPLUS8 label set (the eight emotions, contempt a class
of its own):

- **Soft targets** (training, `vote_distribution`): the emotion votes renormalised to sum to 1; "unknown"
  votes are dropped (a rater who could not tell says nothing about which emotion it is). An image is left
  out when "not a face" has the most votes (ties included) or no rater chose an emotion.
- **Majority labels** (evaluation, `majority_labels`): the rule of FER+'s reference code (Microsoft/FERPlus,
  `ferplus.py`, `_process_target`, mode "majority"): votes of a single rater are dropped as outliers, then
  the top class must hold more than half of the remaining votes; the image is left out when there is no
  such majority or when it is "unknown" or "not a face". Accuracy on these images is what FER+ papers call
  majority-vote accuracy.

Live-style inputs
-----------------
Live, a face is aligned into a 64 x 64 grey crop (align.grey_faces: warped at a resolution no coarser than the
face's own, then area-averaged down, so a large face does not alias) and fed to the network. Given the live
analyser (its `expression_crop` for photos, its `largest_face` for FER+ faces), every labelled image is read that
way: a photo's largest face is found and aligned exactly as live frames are, and a FER+ 48 x 48 face is first shown
as a frame would show it (`as_frame`, `live_crops`). Without it, or where no face is found (a tight crop can hide
one from the detector), an image is taken as a face crop already and brought to 64 x 64 (`to_network_input`:
bilinear, cv2.INTER_LINEAR, when enlarging, as `fer` itself resizes its crops; INTER_AREA when shrinking,
align.grey_faces' choice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emostream.labels import FERPLUS8, label_set, parse_label
from emostream.perception.faces.analyze import EXPRESSION_MARGIN, expression_crops
from emostream.perception.faces.expression import INPUT_SIZE

VOTE_COLUMNS = (*FERPLUS8, "unknown", "not-a-face")  # the 10 columns of FER+'s `votes`, in order
UNKNOWN, NOT_A_FACE = 8, 9  # their indices
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")  # what OpenCV reads


@dataclass(frozen=True)
class FaceSet:
    """Labelled grey face images, ready for the expression network."""

    images: np.ndarray  # shape = (n, INPUT_SIZE, INPUT_SIZE) = (n, 64, 64) uint8 grey
    labels: np.ndarray  # shape = (n,) int64, class index in `label_set`
    label_set: str  # name in emostream.labels
    dropped: dict[str, int]  # images left out, by reason
    read_whole: int = 0  # folder images in which no face was found, taken whole as a face crop


def to_network_input(images: np.ndarray) -> np.ndarray:
    """Grey crops of any square size, shape = (n, h, w) uint8 -> (n, 64, 64) uint8, resized as live crops are made."""
    out = np.empty((len(images), INPUT_SIZE, INPUT_SIZE), np.uint8)
    for i, image in enumerate(images):
        shrink = image.shape[0] > INPUT_SIZE or image.shape[1] > INPUT_SIZE
        out[i] = cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out


def as_frame(face: np.ndarray, scale: int = 4, border: int = 48) -> np.ndarray:
    """A grey face crop (e.g. FER+'s 48x48) as a camera frame would show it: enlarged `scale` times (bicubic) with
    `border` pixels of its edge replicated around it, RGB, shape = (h, w, 3) uint8 (to read it through the live
    crop: `FaceAnalyzer.largest_face` finds 95% of FER+'s majority-labelled faces in such frames)."""
    enlarged = cv2.resize(face, (face.shape[1] * scale, face.shape[0] * scale), interpolation=cv2.INTER_CUBIC)
    framed = cv2.copyMakeBorder(enlarged, border, border, border, border, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(np.repeat(framed[:, :, None], 3, axis=2))


def live_crops(faces: np.ndarray, find: Callable[[np.ndarray], np.ndarray | None],
               margins: Sequence[float]) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Grey face crops, shape = (n, h, w) uint8, read through the live crop: each shown as a frame (`as_frame`), its
    face found by `find` (`FaceAnalyzer.largest_face`: five keypoints, or None) and cut at each margin
    (`analyze.expression_crops`). Returns (the indices of the faces found, margin -> their crops, shape = (k, 64, 64))."""
    found: list[int] = []
    crops: dict[float, list[np.ndarray]] = {margin: [] for margin in margins}
    for i, face in enumerate(faces):
        frame = as_frame(face)
        keypoints = find(frame)
        if keypoints is None:
            continue
        found.append(i)
        for margin, kept in crops.items():
            kept.append(expression_crops(frame, [keypoints], margin)[0])
    empty = np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.uint8)
    return np.array(found, np.int64), {margin: np.stack(kept) if kept else empty for margin, kept in crops.items()}


def network_inputs(images: np.ndarray, find: Callable[[np.ndarray], np.ndarray | None] | None) -> tuple[np.ndarray, np.ndarray]:
    """FER+ faces (n, 48, 48) as the network's inputs: (the indices of the faces kept, their inputs (k, 64, 64) uint8).

    find (`FaceAnalyzer.largest_face`): each face shown as a frame would show it, found and cut by the live analyser's
    own crop (`live_crops` at `analyze.EXPRESSION_MARGIN`), so the network reads the framing it reads live; faces it
    does not find (about 5%) are left out. None: every face, resized whole (`to_network_input`).
    """
    if find is None:
        return np.arange(len(images)), to_network_input(images)
    found, crops = live_crops(images, find, [EXPRESSION_MARGIN])
    return found, crops[EXPRESSION_MARGIN]


def read_ferplus(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 48, 48) uint8, votes (n, 10) int64) of one FER+ split file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FER+ split {path} not found (expected e.g. ../shared/data/ferplus/test.npz)")
    with np.load(path) as data:
        if "images" not in data or "votes" not in data:
            raise ValueError(f"{path}: a FER+ split needs arrays 'images' and 'votes', found {sorted(data.files)}")
        images, votes = data["images"], data["votes"].astype(np.int64)
    if images.ndim != 3 or votes.shape != (len(images), len(VOTE_COLUMNS)):
        raise ValueError(f"{path}: images {images.shape} and votes {votes.shape}; expected (n, h, w) and (n, {len(VOTE_COLUMNS)})")
    return images, votes


def vote_distribution(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft FERPLUS8 targets: (targets (m, 8) float32 rows summing to 1, kept (n,) bool) for votes (n, 10)."""
    emotion = votes[:, : len(FERPLUS8)].astype(np.float64)
    total = emotion.sum(axis=1)
    not_a_face = votes[:, NOT_A_FACE] >= votes[:, : NOT_A_FACE].max(axis=1)
    kept = (total > 0) & ~not_a_face
    return (emotion[kept] / total[kept, None]).astype(np.float32), kept


def _majority(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top column of 10, whether it is a majority) per image, after dropping single-rater votes."""
    votes = np.where(votes <= 1, 0, votes)
    return votes.argmax(axis=1), votes.max(axis=1) > 0.5 * votes.sum(axis=1)


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """FER+'s majority label per image, shape = (n,) int64: a FERPLUS8 index, or -1 where the image is left out.

    Votes of one rater are outliers (dropped); the top class then needs more than half of what is left; an
    "unknown" or "not a face" majority, or none at all, gives -1.
    """
    top, majority = _majority(votes)
    return np.where(majority & (top < len(FERPLUS8)), top, -1).astype(np.int64)


def ferplus_faces(path: str | Path, find: Callable[[np.ndarray], np.ndarray | None] | None = None) -> FaceSet:
    """The images of a FER+ split with a majority label (see `majority_labels`), as network inputs.

    find : as for `network_inputs` (`FaceAnalyzer.largest_face`): each face is read through the live crop. Faces it
    finds no face in, or all faces without it, are resized whole (counted in `read_whole` when `find` was given).
    """
    images, votes = read_ferplus(path)
    top, majority = _majority(votes)
    dropped = {
        "no majority": int((~majority).sum()),
        "unknown": int((majority & (top == UNKNOWN)).sum()),
        "not a face": int((majority & (top == NOT_A_FACE)).sum()),
    }
    labels = majority_labels(votes)
    kept = labels >= 0
    faces = to_network_input(images[kept])
    whole = 0
    if find is not None:
        found, crops = network_inputs(images[kept], find)
        faces[found] = crops
        whole = len(faces) - len(found)
    return FaceSet(faces, labels[kept], "ferplus8", dropped, whole)


def folder_faces(path: str | Path, labels: str, crop: Callable[[np.ndarray], np.ndarray | None] | None = None) -> FaceSet:
    """Face images in one sub-folder per label (`happy/`, `anger/`, ...: any name `parse_label` reads in `labels`).

    crop : an RGB image's network input, None when it finds no face (`FaceAnalyzer.expression_crop`: the largest face,
    aligned as live). Images it finds no face in, or all images without it, are read as grey face crops and resized
    to the network's input (counted in `read_whole`). Sub-folders that name no label of the set are an error (the
    message lists the set's labels), and unreadable files are counted in `dropped`.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"face folder {root} not found; expected one sub-folder of images per label")
    label_set(labels)
    images: list[np.ndarray] = []
    indices: list[int] = []
    unreadable = whole = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        index = parse_label(folder.name, labels)
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                unreadable += 1
                continue
            face = crop(np.ascontiguousarray(image[:, :, ::-1])) if crop is not None else None
            if face is None:
                whole += 1
                face = to_network_input(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[None])[0]
            images.append(face)
            indices.append(index)
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the label sub-folders of {root}")
    return FaceSet(np.stack(images), np.array(indices, np.int64), labels, {"unreadable": unreadable}, whole)
