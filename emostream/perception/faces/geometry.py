"""Face geometry from landmarks: action-unit-like measures and head pose.

Every measure is taken in a face-aligned frame (origin between the eyes, x
along the eye line, y down, one unit = the distance between the eyes), so it
does not change when the head moves, turns in the image plane or comes
closer. Larger always means "more of the action". Raw values differ between
people; the tracks normalise them per face (see tracking.py).
"""

from __future__ import annotations

import cv2
import numpy as np

from emostream.perception.faces.types import LandmarkScheme

GEOMETRY_NAMES = (
    "brow_raise",  # AU1+2: brows up, away from the eyes
    "brow_lower",  # AU4: brows down and together
    "eye_aperture",  # AU5/7/43: lid opening over eye width
    "lip_corner_pull",  # AU12: mouth corners up and outward
    "lip_corner_depress",  # AU15: mouth corners down
    "mouth_open",  # AU25/26: gap between the inner lips
    "lip_press",  # AU23/24: lips thinned
    "nose_wrinkle",  # AU9: nose wings drawn up towards the eyes
    "yaw",  # head pose, degrees: turned towards the image's right is positive
    "pitch",  # degrees: chin up is positive
    "roll",  # degrees: eye line turned clockwise in the image is positive
)

# Landmark indices by role, for each landmark scheme. Pairs are (one side, other side).
MESH468 = {
    "eye_outer": (33, 263),
    "eye_inner": (133, 362),
    "upper_lid": (159, 386),
    "lower_lid": (145, 374),
    "brow_inner": (55, 285),
    "brow_mid": (105, 334),
    "brow_outer": (46, 276),
    "nose_wing": (98, 327),
    "mouth_corner": (61, 291),
    "nose_tip": (1,),
    "upper_lip_top": (0,),
    "upper_lip_inner": (13,),
    "lower_lip_inner": (14,),
    "lower_lip_bottom": (17,),
    "chin": (152,),
}
SCHEMES: dict[LandmarkScheme, dict[str, tuple[int, ...]]] = {"mesh468": MESH468}
RIGID_ROLES = ("eye_outer", "eye_inner", "nose_wing", "nose_tip")  # parts that expressions barely move (rigid_shape)

# A generic 3D head (millimetres, y up) for head pose from six landmarks (OpenCV's classic model).
HEAD_MODEL = np.array(
    [
        [0.0, 0.0, 0.0],  # nose tip
        [0.0, -63.6, -12.5],  # chin
        [-43.3, 32.7, -26.0],  # outer corner of the eye on the image's left
        [43.3, 32.7, -26.0],  # outer corner of the other eye
        [-28.9, -28.9, -24.1],  # mouth corner on the image's left
        [28.9, -28.9, -24.1],  # other mouth corner
    ]
)


def face_frame(points: np.ndarray, roles: dict[str, tuple[int, ...]]) -> tuple[np.ndarray, float]:
    """Landmarks in the face frame, shape = (n_points, 2), and the roll angle in degrees."""
    xy = points[:, :2].astype(np.float64)
    eyes = np.array([xy[list(pair)].mean(axis=0) for pair in zip(roles["eye_outer"], roles["eye_inner"], strict=True)])
    eyes = eyes[np.argsort(eyes[:, 0])]
    axis = eyes[1] - eyes[0]
    distance = float(np.hypot(*axis)) or 1.0
    cos, sin = axis / distance
    rotate = np.array([[cos, sin], [-sin, cos]])  # turns the eye line onto +x
    return (xy - eyes.mean(axis=0)) @ rotate.T / distance, float(np.degrees(np.arctan2(sin, cos)))


def rigid_shape(points: np.ndarray, scheme: LandmarkScheme) -> np.ndarray:
    """Where the rigid parts of the face (eye corners, nose: RIGID_ROLES) sit in its own frame (between-eye units).

    A weak identity cue (pose changes it too) that tracking uses to tell apart faces whose boxes overlap and to
    pick a lost face up again when no identity embedding is available.
    points : shape = (n_points, 2 or 3) pixels in the layout `scheme`. Returns shape = (14,) float32, x and y of
    each rigid landmark in RIGID_ROLES order.
    """
    roles = SCHEMES[scheme]
    face, _ = face_frame(points, roles)
    return face[[index for role in RIGID_ROLES for index in roles[role]]].ravel().astype(np.float32)


def head_pose(points: np.ndarray, roles: dict[str, tuple[int, ...]], frame_size: tuple[int, int]) -> tuple[float, float]:
    """Yaw and pitch in degrees from six landmarks and a generic head (solvePnP, focal length = frame width)."""
    xy = points[:, :2].astype(np.float64)
    by_x = lambda pair: sorted(pair, key=lambda i: xy[i, 0])  # noqa: E731 (image-left first)
    eye_l, eye_r = by_x(roles["eye_outer"])
    mouth_l, mouth_r = by_x(roles["mouth_corner"])
    image = xy[[roles["nose_tip"][0], roles["chin"][0], eye_l, eye_r, mouth_l, mouth_r]]
    height, width = frame_size
    camera = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], dtype=np.float64)
    # The model has y up and image y runs down: flip the model so the fit needs no half-turn.
    model = HEAD_MODEL * np.array([1.0, -1.0, -1.0])
    ok, rotation_vector, _ = cv2.solvePnP(model, image, camera, None, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        return float("nan"), float("nan")
    rotation, _ = cv2.Rodrigues(rotation_vector)
    yaw = np.degrees(np.arcsin(np.clip(-rotation[2, 0], -1, 1)))
    pitch = np.degrees(np.arctan2(rotation[2, 1], rotation[2, 2]))
    # OpenCV's camera has y down: a positive turn about x tips the forehead towards the camera (chin down).
    return float(-yaw), float(-pitch)


def face_geometry(points: np.ndarray, scheme: LandmarkScheme, frame_size: tuple[int, int]) -> np.ndarray:
    """The GEOMETRY_NAMES measures of one face.

    points : shape = (n_points, 2 or 3) pixels in the layout `scheme`; frame_size : (height, width).
    Returns shape = (len(GEOMETRY_NAMES),) float32.
    """
    roles = SCHEMES[scheme]
    face, roll = face_frame(points, roles)
    y = face[:, 1]

    def mean_y(role: str) -> float:
        return float(y[list(roles[role])].mean())

    eye_line = float(y[list(roles["eye_outer"] + roles["eye_inner"])].mean())
    brow_raise = eye_line - np.mean([mean_y("brow_inner"), mean_y("brow_mid"), mean_y("brow_outer")])
    inner = face[list(roles["brow_inner"])]
    brow_lower = -(abs(inner[1, 0] - inner[0, 0]) + (eye_line - inner[:, 1].mean())) / 2
    apertures = [
        (y[low] - y[up]) / max(abs(face[outer, 0] - face[inn, 0]), 1e-6)
        for up, low, outer, inn in zip(roles["upper_lid"], roles["lower_lid"], roles["eye_outer"], roles["eye_inner"], strict=True)
    ]
    lip_mid = (mean_y("upper_lip_inner") + mean_y("lower_lip_inner")) / 2
    corners = face[list(roles["mouth_corner"])]
    elevation = lip_mid - corners[:, 1].mean()
    width = abs(corners[1, 0] - corners[0, 0])
    lip_thickness = (mean_y("upper_lip_inner") - mean_y("upper_lip_top")) + (mean_y("lower_lip_bottom") - mean_y("lower_lip_inner"))
    inner_corners = y[list(roles["eye_inner"])].mean()
    yaw, pitch = head_pose(points, roles, frame_size)
    values = [
        brow_raise,
        brow_lower,
        float(np.mean(apertures)),
        elevation + 0.5 * width,
        -elevation,
        mean_y("lower_lip_inner") - mean_y("upper_lip_inner"),
        -lip_thickness,
        -(mean_y("nose_wing") - inner_corners),
        yaw,
        pitch,
        roll,
    ]
    return np.asarray(values, dtype=np.float32)
