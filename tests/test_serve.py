"""The Ray Serve application on real Ray Serve over loopback HTTP: analyze, score, model, health, limits, token."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ray import serve

from emostream.contracts import UtteranceEmotionEvent
from emostream.kafka.broker import free_port
from emostream.models.presets import DEFAULT_CHECKPOINT

pytestmark = pytest.mark.broker  # starts Ray: loopback-only namespace

TOKEN = "test-token"
# Whisper values per utterance the default model reads (3,840: tiny.en's every layer); the tiny presets read 768
DEFAULT_AUDIO = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())["audio_embedding"]


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    import ray
    from ray import serve

    from emostream.serve.app import build_app

    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Room for the default app (1 CPU of local-profile shares) and one more beside it (a describer app takes 1.2)
    ray.init(address="local", num_cpus=3, include_dashboard=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"serve": {"bearer_token": TOKEN, "max_upload_megabytes": 1.0, "max_media_seconds": 20.0}}),
              name="emostream", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def call(url: str, body: bytes | None = None, token: str | None = TOKEN, content_type: str = "application/octet-stream"):  # type: ignore[no-untyped-def]
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_health_model_and_token(server: str) -> None:
    assert call(f"{server}/v1/healthz", token=None) == (200, {"status": "ok"})
    status, info = call(f"{server}/v1/model")
    assert status == 200 and info["name"] == "emostream-lite-ravdess" and len(info["labels"]) == 8
    assert call(f"{server}/v1/model", token=None)[0] == 401
    assert call(f"{server}/v1/model", token="wrong")[0] == 401
    assert call(f"{server}/v1/model", token=TOKEN + "x")[0] == 401


def test_api_description_is_behind_the_token(server: str) -> None:
    assert call(f"{server}/openapi.json", token=None)[0] == 401
    assert call(f"{server}/docs", token=None)[0] == 401
    status, spec = call(f"{server}/openapi.json")
    assert status == 200 and {"/v1/analyze", "/v1/score", "/v1/model", "/v1/healthz"} <= set(spec["paths"])
    assert "requestBody" in spec["paths"]["/v1/score"]["post"]


def uploads_on_disk() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("emostream-upload")}


def test_analyze_a_clip(server: str, librivox: list[Path]) -> None:
    """An upload never has a name on disk: a replica that dies mid-request leaves no raw media behind."""
    before, seen, done = uploads_on_disk(), set(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(uploads_on_disk() - before)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        status, events = call(f"{server}/v1/analyze?stream_id=upload-1", librivox[0].read_bytes())
    finally:
        done.set()
        watcher.join()
    assert status == 200 and len(events) == 1, events
    assert not seen, f"the upload was on disk as {seen}"
    event = UtteranceEmotionEvent.model_validate(events[0])
    assert event.stream_id == "upload-1" and "Dashwood" in (event.transcript or "") and event.label in event.explanation


def test_bad_uploads_are_refused_with_reasons(server: str) -> None:
    status, detail = call(f"{server}/v1/analyze", b"\x00" * 2_000_000)
    assert status == 413 and "limit" in detail["detail"]
    status, detail = call(f"{server}/v1/analyze", b"this is not media")
    assert status == 422 and "cannot read" in detail["detail"]
    assert "/proc" not in detail["detail"] and tempfile.gettempdir() not in detail["detail"], detail
    assert call(f"{server}/v1/analyze", b"", token=TOKEN)[0] == 400


def test_score_pre_extracted_features(server: str) -> None:
    rng_values = [0.1] * DEFAULT_AUDIO
    features = {"stream_id": "call-9", "speaker": "customer", "start": 1.0, "end": 3.5, "transcript": "this is unacceptable",
                "prosody": [180.0, 6.0, 1.0, -20.0, 15.0, 4.5, 1.0, 0.3, 0.6, 0.02, 0.1], "audio_embedding": rng_values,
                "speaker_embedding": [0.05] * 256, "text_embedding": [0.02] * 384}
    status, event = call(f"{server}/v1/score", json.dumps(features).encode(), content_type="application/json")
    assert status == 200, event
    parsed = UtteranceEmotionEvent.model_validate(event)
    assert parsed.stream_id == "call-9" and parsed.speaker.id == "customer" and parsed.transcript == "this is unacceptable"
    status, error = call(f"{server}/v1/score", json.dumps({**features, "prosody": "x"}).encode(), content_type="application/json")
    assert status == 422


SCORE_FEATURES = {"stream_id": "call-9", "speaker": "customer", "start": 1.0, "end": 3.5, "transcript": "fine, thanks",
                  "prosody": [180.0, 6.0, 1.0, -20.0, 15.0, 4.5, 1.0, 0.3, 0.6, 0.02, 0.1], "audio_embedding": [0.1] * DEFAULT_AUDIO,
                  "speaker_embedding": [0.05] * 256, "text_embedding": [0.02] * 384}


@pytest.mark.parametrize(("change", "message"), [
    ({"audio_embedding": [0.1] * 10}, "bad utterance features for this model"),  # passes the edge, not the model
    ({"face_times": [1.0, 2.0], "face_expression": [0.1] * 5}, "bad utterance features"),
    ({"stream_id": "bad id!"}, "stream-id"),
    ({"end": 0.5}, "before start"),
    ({"speaker": "x" * 100}, "speaker"),
])
def test_bad_score_input_fails_alone(server: str, change: dict, message: str) -> None:
    """A bad request is refused (422) before it joins a model batch; good requests batched beside it succeed."""
    def send(features: dict) -> tuple[int, dict]:
        return call(f"{server}/v1/score", json.dumps(features).encode(), content_type="application/json")

    with ThreadPoolExecutor(max_workers=6) as pool:
        bad = pool.submit(send, {**SCORE_FEATURES, **change})
        good = [pool.submit(send, {**SCORE_FEATURES, "stream_id": f"call-{i}"}) for i in range(4)]
        status, error = bad.result()
        assert status == 422 and message.replace("-", "_") in error["detail"].replace("-", "_"), error
        assert "Traceback" not in error["detail"]
        assert [future.result()[0] for future in good] == [200] * 4


def test_score_body_is_limited(server: str) -> None:
    huge = json.dumps({**SCORE_FEATURES, "transcript": "x" * 5_000_000}).encode()
    assert call(f"{server}/v1/score", huge, content_type="application/json")[0] == 413


def silence_wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\0\0" * int(seconds * rate))
    return out.getvalue()


def test_media_longer_than_the_limit_is_refused(server: str) -> None:
    """30 s of media (480 KB: under the size limit) against serve.max_media_seconds = 20."""
    status, detail = call(f"{server}/v1/analyze", silence_wav(30.0))
    assert status == 413 and "serve.max_media_seconds (20 s)" in detail["detail"], detail
    assert call(f"{server}/v1/analyze", silence_wav(10.0))[0] == 200


@serve.deployment(max_ongoing_requests=1, max_queued_requests=1, graceful_shutdown_timeout_s=0.5,
                  graceful_shutdown_wait_loop_s=0.5)
class Hung:
    """Stands in for every deployment behind the ingress, and never answers (so deleting it does not wait the
    default 20 s for its requests to finish)."""

    async def _forever(self, *args: object) -> None:
        await asyncio.sleep(3600)

    info = perceive = encode = embed = score = _forever


@pytest.fixture
def hung(server: str) -> Iterator[str]:
    """A second app whose ingress calls deployments that never answer, with a 2 s request timeout; deleted after
    its tests (its replicas hold CPU shares the module's later apps need to start)."""
    from emostream.serve.app import Ingress
    from emostream.settings import load_settings

    blob = load_settings(serve={"bearer_token": TOKEN, "request_timeout_seconds": 2.0}).model_dump_json()
    downstream = Hung.bind()
    serve.run(Ingress.options(max_queued_requests=8).bind(blob, downstream, downstream, downstream, downstream),
              name="emostream-hung", route_prefix="/hung")
    yield f"{server}/hung"
    serve.delete("emostream-hung")


def test_a_hung_deployment_ends_the_request_with_504(hung: str, librivox: list[Path]) -> None:
    started = time.monotonic()
    status, detail = call(f"{hung}/v1/model")
    assert status == 504 and "the Scorer did not answer within serve.request_timeout_seconds (2 s)" in detail["detail"]
    status, detail = call(f"{hung}/v1/analyze", librivox[0].read_bytes())
    assert status == 504 and "the Perceiver did not answer" in detail["detail"], detail
    status, detail = call(f"{hung}/v1/score", json.dumps(SCORE_FEATURES).encode(), content_type="application/json")
    assert status == 504 and "the Scorer" in detail["detail"], detail
    assert time.monotonic() - started < 60  # each within its timeout, not the client's 120 s


def test_a_full_queue_is_a_503_at_once(hung: str) -> None:
    """The hung deployment takes one request and queues one: the others are refused, not queued."""
    def send() -> tuple[int, dict]:
        return call(f"{hung}/v1/score", json.dumps(SCORE_FEATURES).encode(), content_type="application/json")

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = sorted(status for status, _ in pool.map(lambda _: send(), range(4)))
    assert 503 in statuses and set(statuses) <= {503, 504}, statuses


def test_every_deployments_queue_is_bounded() -> None:
    from emostream.serve.config import serve_config

    for profile in ("local", "cluster"):
        deployments = serve_config(profile)["applications"][0]["deployments"]
        assert all(d.get("max_queued_requests", -1) > 0 for d in deployments), (profile, deployments)


def test_serve_config_files_are_generated_from_the_app() -> None:
    from emostream.cli import main
    from emostream.serve.config import serve_config

    assert main(["serve-config", "--check"]) == 0  # deployments/serve-*.yaml equal what the app generates
    local, cluster = serve_config("local"), serve_config("cluster")
    assert local["http_options"]["host"] == "127.0.0.1" and cluster["http_options"]["host"] == "0.0.0.0"
    names = {d["name"] for d in cluster["applications"][0]["deployments"]}
    assert names == {"Ingress", "Perceiver", "AudioEncoder", "TextEncoder", "Scorer"}
    assert cluster["applications"][0]["args"] == {"profile": "cluster"}


def test_an_llm_preset_is_served_with_generation(server: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The emotion-model deployment serves any preset: here the tiny LLM one (random weights), as a second app."""
    from ray import serve

    from emostream.models.presets import tiny
    from emostream.serve.app import build_app

    folder = tmp_path_factory.mktemp("tiny-llm")
    tiny(llm=True).save_pretrained(folder)
    serve.run(build_app({"serve": {"bearer_token": TOKEN, "model": str(folder)}}), name="emostream-llm", route_prefix="/llm")
    try:
        status, info = call(f"{server}/llm/v1/model")
        assert status == 200 and info["llm"] is True and info["name"] == "emostream-ravdess8"
        features = {"stream_id": "call-3", "speaker": "agent", "start": 0.5, "end": 2.0, "transcript": "sure, one moment",
                    "prosody": [150.0, 4.0, 1.0, -22.0, 12.0, 4.0, 1.0, 0.2, 0.5, 0.02, 0.1], "audio_embedding": [0.1] * 768}
        status, event = call(f"{server}/llm/v1/score", json.dumps(features).encode(), content_type="application/json")
        assert status == 200, event
        parsed = UtteranceEmotionEvent.model_validate(event)
        assert parsed.model.name == "emostream-ravdess8" and parsed.explanation
        assert isinstance(parsed.open_vocabulary, list)  # parsed from the generation (random words for random weights)
    finally:
        serve.delete("emostream-llm")


FEATURES = {"stream_id": "call-5", "speaker": "customer", "start": 0.0, "end": 2.5, "transcript": "I have been waiting all week",
            "prosody": [140.0, 5.0, 1.0, -21.0, 14.0, 4.2, 1.0, 0.3, 0.6, 0.02, 0.1], "audio_embedding": [0.1] * 768,
            "text_embedding": [0.02] * 384}  # encoded already: the describer sees exactly what it was trained on


def memorised_describer(folder: Path) -> Path:
    """A tiny LLM checkpoint trained to give one fixed, parseable answer for the utterance FEATURES (seconds on a CPU):
    what the describer plumbing must carry into the event, whatever a random tiny LM would write."""
    import torch

    from emostream.models.inputs import collate
    from emostream.models.instructions import NO_CUE, Answer
    from emostream.models.llm import bundled_tokenizer, language_loss
    from emostream.models.presets import tiny
    from emostream.perception.utterance import bundle_from_features

    torch.manual_seed(0)
    model = tiny(llm=True).train()
    tokenizer = bundled_tokenizer()
    answer = Answer("sad", "normal", ("sadness",), NO_CUE).text()
    bundle = bundle_from_features({**FEATURES, "key": "call-5:0.0", "variant": 0})  # as /v1/score builds it
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = language_loss(model, model(collate([bundle], model.config)), tokenizer, [bundle.transcript], [answer])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    return folder


def test_describe_is_refused_without_a_describer(server: str, librivox: list[Path]) -> None:
    status, detail = call(f"{server}/v1/analyze?describe=true", librivox[0].read_bytes())
    assert status == 400 and "set serve.describer" in detail["detail"]


def test_describe_true_adds_the_describers_open_vocabulary_words(server: str, librivox: list[Path],
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    from ray import serve

    from emostream.serve.app import build_app

    folder = memorised_describer(tmp_path_factory.mktemp("describer"))
    # the tiny preset scores: it reads the 768 Whisper values the describer was trained on (the default reads 3,840)
    serve.run(build_app({"serve": {"bearer_token": TOKEN, "describer": str(folder), "model": "tiny"}}), name="emostream-describer",
              route_prefix="/described")
    body = json.dumps(FEATURES).encode()
    try:
        status, plain = call(f"{server}/described/v1/score", body, content_type="application/json")
        assert status == 200 and plain["open_vocabulary"] == [], plain  # not asked: the describer is not called
        status, event = call(f"{server}/described/v1/score?describe=true", body, content_type="application/json")
        assert status == 200, event
        described = UtteranceEmotionEvent.model_validate(event)
        assert described.open_vocabulary == ["sadness"] and described.explanation == plain["explanation"]  # no cue cited
        status, events = call(f"{server}/described/v1/analyze?describe=true", librivox[0].read_bytes())
        assert status == 200 and len(events) == 1, events  # a real clip through the same path (its words: whatever parses)
    finally:
        serve.delete("emostream-describer")
