"""Shared fixtures: the real recordings in ../shared/data and a real Tansu broker on 127.0.0.1."""

from __future__ import annotations

import atexit
import faulthandler
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from emostream.kafka.broker import EmbeddedBroker, free_port
from emostream.kafka.clients import ensure_topics
from emostream.settings import Settings, load_settings

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


_exit_status: int | None = None  # the session's, once it has finished


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process with the session's exit status once every result is reported, skipping the interpreter's
    teardown of native libraries. A passing run (723 passed, summary printed) once ended in a segmentation fault in
    that teardown, after the last fixture had stopped Ray and the broker: the session holds CTranslate2, ONNX Runtime,
    MediaPipe and torch objects whose destructors then run in no set order. atexit handlers still run first (Ray's,
    any broker's), with faulthandler on, so a crash in one of them still names its Python stack."""
    if _exit_status is None:  # --help, --version: no session ran
        return
    faulthandler.enable()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread() -> None:
    """BLAS on one thread in the test process, as in the job's workers (live/stages.py, sessions.py, backfill.py
    cap it; Ray gives a worker OMP_NUM_THREADS=1): OpenBLAS rounds a matrix product differently by thread count,
    and tests compare the in-process pipeline with Ray's. Whisper's greedy decode of one LibriVox utterance flipped
    on that log-mel noise ("is to be old," in Serve, "is to be old-est-est?" in process, when test_live's drafts test
    ran alone)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test media not found: {SHARED_DATA} (the shared data folder sits beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def wolfgang(shared_data: Path) -> Path:
    return shared_data / "faces-pyfeat" / "WolfgangLanger_Pexels.mp4"


@pytest.fixture(scope="session")
def librivox(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "speech-librivox").glob("*.wav"))


@pytest.fixture(scope="module")
def ray_local():  # type: ignore[no-untyped-def]
    """A local Ray of two CPUs for the module's tests (inside the loopback-only namespace)."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    """Local Ray (two CPUs) with the Serve app deployed once for the module (inside the loopback-only namespace);
    yields the app's HTTP address."""
    import ray
    from ray import serve

    from emostream.serve.app import deploy

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    port = free_port()
    deploy(load_settings(serve={"port": port}))
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real Tansu broker for the session, started and stopped by pid."""
    with EmbeddedBroker(free_port(), tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest.fixture
def settings(broker: EmbeddedBroker) -> Settings:
    """Settings pointing at the broker, with topics of this test's own."""
    tag = uuid.uuid4().hex[:8]
    configured = load_settings(
        kafka={
            "bootstrap_servers": broker.bootstrap_servers,
            "media_topic": f"media-{tag}",
            "emotions_topic": f"emotions-{tag}",
            "deadletter_topic": f"deadletter-{tag}",
            "group_id": f"group-{tag}",
            "partitions": 2,
        },
        ingest={"gap_timeout_seconds": 2.0},
    )
    ensure_topics(configured.kafka)
    return configured


# -- perception models: loaded once per test session, shared by every Spine built in tests --


@pytest.fixture(scope="session")
def models() -> dict[str, object]:
    from emostream.perception.faces.analyze import FaceAnalyzer
    from emostream.perception.voice.asr import Transcriber
    from emostream.perception.voice.speakers import VoiceEmbedder
    from emostream.perception.voice.text import SentenceEmbedder
    from emostream.settings import FaceSettings

    return {
        "faces": FaceAnalyzer(FaceSettings()),
        "transcriber": Transcriber(),  # last_layer; make_spine adds every_layer's when a model reads it
        "sentences": SentenceEmbedder(),
        "voices": VoiceEmbedder(),
    }


@pytest.fixture
def make_spine(models: dict[str, object]):  # type: ignore[no-untyped-def]
    """Build a Spine for given settings from the session's loaded perception models (the scorer loads on first use)."""
    from emostream.perception.encode import UtteranceEncoder, scoring_voice
    from emostream.perception.faces.analyze import FaceAnalyzer
    from emostream.perception.segment import SegmentPerceiver
    from emostream.perception.voice.asr import Transcriber
    from emostream.spine import Spine

    def build(settings: Settings):  # type: ignore[no-untyped-def]
        shared = models["faces"]
        faces = FaceAnalyzer(settings.faces, backend=shared.backend, expression=shared.expression)  # type: ignore[attr-defined]
        # Whisper features of the model the settings score with (a preset reads the last layer, the default every layer),
        # and text embeddings only if it reads words, as the Spine itself would encode
        voice = scoring_voice(settings)
        name = "transcriber" if voice.audio_features == "last_layer" else f"transcriber-{voice.audio_features}"
        if name not in models:
            models[name] = Transcriber(audio_features=voice.audio_features)
        encoder = UtteranceEncoder(voice, models[name], models["sentences"])  # type: ignore[arg-type]
        return Spine(settings, SegmentPerceiver(settings, faces), encoder, voices=models["voices"])  # type: ignore[arg-type]

    return build
