"""The live job's client of the Serve application: drafts to the encoders early, closed utterances to the ingress.

Every scoring call is bounded: `ServeClient` gives Serve a timeout, and `score_with_retries` (what the job calls,
with any `ScoringService`) waits at most `timeout` per try, tries `attempts` times, then raises `ScoringFailed`;
the job then dead-letters the utterances instead of dropping them (`live.job`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from ray import serve

from emostream.live.drafts import PreparedResults
from emostream.models.score import StreamContexts
from emostream.perception.encode import embeds_text, scoring_voice, with_recognition
from emostream.perception.session import Draft
from emostream.perception.utterance import UtteranceBundle
from emostream.serve.app import AudioEncoder, TextEncoder
from emostream.settings import Settings, VoiceSettings

log = logging.getLogger(__name__)

R = TypeVar("R")
RETRY_PAUSE = 1.0  # seconds before the second try, doubled for each further one (Serve replicas restarting)


class ScoringFailed(RuntimeError):
    """A stream's scoring call failed or timed out on every try."""


class ScoringService(Protocol):
    """What the live job needs from scoring (the Serve app through `ServeClient`, or a fake in tests)."""

    def score(self, bundles: list[UtteranceBundle], contexts: StreamContexts) -> tuple[list[dict[str, Any]], StreamContexts]:
        """A stream's utterance bundles scored with its context: the events (JSON-ready) and the context after them."""

    def prepare(self, drafts: list[Draft]) -> None:
        """Start encoding utterances that are likely to close (`StreamSession.drafts`); returns at once."""


class ServeClient:
    """Scoring through the running Serve application (`app_name`): ASR, encoders and the emotion model.

    Drafts go to the audio encoder as soon as the job has them, and their transcripts on to the text
    encoder; a closed utterance whose audio was drafted gets those results attached here, and the
    application skips the encoders for it (`drafts`)."""

    @classmethod
    def for_settings(cls, settings: Settings) -> ServeClient:
        """The client of the application `live.serve_app`, with the live job's scoring timeout and describe roles;
        drafts' transcripts go to the text encoder only if a served model reads them (`scoring_voice`)."""
        return cls(settings.live.serve_app, scoring_voice(settings), settings.live.score_timeout_seconds,
                   settings.live.describe_roles)

    def __init__(self, app_name: str, voice: VoiceSettings, timeout_seconds: float = 60.0,
                 describe_roles: tuple[str, ...] = ()) -> None:
        self.voice = voice
        self.timeout_seconds = timeout_seconds  # one scoring call (the live job's `live.score_timeout_seconds`)
        self.describe_roles = describe_roles  # the Describer writes words for these speakers' utterances (`describe_call`)
        self.ingress = serve.get_app_handle(app_name)
        self.audio = serve.get_deployment_handle(AudioEncoder.name, app_name)
        self.text = serve.get_deployment_handle(TextEncoder.name, app_name) if embeds_text(voice) else None
        # per draft: the pending Whisper response, the pending text embeddings (or None), the draft's position in them
        self.prepared: PreparedResults[tuple[Any, Any, int]] = PreparedResults()

    def score(self, bundles: list[UtteranceBundle], contexts: StreamContexts) -> tuple[list[dict[str, Any]], StreamContexts]:
        bundles = [self._with_prepared(bundle) for bundle in bundles]
        response = self.ingress.score_bundles.remote(bundles, contexts, **describe_call(self.describe_roles, bundles))
        try:
            return response.result(timeout_s=self.timeout_seconds)
        except TimeoutError:
            # An abandoned call must not keep its place in the Ingress queue: the queue is bounded (503 past it),
            # and under overload each retry would leave one more there.
            response.cancel()
            raise

    def prepare(self, drafts: list[Draft]) -> None:
        recognised = self.audio.recognise.remote([draft.audio for draft in drafts])
        texts = self.text.embed_recognised.remote(recognised) if self.text is not None else None  # Serve chains them
        for i, draft in enumerate(drafts):
            self.prepared.put(draft.stream_id, draft.audio, (recognised, texts, i))

    def _with_prepared(self, bundle: UtteranceBundle) -> UtteranceBundle:
        kept = self.prepared.take(bundle.stream_id, bundle.audio)
        if kept is None:
            return bundle
        recognised, texts, position = kept
        started = time.perf_counter()
        try:
            result = recognised.result(timeout_s=self.timeout_seconds)[position]
            embedding = texts.result(timeout_s=self.timeout_seconds)[position] if texts is not None else None
        except Exception:  # the application encodes the closed utterance instead  # noqa: BLE001
            log.warning("stream %s: encoding the draft failed; encoding the utterance again", bundle.stream_id, exc_info=True)
            self.prepared.failed()
            return bundle
        bundle = with_recognition([bundle], [result], self.voice, time.perf_counter() - started)[0]
        return replace(bundle, text_embedding=embedding) if embedding is not None else bundle


def describe_call(roles: tuple[str, ...], bundles: list[UtteranceBundle]) -> dict[str, Any]:
    """What a scoring call asks of the Describer under `live.describe_roles`: the roles, when any of these utterances
    has one of them; else nothing, so the call is the one the job makes without a describer (the default: no role)."""
    return {"describe_roles": roles} if any(bundle.role in roles for bundle in bundles) else {}


def score_with_retries(scorer: ScoringService, bundles: list[UtteranceBundle], contexts: StreamContexts, attempts: int,
                       timeout: float) -> tuple[list[dict[str, Any]], StreamContexts]:
    """`scorer.score`, each try bounded by `timeout` seconds, up to `attempts` tries; else `ScoringFailed`."""
    stream = bundles[0].stream_id if bundles else "?"
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            return _within(timeout, lambda: scorer.score(bundles, contexts))
        except Exception as error:  # noqa: BLE001 (any failure of the service is retried, then reported)
            last = error
            log.warning("stream %s: scoring %d utterances failed (try %d of %d): %r", stream, len(bundles), attempt,
                        attempts, error)
            if attempt < attempts:
                time.sleep(RETRY_PAUSE * 2 ** (attempt - 1))
    raise ScoringFailed(f"stream {stream!r}: scoring {len(bundles)} utterances failed {attempts} times, the last "
                        f"with {last!r}") from last


def _within(timeout: float, call: Callable[[], R]) -> R:
    """`call()`, or TimeoutError after `timeout` seconds (the call is left to finish on a daemon thread: a
    service that hangs must not hang the job)."""
    result: list[R] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as error:  # noqa: BLE001 (handed to the waiting thread)
            failure.append(error)

    thread = threading.Thread(target=run, name="emostream-score-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if failure:
        raise failure[0]
    if not result:
        raise TimeoutError(f"no answer within {timeout} s")
    return result[0]
