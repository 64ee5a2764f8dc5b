"""End of turn: has the speaker finished, judged from how the speech before a pause sounds (Smart Turn v3.2).

Smart Turn v3.2 (Daily, BSD-2-Clause) is a Whisper-tiny encoder with a classifier head, int8, trained to tell
a finished turn from a pause inside one by intonation and rhythm. Its ONNX file ships inside the `pipecat-ai`
wheel, which is installed without its dependencies ([tool.emostream] no-deps in pyproject.toml): we locate
the file without importing any pipecat module (its package imports need loguru and more) and run it with
onnxruntime ourselves.

Input, as pipecat's `LocalSmartTurnAnalyzerV3` prepares it: the last 8 s of 16 kHz audio up to the moment of
the decision, zero-padded at the start when shorter, scaled to zero mean and unit variance over the whole
window (padding included), then Whisper's 80-bin log-mel (10 ms hop), 800 frames. Output: the probability
that the turn is complete (a sigmoid, inside the graph). About 50 ms of one core per call (bench/turn.py).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np

from emostream.media.decode import SAMPLE_RATE

REQUIREMENT = "pipecat-ai==1.14.0"  # the wheel carrying the model file; pinned in pyproject.toml's no-deps list
MODEL_FILE = Path("audio", "turn", "smart_turn", "data", "smart-turn-v3.2-cpu.onnx")  # inside the `pipecat` package
WINDOW_SECONDS = 8
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE  # 128000 samples: the model's fixed input
N_MELS = 80
NORMALISE_EPSILON = 1e-7  # added to the variance before the waveform is scaled (as Whisper's feature extractor does)


def model_path() -> Path:
    """The Smart Turn ONNX file inside the installed pipecat package (found, never imported)."""
    spec = find_spec("pipecat")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    found = f"pipecat at {folders[0]} has no {MODEL_FILE}" if folders else "pipecat-ai is not installed"
    raise FileNotFoundError(
        f"voice.turn_model is 'smart_turn' but {found}: the Smart Turn v3.2 model ships in the {REQUIREMENT} wheel, "
        f"installed without its dependencies: `pip install --no-deps {REQUIREMENT}` (`make install` does it). "
        "Or set voice.turn_model: none to close utterances by the merge gap alone")


class SmartTurn:
    """End-of-turn probability of the audio before a pause. One ONNX session per process, shared by all streams."""

    _session = None
    _mel = None

    def __init__(self) -> None:
        if SmartTurn._session is None:
            import onnxruntime  # noqa: PLC0415 (loaded on use)
            from faster_whisper.feature_extractor import FeatureExtractor  # noqa: PLC0415 (as asr.py and whisper_layers.py)

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            SmartTurn._session = onnxruntime.InferenceSession(str(model_path()), sess_options=options,
                                                              providers=["CPUExecutionProvider"])
            SmartTurn._mel = FeatureExtractor(feature_size=N_MELS, chunk_length=WINDOW_SECONDS)

    def features(self, audio: np.ndarray) -> np.ndarray:
        """audio : shape = (n_samples,) float32 at SAMPLE_RATE, ending at the moment of the decision.

        Returns the model's input, shape = (N_MELS, 800) float32: Whisper's log-mel of the last WINDOW_SECONDS.
        """
        window = np.zeros(WINDOW_SAMPLES, np.float32)
        tail = np.asarray(audio, np.float32)[-WINDOW_SAMPLES:]
        window[WINDOW_SAMPLES - len(tail) :] = tail
        window = (window - window.mean()) / np.sqrt(window.var() + NORMALISE_EPSILON)
        # padding=0: the window is exactly 8 s; Whisper's extractor drops the last STFT frame, leaving 800.
        return np.ascontiguousarray(self._mel(window, padding=0), dtype=np.float32)

    def __call__(self, audio: np.ndarray) -> float:
        """Probability (0-1) that the speaker's turn is complete at the end of `audio` (see `features`)."""
        (probability,) = self._session.run(None, {"input_features": self.features(audio)[None]})[0][0]
        return float(probability)
