"""The ingress keeps its event loop free (issue 22, item 15): `/v1/analyze` decodes the upload and runs the
stream session in worker threads, and streams the body to its sink in chunks, refusing one over the limit
before it has all arrived. Also its token check (item 16), which no HTTP test can tell from a plain comparison.

The Ingress class runs in-process (no Ray): its deployment's user class, with a real Perceiver and real
decoding and session, and stand-ins for the encoders and the Scorer (the loop is what is under test, not them).
No test here measures time: a blocked loop is seen as work the loop never got to run.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import HTTPException
from starlette.requests import Request

import emostream.media.records
from emostream.perception.session import StreamSession
from emostream.serve.app import Ingress, Perceiver
from emostream.settings import load_settings

INGRESS = Ingress.func_or_class.__bases__[0]  # the user class: serve.ingress subclasses it to add its ASGI app
# Only a deadlock breaker: a gated call on the loop thread waits this long for a release that cannot come.
RELEASE_WAIT_CAP = 60.0  # seconds


class LoopGate:
    """Wraps blocking calls so that each waits until the event loop has run a callback it schedules.

    Called in a worker thread, the callback runs at once and the call goes on. Called on the loop's own
    thread, the loop cannot run the callback while the call waits: after RELEASE_WAIT_CAP the call records
    that it blocked the loop, and the gate lets later calls through (one failure is enough to see).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.calls = 0
        self.blocked: list[str] = []

    def wait(self, what: str) -> None:
        if self.blocked:
            return
        self.calls += 1
        released = threading.Event()
        self.loop.call_soon_threadsafe(released.set)
        if not released.wait(RELEASE_WAIT_CAP):
            self.blocked.append(what)

    def function(self, what: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def gated(*args: Any, **kwargs: Any) -> Any:
            self.wait(what)
            return call(*args, **kwargs)

        return gated


class Local:
    """A deployment handle stand-in: `handle.method.remote(...)` runs `target.method` in a worker thread, as a
    call to another replica leaves the ingress's loop free."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> SimpleNamespace:
        method = getattr(self.target, name)

        async def remote(*args: Any) -> Any:
            result = await asyncio.to_thread(method, *args)
            return await result if isinstance(result, Awaitable) else result

        return SimpleNamespace(remote=remote)


class Encoders:
    """Stands in for the AudioEncoder, TextEncoder and Scorer: bundles pass through; one event per bundle."""

    def encode(self, bundles: list[Any]) -> list[Any]:
        return bundles

    embed = encode

    def score(self, bundles: list[Any], contexts: Any = None) -> tuple[list[dict[str, Any]], Any]:
        return [{"stream_id": b.stream_id, "start": b.start, "end": b.end} for b in bundles], contexts


def request(chunks: list[bytes], headers: dict[str, str] | None = None) -> tuple[Request, list[int]]:
    """A Starlette request whose body arrives in `chunks`; and the count of chunks the app has pulled so far."""
    pulled = [0]

    async def receive() -> dict[str, Any]:
        if pulled[0] == len(chunks):
            return {"type": "http.disconnect"}
        pulled[0] += 1
        return {"type": "http.request", "body": chunks[pulled[0] - 1], "more_body": pulled[0] < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/v1/analyze", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    return Request(scope, receive), pulled


def in_chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.fixture(scope="module")
def ingress() -> Any:
    """The Ingress deployment's own class (below Serve's ASGI wrapper), built in-process with a real Perceiver."""
    blob = load_settings().model_dump_json()
    encoders = Local(Encoders())
    return INGRESS(blob, Local(Perceiver.func_or_class(blob)), encoders, encoders, encoders)


def gated_file_segments(gate: LoopGate) -> Callable[..., Iterator[Any]]:
    """`file_segments` whose decoding of each segment passes the gate first: wherever the ingress pulls the next
    segment (a worker thread, or the loop), the real decoding runs right there."""
    real = emostream.media.records.file_segments

    def segments(*args: Any, **kwargs: Any) -> Iterator[Any]:
        decoded = real(*args, **kwargs)
        while True:
            gate.wait("decoding the upload")
            segment = next(decoded, None)
            if segment is None:
                return
            yield segment

    return segments


@pytest.mark.parametrize("gated", ["decode", "session push", "session flush"])
def test_analyze_leaves_the_event_loop_free(ingress: Any, librivox: list[Path], monkeypatch: pytest.MonkeyPatch,
                                            gated: str) -> None:
    """Each blocking step of an upload (decoding, the stream session's push and flush) waits for a callback only
    the ingress's event loop can run: the request completes only if the step ran off the loop."""

    async def analyze() -> tuple[LoopGate, list[dict[str, Any]]]:
        gate = LoopGate(asyncio.get_running_loop())
        if gated == "decode":
            monkeypatch.setattr(emostream.media.records, "file_segments", gated_file_segments(gate))
        elif gated == "session push":
            monkeypatch.setattr(StreamSession, "push", gate.function("the session's push", StreamSession.push))
        else:
            monkeypatch.setattr(StreamSession, "flush", gate.function("the session's flush", StreamSession.flush))
        body, _ = request(in_chunks(librivox[0].read_bytes(), 64 * 1024))
        return gate, await ingress.analyze(body, stream_id="upload-1")

    gate, events = asyncio.run(analyze())
    assert gate.calls > 0, f"the {gated} gate was never reached: the test no longer covers the ingress's {gated}"
    assert not gate.blocked, f"{gate.blocked[0]} ran on the ingress's event loop and blocked it"
    assert [event["stream_id"] for event in events] == ["upload-1"]  # the clip's one utterance, as over HTTP


class Sink:
    """A file stand-in that keeps the size of each write, not the bytes."""

    def __init__(self) -> None:
        self.writes: list[int] = []

    def write(self, data: bytes) -> int:
        if data:  # Starlette's stream ends with an empty chunk
            self.writes.append(len(data))
        return len(data)

    def flush(self) -> None:
        pass


def test_an_upload_is_written_to_its_sink_as_it_arrives(ingress: Any) -> None:
    chunks = in_chunks(bytes(range(256)) * 4096, 64 * 1024)  # 1 MiB in 16 chunks
    body, pulled = request(chunks)
    sink = Sink()
    assert asyncio.run(ingress._receive(body, sink, 2_000_000)) == 2**20
    assert sink.writes == [len(chunk) for chunk in chunks] and pulled[0] == len(chunks)


@pytest.mark.parametrize("declared", [False, True])
def test_an_upload_over_the_limit_is_refused_before_it_has_all_arrived(ingress: Any, declared: bool) -> None:
    """Without a Content-Length the body is read until it passes the limit, and no further; with one over the
    limit, none of it is read."""
    chunks = in_chunks(b"\0" * 2**20, 64 * 1024)  # 1 MiB in 16 chunks against a 200 KB limit
    body, pulled = request(chunks, {"content-length": str(2**20)} if declared else None)
    sink = Sink()
    with pytest.raises(HTTPException) as refused:
        asyncio.run(ingress._receive(body, sink, 200_000))
    assert refused.value.status_code == 413 and "200000-byte limit" in refused.value.detail
    assert pulled[0] == (0 if declared else 4) and sum(sink.writes) <= 200_000  # the 4th chunk passes the limit


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """(22.16) A `!=` comparison stops at the first differing byte: its timing tells an attacker how much of a
    guess is right. What it answers is the same, so this checks the comparison itself, not a clock."""
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(hmac, "compare_digest", compare_digest)
    ingress = INGRESS(load_settings(serve={"bearer_token": "secret"}).model_dump_json(), None, None, None, None)
    ingress._authorise(request([], {"authorization": "Bearer secret"})[0])
    with pytest.raises(HTTPException) as refused:
        ingress._authorise(request([], {"authorization": "Bearer secreT"})[0])
    assert refused.value.status_code == 401
    assert compared == [(b"Bearer secret", b"Bearer secret"), (b"Bearer secreT", b"Bearer secret")]
