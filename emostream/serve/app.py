"""The Ray Serve application: perception, encoders and the emotion model as composed deployments.

    ingress (FastAPI) ─► Perceiver           per segment: faces, prosody frames, thumbnails
                     ─► (per-request session: voice activity, speakers, utterances)
                     ─► AudioEncoder        Whisper: transcript + audio embedding
                     ─► TextEncoder         sentence embedding of the transcript
                     ─► Scorer              @serve.batch across requests -> emotion events
                     ─► Describer           only for describe=true (and only when serve.describer is set): an
                                            LLM's open-vocabulary words and measured cues, added to the events

Build it with `build_app(args)` (args: settings overrides, e.g. {"serve": {"model": "/models/x"}}),
or `serve run emostream.serve.app:build_app`. HTTP:
    POST /v1/analyze   the body is a media file (any container PyAV reads); ?stream_id=&channels=agent,customer
                       &describe=true (open-vocabulary words and a generated explanation: slower, needs a describer)
    POST /v1/score     one pre-extracted utterance (JSON, `UtteranceFeatures`) -> its event; ?describe=true as above
    GET  /v1/healthz   liveness, no token needed
    GET  /v1/model     the served model's name, version and labels
    GET  /openapi.json, /docs   the API's description (behind the token too, when one is set)
An upload is streamed into an unnamed temporary file (O_TMPFILE: no directory entry, so nothing of the
media stays on disk if the replica dies mid-request) and decoded off the event loop. Limits: the body's size
(serve.max_upload_megabytes, serve.max_score_megabytes: 413), the media's duration (serve.max_media_seconds:
413), the time a request's calls to the other deployments may take (serve.request_timeout_seconds: 504), and
each deployment's queue (max_queued_requests in PROFILES: 503 once full, instead of an unbounded backlog).
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at run time, and
# Serve's class-based ingress hides string annotations from it (a `Request` became a query parameter).
import asyncio
import hmac
import io
import logging
import tempfile
import time
from collections.abc import Awaitable, Iterator
from dataclasses import replace
from typing import IO, Annotated, Any, Self

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray import serve

from emostream.contracts import MAX_STREAM_SECONDS, Role, StreamId, UtteranceEmotionEvent, describe_validation_error
from emostream.settings import Settings, load_settings

log = logging.getLogger(__name__)
# The API description is served by the ingress itself, behind the token when one is set.
api = FastAPI(title="emostream", version="1", description="Per-utterance, multimodal emotion scoring.",
              docs_url=None, redoc_url=None, openapi_url=None)

Finite = Annotated[float, Field(allow_inf_nan=False)]
MAX_FEATURE_VALUES = 200_000  # floats in one feature list (a 30 s utterance's face features at 15 fps: 57,600)


class UtteranceFeatures(BaseModel):
    """A pre-extracted utterance, as the training feature cache stores it (no raw media)."""

    model_config = ConfigDict(extra="forbid")

    stream_id: StreamId
    speaker: Role
    start: float = Field(ge=0, le=MAX_STREAM_SECONDS, allow_inf_nan=False)
    end: float = Field(ge=0, le=MAX_STREAM_SECONDS, allow_inf_nan=False)
    transcript: str | None = Field(None, max_length=20_000)
    prosody: list[float] = Field(max_length=64)  # PROSODY_NAMES order (NaN where a measure is undefined)
    audio_embedding: list[Finite] | None = Field(None, max_length=MAX_FEATURE_VALUES)  # what the model reads: 768 or 3,840 (Whisper)
    speaker_embedding: list[Finite] | None = Field(None, max_length=MAX_FEATURE_VALUES)  # 256: resemblyzer
    text_embedding: list[Finite] | None = Field(None, max_length=MAX_FEATURE_VALUES)  # 384: all-MiniLM-L6-v2
    face_times: list[Finite] | None = Field(None, max_length=MAX_FEATURE_VALUES)
    face_expression: list[Finite] | None = Field(None, max_length=MAX_FEATURE_VALUES)  # n x 7, flattened
    face_features: list[Finite] | None = Field(None, max_length=MAX_FEATURE_VALUES)  # n x 128
    face_geometry: list[Finite] | None = Field(None, max_length=MAX_FEATURE_VALUES)  # n x 11
    face_geometry_z: list[Finite] | None = Field(None, max_length=MAX_FEATURE_VALUES)  # n x 11

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Perceiver:
    """Faces, prosody frames and thumbnails of one decoded segment (the per-segment models)."""

    def __init__(self, settings_json: str) -> None:
        from emostream.perception.segment import SegmentPerceiver  # noqa: PLC0415

        self.perceiver = SegmentPerceiver(Settings.model_validate_json(settings_json))

    def perceive(self, segment: Any) -> Any:
        return self.perceiver(segment)


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class AudioEncoder:
    """Whisper over each utterance: transcript (unless ASR is off) and audio embedding.

    `recognise` takes bare audio: the live job sends a draft utterance's while its closing pause runs out,
    and attaches the result to the closed utterance itself; `encode` leaves such bundles as they are.
    """

    def __init__(self, settings_json: str) -> None:
        from emostream.perception.encode import speech_recogniser, voice_for_model  # noqa: PLC0415

        settings = Settings.model_validate_json(settings_json)
        self.voice = voice_for_model(settings.voice, settings.serve.model)  # the features the Scorer's model reads
        self.transcriber = speech_recogniser(self.voice)

    async def encode(self, bundles: list[Any]) -> list[Any]:
        """The bundles with their Whisper results (those that have an audio embedding already are kept)."""
        from emostream.perception.encode import needs_audio_encoding, with_recognition  # noqa: PLC0415

        todo = [i for i, bundle in enumerate(bundles) if needs_audio_encoding(bundle)]
        if not todo:
            return bundles
        started = time.perf_counter()
        results = await self.recognise_batch([bundles[i].audio for i in todo])
        encoded = with_recognition([bundles[i] for i in todo], results, self.voice, (time.perf_counter() - started) / len(todo))
        out = list(bundles)
        for i, bundle in zip(todo, encoded, strict=True):
            out[i] = bundle
        return out

    async def recognise(self, audios: list[Any]) -> list[Any]:
        """Whisper results (`Recognised`) of bare audio, batched with the utterances being encoded."""
        return await self.recognise_batch(audios)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def recognise_batch(self, requests: list[list[Any]]) -> list[list[Any]]:
        """Concurrent requests (streams whose utterances closed together) in one batched Whisper call, off
        the event loop: Whisper runs them one batch at a time instead of all at once on shared cores."""
        flat = [audio for audios in requests for audio in audios]
        return _per_request(await asyncio.to_thread(self.transcriber.recognise, flat, self.voice.asr), requests)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class TextEncoder:
    """Sentence embeddings of the transcripts (none when `voice.text_embeddings` or ASR is off, or when no served model
    reads them: `scoring_voice`)."""

    def __init__(self, settings_json: str) -> None:
        from emostream.perception.encode import scoring_voice, text_embedder  # noqa: PLC0415

        self.sentences = text_embedder(scoring_voice(Settings.model_validate_json(settings_json)))

    def embed(self, bundles: list[Any]) -> list[Any]:
        """The bundles with the sentence embeddings of their transcripts (those that have one keep it)."""
        from emostream.perception.encode import embed_text  # noqa: PLC0415

        return embed_text(bundles, self.sentences)

    def embed_recognised(self, results: list[Any]) -> list[Any]:
        """Sentence embeddings of Whisper results' transcripts (`AudioEncoder.recognise`): the live job chains
        this to a draft's recognition, so a drafted utterance closes with both."""
        from emostream.perception.encode import embed_transcripts  # noqa: PLC0415

        return embed_transcripts([result.text for result in results], self.sentences)


def _per_request(results: list[Any], requests: list[list[Any]]) -> list[list[Any]]:
    """A batched call's results, handed back to the requests they came from."""
    out, first = [], 0
    for bundles in requests:
        out.append(results[first : first + len(bundles)])
        first += len(bundles)
    return out


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Scorer:
    """The emotion model (`EmotionScorer`); utterance lists of concurrent requests are scored in one batch."""

    def __init__(self, settings_json: str) -> None:
        from emostream.models.score import serve_scorer  # noqa: PLC0415

        settings = Settings.model_validate_json(settings_json).serve
        self.scorer = serve_scorer(settings)
        self.score_batch.set_max_batch_size(settings.max_batch_size)
        self.score_batch.set_batch_wait_timeout_s(settings.batch_wait_seconds)

    def info(self) -> dict[str, Any]:
        config = self.scorer.model.config
        return {"name": self.scorer.info.name, "version": self.scorer.info.version, "labels": list(config.labels),
                "label_set": config.label_set, "llm": config.llm_config is not None,
                "parameters": sum(p.numel() for p in self.scorer.model.parameters())}

    async def score(self, bundles: list[Any], contexts: Any = None) -> tuple[list[dict[str, Any]], Any]:
        """Events of `bundles`, and the streams' contexts after them.

        contexts : a `StreamContexts` the caller keeps for these streams (the live job: speaker statistics
        and model memory carry over between calls); None scores the bundles on their own.
        Raises ValueError for bundles the model cannot take, before they join a batch: one bad request
        fails alone instead of failing every request batched with it.
        """
        self.check(bundles)
        return await self.score_batch((bundles, contexts))

    def check(self, bundles: list[Any]) -> None:
        """Raise ValueError unless `bundles` collate into finite model inputs (the shapes this model reads)."""
        import torch  # noqa: PLC0415

        from emostream.models.inputs import collate  # noqa: PLC0415

        model = self.scorer.model
        try:
            inputs = collate(bundles, model.config, model.audio_adapter.encoder is not None)
        except (ValueError, TypeError, IndexError) as error:
            raise ValueError(f"bad utterance features for this model: {error}") from error
        for name, value in vars(inputs).items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"bad utterance features for this model: {name} holds NaN or infinite values")

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def score_batch(self, requests: list[tuple[list[Any], Any]]) -> list[tuple[list[dict[str, Any]], Any]]:
        """Requests' streams are kept apart in the batch: their ids are made unique per request."""
        from emostream.models.score import StreamContexts  # noqa: PLC0415

        names: dict[str, tuple[int, str]] = {}  # request-unique stream id -> (request, the stream's own id)
        tagged = []
        merged = StreamContexts()
        for i, (bundles, contexts) in enumerate(requests):
            for bundle in bundles:
                tag = f"r{i}-{bundle.stream_id}"[:200]
                if tag not in names and contexts is not None:
                    merged.absorb(contexts.take(bundle.stream_id, tag))
                names[tag] = (i, bundle.stream_id)
                tagged.append(replace(bundle, stream_id=tag))
        events = await asyncio.to_thread(self.scorer.score, tagged, merged)
        out: list[tuple[list[dict[str, Any]], Any]] = [([], contexts) for _, contexts in requests]
        for event in events:
            index, stream = names[event.stream_id]
            out[index][0].append(event.model_copy(update={"stream_id": stream}).model_dump(mode="json"))
        for tag, (index, stream) in names.items():
            if requests[index][1] is not None:
                requests[index][1].absorb(merged.take(tag, stream))
        return out


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Describer:
    """A model with a language model (serve.describer) writing each utterance's open-vocabulary words and the measured
    cues behind them; its own replicas and batches, so requests that do not ask for it never wait on it."""

    def __init__(self, settings_json: str) -> None:
        from emostream.models.llm import load_describer  # noqa: PLC0415

        settings = Settings.model_validate_json(settings_json).serve
        assert settings.describer is not None  # build_app deploys the Describer only when one is set
        self.model, self.tokenizer = load_describer(settings.describer)
        self.max_new_tokens = settings.describer_max_new_tokens
        self.describe_batch.set_max_batch_size(settings.describer_max_batch_size)

    async def describe(self, bundles: list[Any]) -> list[dict[str, Any] | None]:
        """Per bundle: {"open_vocabulary": [...], "explanation": ...}, or None where the answer did not parse."""
        return await self.describe_batch(bundles)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def describe_batch(self, requests: list[list[Any]]) -> list[list[dict[str, Any] | None]]:
        from emostream.models.llm import describe, description  # noqa: PLC0415

        answers = await asyncio.to_thread(describe, self.model, self.tokenizer, [b for r in requests for b in r], self.max_new_tokens)
        return _per_request([description(a) for a in answers], requests)


# Helpers of the ingress stand above it: Serve serialises the class where it is defined.
def _next_or_none(items: Iterator[Any]) -> Any:
    return next(items, None)


def _cause(error: Exception) -> str:
    """The message of an error, without the traceback Ray wraps around one raised in another actor."""
    cause = getattr(error, "cause", None)
    return str(cause if isinstance(cause, Exception) else error).strip().splitlines()[-1]


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Ingress:
    def __init__(self, settings_json: str, perception: Any, audio: Any, text: Any, model: Any, describer: Any = None) -> None:
        from emostream.perception.encode import embeds_text, scoring_voice  # noqa: PLC0415

        self.settings = Settings.model_validate_json(settings_json)
        self.perception, self.audio, self.text, self.model = perception, audio, text, model
        self.embeds_text = embeds_text(scoring_voice(self.settings))  # else the TextEncoder would return bundles as sent
        self.describer = describer  # None: no serve.describer, describe=true is refused

    def _authorise(self, request: Request) -> None:
        token = self.settings.serve.bearer_token
        given = request.headers.get("authorization", "").encode()
        if token and not hmac.compare_digest(given, f"Bearer {token}".encode()):  # constant time: no timing oracle
            raise HTTPException(status_code=401, detail="missing or wrong bearer token")

    async def _within(self, call: Awaitable[Any], deadline: float, what: str) -> Any:
        """`call` (to another deployment) awaited until the request's `deadline` (time.monotonic()): a hung or
        overloaded deployment ends the request with 504 instead of holding the client; a full queue is a 503."""
        from ray.serve.exceptions import BackPressureError  # noqa: PLC0415

        try:
            return await asyncio.wait_for(call, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise HTTPException(status_code=504, detail=(
                f"{what} did not answer within serve.request_timeout_seconds "
                f"({self.settings.serve.request_timeout_seconds:g} s): it is hung or overloaded; try again later")) from None
        except BackPressureError:
            raise HTTPException(status_code=503, detail=f"{what} has a full queue (max_queued_requests): try again later"
                                ) from None

    def _deadline(self) -> float:
        return time.monotonic() + self.settings.serve.request_timeout_seconds

    async def score_bundles(self, bundles: list[Any], contexts: Any = None, describe: bool = False,
                            describe_roles: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], Any]:
        """Encode and score utterance bundles (the live job calls this through a handle, with its streams'
        `StreamContexts`); the events and the contexts after them. `describe`: the describer adds its words and
        explanation to each event (refused without one); `describe_roles`: to the events of speakers with these
        roles only (the live job's `live.describe_roles`)."""
        from emostream.perception.encode import needs_audio_encoding, needs_text_encoding  # noqa: PLC0415

        described_at = [i for i, bundle in enumerate(bundles) if describe or bundle.role in describe_roles]
        describer = self._describer() if describe or described_at else None
        if not bundles:
            return [], contexts
        if any(map(needs_audio_encoding, bundles)):  # drafted utterances come encoded: no call for nothing
            bundles = await self.audio.encode.remote(bundles)
        if self.embeds_text and any(map(needs_text_encoding, bundles)):
            bundles = await self.text.embed.remote(bundles)
        if describer is None:
            return await self.model.score.remote(bundles, contexts)
        (events, contexts), described = await asyncio.gather(
            self.model.score.remote(bundles, contexts), describer.describe.remote([bundles[i] for i in described_at]))
        return self._with_words(events, described, described_at), contexts

    def _describer(self) -> Any:
        if self.describer is None:
            raise HTTPException(status_code=400, detail="describe=true (or live.describe_roles) needs a describer: set "
                                                        "serve.describer to a model with a language model (e.g. a "
                                                        "fine-tuned mllm export)")
        return self.describer

    @staticmethod
    def _with_words(events: list[dict[str, Any]], described: list[dict[str, Any] | None],
                    at: list[int] | None = None) -> list[dict[str, Any]]:
        """Events with the describer's open-vocabulary words, and its explanation where it cited measured cues;
        `described` are those of the events `at` these positions (None: of every event)."""
        from emostream.models.llm import described_fields  # noqa: PLC0415

        for i, found in zip(range(len(events)) if at is None else at, described, strict=True):
            events[i].update(described_fields(found, events[i]["explanation"]))
        return events

    @api.get("/v1/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> dict[str, Any]:
        self._authorise(request)
        return api.openapi()

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request) -> HTMLResponse:
        """Swagger UI; with a token set, the page loads but its schema request needs the token (closed)."""
        self._authorise(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title="emostream")

    @api.get("/v1/model")
    async def model_info(self, request: Request) -> dict[str, Any]:
        self._authorise(request)
        return await self._within(self.model.info.remote(), self._deadline(), "the Scorer")

    @api.post("/v1/analyze", response_model=list[UtteranceEmotionEvent])
    async def analyze(self, request: Request, stream_id: str = "upload", channels: str | None = None,
                      describe: bool = False) -> list[dict[str, Any]]:
        """Upload a clip as the request body; get one event per utterance in it (describe=true: with the describer's
        open-vocabulary words and explanation)."""
        from emostream.media.decode import DecodeError  # noqa: PLC0415
        from emostream.media.records import file_segments  # noqa: PLC0415
        from emostream.media.segmenter import MediaError  # noqa: PLC0415
        from emostream.perception.session import StreamSession  # noqa: PLC0415

        self._authorise(request)
        if describe:
            self._describer()  # refused before the upload is read
        limit = int(self.settings.serve.max_upload_megabytes * 1e6)
        longest = self.settings.serve.max_media_seconds
        roles = tuple(channels.split(",")) if channels else None
        bundles: list[Any] = []
        # Unnamed (O_TMPFILE): no path exists, so no raw media is left behind if the replica dies; the kernel
        # frees it when the file is closed or the process ends. PyAV opens it through /proc/self/fd.
        with tempfile.TemporaryFile(prefix="emostream-upload-") as media:
            size = await self._receive(request, media, limit)
            if not size:
                raise HTTPException(status_code=400, detail="empty body: send the media file as the request body")
            path = f"/proc/self/fd/{media.fileno()}"
            deadline = self._deadline()
            session = StreamSession(stream_id, self.settings)
            segments = file_segments(path, stream_id, self.settings.ingest, roles)
            try:
                while (segment := await asyncio.to_thread(_next_or_none, segments)) is not None:  # decode off the loop
                    if segment.end > longest:  # checked per segment: a container's declared duration can lie
                        raise HTTPException(status_code=413, detail=f"the upload's media runs past serve.max_media_seconds "
                                                                    f"({longest:g} s): send a shorter clip or split it")
                    if segment.is_end_marker:
                        bundles += await asyncio.to_thread(session.flush)
                    else:
                        perceived = await self._within(self.perception.perceive.remote(segment), deadline, "the Perceiver")
                        bundles += await asyncio.to_thread(session.push, perceived)
            except (MediaError, DecodeError, ValueError) as error:
                detail = str(error).replace(path, "the upload")  # never a server path in a response
                raise HTTPException(status_code=422, detail=f"cannot read the upload: {detail}") from error
            finally:
                segments.close()
        events, _ = await self._within(self.score_bundles(bundles, describe=describe), deadline,
                                       "encoding and scoring (AudioEncoder, TextEncoder, Scorer)")
        return events

    async def _receive(self, request: Request, sink: IO[bytes], limit: int) -> int:
        """Stream the request body into `sink` (413 past `limit` bytes); its size."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(status_code=413, detail=f"upload of {int(declared)} bytes is over the {limit}-byte limit")
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(status_code=413, detail=f"upload is over the {limit}-byte limit")
            sink.write(chunk)
        sink.flush()
        return size

    @api.post("/v1/score", response_model=UtteranceEmotionEvent,
              openapi_extra={"requestBody": {"required": True,
                                              "content": {"application/json": {"schema": UtteranceFeatures.model_json_schema()}}}})
    async def score(self, request: Request, describe: bool = False) -> dict[str, Any]:
        """Score one utterance whose features were extracted elsewhere (JSON, `UtteranceFeatures`); describe=true: with
        the describer's open-vocabulary words and explanation."""
        from emostream.perception.utterance import bundle_from_features  # noqa: PLC0415

        self._authorise(request)
        body = io.BytesIO()
        await self._receive(request, body, int(self.settings.serve.max_score_megabytes * 1e6))
        try:
            features = UtteranceFeatures.model_validate_json(body.getvalue())
        except ValidationError as error:
            raise HTTPException(status_code=422, detail=f"bad utterance features: {describe_validation_error(error)}") from None
        row = {**features.model_dump(), "key": f"{features.stream_id}:{features.start}", "variant": 0}
        deadline = self._deadline()
        try:
            bundle = replace(bundle_from_features(row), stream_id=features.stream_id)
            # checked by the model before it joins a batch
            events, _ = await self._within(self.model.score.remote([bundle]), deadline, "the Scorer")
        except (ValueError, TypeError) as error:
            raise HTTPException(status_code=422, detail=f"bad utterance features: {_cause(error)}") from error
        if describe:
            described = await self._within(self._describer().describe.remote([bundle]), deadline, "the Describer")
            events = self._with_words(events, described)
        return events[0]


# Replicas, resources and autoscaling per profile; `emostream serve-config` writes them into
# deployments/serve-<profile>.yaml (the format `serve build` writes), which is what a deployment reads.
# Every deployment's queue is bounded (max_queued_requests, at each caller: the HTTP proxy, an Ingress replica,
# the live job's handle): past it a request fails at once (HTTP 503) instead of joining an ever longer backlog
# that holds memory and answers too late. The Ingress queue takes the live job's live.max_in_flight (64) calls.
QUEUES = {"Ingress": 128, "Perceiver": 64, "AudioEncoder": 256, "TextEncoder": 256, "Scorer": 256, "Describer": 64}
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "local": {  # one machine, two cores, shared with the live job's perception and sessions: small CPU shares
        "Ingress": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}},
        "Perceiver": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.2}},
        "AudioEncoder": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.4}},
        "TextEncoder": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}},
        "Scorer": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.2}, "max_ongoing_requests": 32},
        "Describer": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.2}},  # an LLM: seconds per answer on CPU
    },
    "cluster": {  # KubeRay: autoscaling on queue length, a CPU per replica (GPUs in the prod overlay)
        "Ingress": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5}},
        "Perceiver": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 16, "target_ongoing_requests": 2},
                              "ray_actor_options": {"num_cpus": 1}},
        "AudioEncoder": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 16, "target_ongoing_requests": 2},
                         "ray_actor_options": {"num_cpus": 1}},
        "TextEncoder": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 4},
                        "ray_actor_options": {"num_cpus": 0.5}},
        "Scorer": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 16},
                         "ray_actor_options": {"num_cpus": 1}, "max_ongoing_requests": 64},
        "Describer": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8},
                      "ray_actor_options": {"num_cpus": 1, "num_gpus": 1}},  # a GPU each: generation is the slow part
    },
}
APP_NAME = "emostream"
IMPORT_PATH = "emostream.serve.app:build_app"


def build_app(args: dict[str, Any] | None = None, profile: str = "local") -> serve.Application:
    """The application, with settings from the environment/config file and `args` laid over them.

    `serve run`/`serve deploy` call this with the config's `args`; "profile" there picks PROFILES.
    """
    args = dict(args or {})
    profile = args.pop("profile", profile)
    settings = load_settings(**args)
    blob = settings.model_dump_json()
    options = PROFILES[profile]
    part = {d.name: d.options(**options[d.name], max_queued_requests=QUEUES[d.name])
            for d in (Ingress, Perceiver, AudioEncoder, TextEncoder, Scorer, Describer)}
    encoders = (part["Perceiver"].bind(blob), part["AudioEncoder"].bind(blob), part["TextEncoder"].bind(blob))
    # The describer is deployed only when configured: the default app (and its Serve config files) stays as it was.
    describer = part["Describer"].bind(blob) if settings.serve.describer else None
    return part["Ingress"].bind(blob, *encoders, part["Scorer"].bind(blob), describer)


def deploy(settings: Settings, profile: str = "local") -> None:
    """Deploy the application as `settings.live.serve_app` with exactly these settings, unless it runs already
    (call from a process connected to Ray)."""
    from ray.serve.exceptions import RayServeException  # noqa: PLC0415

    try:
        serve.get_app_handle(settings.live.serve_app)
        return
    except RayServeException:
        pass
    serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
    serve.run(build_app({**settings.model_dump(mode="json"), "profile": profile}), name=settings.live.serve_app,
              route_prefix="/")
