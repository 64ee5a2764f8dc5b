"""The live job: media topic → Ray Data perception → session actors → Serve scoring → emotions topic.

    KafkaMediaSource (endless read tasks, our offsets)
      → map_batches(SegmentStage)       per segment: check, decode, faces, prosody  (actor pool)
      → driver: per-stream seq order    (StreamOrderer; duplicates and late segments dead-lettered)
      → session threads → SessionActor  utterances, speakers, face tracks (one thread per actor, stream hashed);
                                        drafts (utterances in their closing pause) → Serve: Whisper, text embedding start early
      → scorer threads (per stream)     Serve: ASR + audio, text, emotion model, with the stream's context
      → emotions topic; offsets committed past a stream once it ended and all its events are out

Delivery: a partition's commit never passes the first segment of a stream that is still open,
and moves past an ended stream only once all of its events were sent (and the producer
flushed). After a crash — of the job, or of a session actor, on which the job rebuilds its
pipeline — the open streams replay from their first segment through fresh sessions, which
find the same utterances and speakers again: repeated events have the ids of the first.
Streams that had ended before the crash but lie after the commit point are named in the
commit's metadata and skipped on replay.

The price of exact replay is that Kafka must keep a stream's media for as long as the stream
is open (retention ≥ the longest call), and a restart re-processes the open streams from
their start (several times faster than real time).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

import ray
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata
from ray.exceptions import RayActorError, RayTaskError

from emostream.contracts import DeadLetterEvent
from emostream.ingest.consumer import OffsetTracker
from emostream.ingest.ordering import Outcome, Rejection, StreamOrderer
from emostream.kafka.clients import consumer as make_consumer
from emostream.kafka.clients import producer as make_producer
from emostream.live.drafts import PreparedResults
from emostream.live.sessions import SessionActor, owner, with_roles
from emostream.live.source import TICK, KafkaMediaSource, media_partitions
from emostream.live.stages import REJECTED, SegmentStage, dead_letter
from emostream.metrics import Metrics
from emostream.models.score import StreamContexts
from emostream.perception.encode import embeds_text, with_recognition
from emostream.perception.session import Draft
from emostream.perception.utterance import UtteranceBundle
from emostream.settings import Settings, VoiceSettings

log = logging.getLogger(__name__)

EXECUTOR_WAIT_SECONDS = 0.02  # Ray Data's executor step (see _shorten_executor_wait)
MAX_ENDED_IN_METADATA = 40  # ended streams named per partition in the commit metadata (Kafka allows ~4 KB)


class SessionLost(RuntimeError):
    """A session actor died: its streams' state is gone and must be rebuilt from the commit."""


@dataclass(frozen=True)
class Held:
    """A segment's offset, held until its stream ended and every event of the stream was sent."""

    tp: TopicPartition
    offset: int
    start: float
    end: float
    sent_ms: int  # producer wall clock of the segment, for end-to-end latency


@dataclass
class ScoreJob:
    stream_id: str
    bundles: list[UtteranceBundle]
    release: list[Held]  # offsets done once the bundles' events are sent
    ended: bool  # the stream ended with this job: forget its context
    wall_end: list[float] = field(default_factory=list)  # per bundle: wall clock of the utterance's end


@dataclass(frozen=True)
class SessionPush:
    stream_id: str
    payload: bytes  # the pickled PerceivedSegment
    ended: bool


FLUSH_IDLE = None  # a session thread's item: flush the actor's idle streams


@dataclass
class JobStats:
    segments: int = 0
    events: int = 0
    dead_letters: int = 0
    restarts: int = 0
    ended_streams: set[str] = field(default_factory=set)


class Scorer(Protocol):
    def score(self, bundles: list[UtteranceBundle], contexts: StreamContexts) -> tuple[list[dict[str, Any]], StreamContexts]:
        """A stream's utterance bundles scored with its context: the events (JSON-ready) and the context after them."""

    def prepare(self, drafts: list[Draft]) -> None:
        """Start encoding utterances that are likely to close (`StreamSession.drafts`); returns at once."""


class LiveJob:
    """Runs until `stop` is set (or `until(stats)` is true); call from a process connected to Ray."""

    def __init__(self, settings: Settings, scorer: Scorer, metrics: Metrics | None = None, group_id: str | None = None) -> None:
        self.settings = settings
        self.live = settings.live
        self.scorer = scorer
        self.metrics = metrics or Metrics()
        self.group_id = group_id or settings.kafka.group_id
        self.stats = JobStats()
        self.latencies: deque[tuple[str, float]] = deque(maxlen=100_000)  # (stream, end-to-end seconds) of recent events
        self.producer = make_producer(settings.kafka)
        self.committer = make_consumer(settings.kafka, group_id=self.group_id)
        self._lock = threading.Lock()  # offsets and stats, shared with the scorer threads
        self._actors: list[Any] = []
        self._lost: str | None = None  # why the session actors' state is gone (set by a session thread)
        self._sessions: list[_Worker[SessionPush | None]] = []
        self._scorers = StreamWorkers(self._score_job, self.live.max_in_flight)
        self._reset()

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, until: Callable[[JobStats], bool] | None = None) -> JobStats:
        stop = stop or threading.Event()
        # Session calls run off the driver's loop, one thread per actor (in parallel across actors; a
        # stream's in order): a push that closes an utterance embeds its voice (~0.1 s) and must not hold
        # up the other streams' segments.
        self._sessions = [_Worker(f"emostream-session-{i}", lambda item, i=i: self._push(i, item), self.live.max_in_flight)
                          for i in range(self.live.session_actors)]
        try:
            while not stop.is_set():
                try:
                    self._pipeline(stop, until)
                    break
                except SessionLost as error:
                    log.warning("%s: replaying from the last commit", error)
                    self.stats.restarts += 1
                    self._drain()
                    self._commit()
                    self._reset()
        finally:
            self._drain()
            self._commit()
            for worker in [*self._sessions, self._scorers]:
                worker.stop()
            for actor in self._actors:
                ray.kill(actor)
            self.producer.close()
            self.committer.close()
        return self.stats

    def _reset(self) -> None:
        ingest = self.settings.ingest
        self.orderer: StreamOrderer[dict[str, Any]] = StreamOrderer(ingest.reorder_buffer, ingest.gap_timeout_seconds,
                                                                     ingest.stream_idle_seconds)
        self.offsets = OffsetTracker()
        self.held: dict[str, deque[Held]] = defaultdict(deque)  # per open stream, in seq order
        self.highwater: dict[TopicPartition, int] = {}
        self.contexts: dict[str, StreamContexts] = {}
        self.unordered: dict[int, dict[int, dict[str, Any]]] = {}  # per read task: rows ahead of their turn
        self.next_index: dict[int, int] = {}
        self.read_up_to: dict[TopicPartition, int] = {}  # next offset after the last record read, per partition
        self.ended: dict[TopicPartition, dict[str, int]] = defaultdict(dict)  # ended stream -> its last offset
        self.skip = self._ended_before_commit()
        for actor in self._actors:
            ray.kill(actor)
        self._lost = None
        blob = self.settings.model_dump_json()
        self._actors = [SessionActor.options(name=f"emostream-session-{self.group_id}-{i}").remote(blob)  # type: ignore[attr-defined]
                        for i in range(self.live.session_actors)]
        ray.get([actor.ping.remote() for actor in self._actors])

    def _ended_before_commit(self) -> set[str]:
        """Streams that ended, with all their events sent, before the last commit (from its metadata)."""
        skip: set[str] = set()
        for partition in media_partitions(self.settings.kafka):
            committed = self.committer.committed(TopicPartition(self.settings.kafka.media_topic, partition), metadata=True)
            if committed is not None and committed.metadata:
                skip.update(json.loads(committed.metadata).get("ended", []))
        return skip

    def _dataset(self):  # type: ignore[no-untyped-def]
        from ray.data import DataContext  # noqa: PLC0415

        context = DataContext.get_current()
        context.target_max_block_size = self.live.block_bytes
        context.enable_progress_bars = False
        _shorten_executor_wait()
        live = self.live
        source = KafkaMediaSource(self.settings.kafka, self.group_id, live.source_tasks, live.poll_seconds)
        ds = ray.data.read_datasource(source, num_cpus=0.05, override_num_blocks=live.source_tasks)
        return ds.map_batches(SegmentStage, fn_constructor_args=(self.settings.model_dump_json(),), batch_size=1,
                              batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=live.perception_actors),
                              num_cpus=live.perception_cpus)

    def _pipeline(self, stop: threading.Event, until: Callable[[JobStats], bool] | None) -> None:
        last_commit = last_idle = time.monotonic()
        rows = _rows(self._dataset())
        try:
            for row in rows:
                for ready in self._in_source_order(row):
                    self._take(ready)
                now = time.monotonic()
                if now - last_idle >= 1.0:
                    last_idle = now
                    self._apply(self.orderer.tick())
                    for worker in self._sessions:
                        worker.put(FLUSH_IDLE)
                if self._lost is not None:
                    raise SessionLost(self._lost)
                if now - last_commit >= self.live.commit_seconds:
                    last_commit = now
                    self._commit()
                if stop.is_set() or (until is not None and self._idle() and until(self.stats)):
                    stop.set()
                    return
        finally:
            rows.close()

    # -- one row ---------------------------------------------------------------------------------

    def _in_source_order(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows back in the order their read task read them (the perception actors finish out of order)."""
        task = row["task"]
        waiting = self.unordered.setdefault(task, {})
        waiting[row["index"]] = row
        ready = []
        while (expected := self.next_index.get(task, 0)) in waiting:
            ready.append(waiting.pop(expected))
            self.next_index[task] = expected + 1
        return ready

    def _take(self, row: dict[str, Any]) -> None:
        tp = TopicPartition(row["topic"], row["partition"])
        if row["highwater"] is not None and row["highwater"] >= 0:
            self.highwater[tp] = row["highwater"]
        if row["kind"] == TICK:
            return
        self.metrics.stage.labels("decode").observe(row["decode_seconds"])
        self.metrics.stage.labels("fetch").observe(max(0.0, (row["read_ms"] - row["timestamp_ms"]) / 1000))
        self.metrics.stage.labels("ingest").observe(max(0.0, time.time() - row["read_ms"] / 1000))
        self.read_up_to[tp] = row["offset"] + 1
        with self._lock:
            self.offsets.add(tp, row["offset"])
        if row["stream_id"] in self.skip:  # its events were all sent before the crash
            with self._lock:
                self.offsets.done(tp, row["offset"])
            return
        if row["kind"] == REJECTED and row["seq"] is None:
            self._dead_letter(DeadLetterEvent.model_validate_json(row["payload"]), tp, row["offset"])
            return
        outcome = self.orderer.push(row["stream_id"], row["seq"], row, row["end_of_stream"])
        if outcome.rejected is not None:
            self._dead_letter(_rejected(row, outcome.rejected), tp, row["offset"])
        self._apply(outcome)

    def _apply(self, outcome: Outcome[dict[str, Any]]) -> None:
        for row, rejection in outcome.dropped:
            self._dead_letter(_rejected(row, rejection), TopicPartition(row["topic"], row["partition"]), row["offset"])
        for row in outcome.released:
            tp = TopicPartition(row["topic"], row["partition"])
            if row["kind"] == REJECTED:
                self._dead_letter(DeadLetterEvent.model_validate_json(row["payload"]), tp, row["offset"])
            else:
                self._segment(row, tp)

    def _segment(self, row: dict[str, Any], tp: TopicPartition) -> None:
        stream = row["stream_id"]
        self.metrics.segments.labels("processed").inc()
        self.metrics.frames.inc(row["frames"])
        self.metrics.faces.inc(row["faces"])
        self.metrics.stage.labels("perceive").observe(row["perceive_seconds"])
        with self._lock:
            self.held[stream].append(Held(tp, row["offset"], row["start"], row["end"], row["timestamp_ms"]))
            self.metrics.streams.set(len(self.held))
        self._sessions[owner(stream, len(self._sessions))].put(SessionPush(stream, row["payload"], row["end_of_stream"]))

    def _push(self, index: int, item: SessionPush | None) -> None:
        """Session thread `index`: a segment to its actor (or FLUSH_IDLE), and the utterances closed to scoring."""
        if self._lost is not None:
            return  # the pipeline is being rebuilt from the last commit: what is queued replays
        started = time.perf_counter()
        try:
            if item is FLUSH_IDLE:
                flushed: dict[str, list[UtteranceBundle]] = ray.get(self._actors[index].flush_idle.remote())
            else:
                bundles, drafts = ray.get(self._actors[index].push.remote(item.payload, self.live.prepare_drafts))
        except RayActorError:
            self._lost = f"session actor {index} died"
            return
        except RayTaskError:  # a bug met by this segment: it is lost, not the stream or the job
            log.exception("session actor %d failed on %s", index, "idle flush" if item is FLUSH_IDLE else item.stream_id)
            self.metrics.errors.labels("session_failed").inc()
            return
        if item is FLUSH_IDLE:
            for stream, closing in flushed.items():
                log.info("stream %s went idle: closing it", stream)
                self._submit(stream, closing, ended=True)
            return
        self.metrics.stage.labels("session").observe(time.perf_counter() - started)
        with self._lock:
            self.stats.segments += 1
        self._submit(item.stream_id, bundles, item.ended)
        if drafts := with_roles(drafts, self.live.score_roles):
            self.scorer.prepare(drafts)

    def _submit(self, stream: str, bundles: list[UtteranceBundle], ended: bool) -> None:
        """Hand a stream's closed utterances to its scorer; at its end, with all of its offsets."""
        scored = with_roles(bundles, self.live.score_roles)
        if len(scored) < len(bundles):
            self.metrics.skipped.labels("role").inc(len(bundles) - len(scored))
        if not scored and not ended:
            return  # most segments close nothing
        with self._lock:
            wall_ends = [self._wall_end(stream, b.end) for b in scored]
            release = list(self.held.pop(stream, ())) if ended else []
        self._scorers.put(ScoreJob(stream, scored, release, ended, wall_ends))

    def _wall_end(self, stream: str, end: float) -> float:
        """Wall-clock time at which the stream's media reached `end` (from the sending time of its segment)."""
        for held in reversed(self.held.get(stream, ())):
            if held.start <= end <= held.end + 1e-6:
                return held.sent_ms / 1000 - (held.end - end)
        return time.time()

    def _idle(self) -> bool:
        return all(worker.idle() for worker in [*self._sessions, self._scorers])

    def _drain(self) -> None:
        for worker in [*self._sessions, self._scorers]:  # sessions first: they hand utterances to the scorers
            worker.join()

    # -- output ---------------------------------------------------------------------------------

    def _score_job(self, job: ScoreJob) -> None:
        """Scorer thread: a stream's closed utterances through the scorer with its context, then out."""
        try:
            contexts = self.contexts.setdefault(job.stream_id, StreamContexts())
            events: list[dict[str, Any]] = []
            if job.bundles:
                started = time.perf_counter()
                events, contexts = self.scorer.score(job.bundles, contexts)
                self.contexts[job.stream_id] = contexts
                self.metrics.stage.labels("score").observe(time.perf_counter() - started)
                self.metrics.batch.observe(len(job.bundles))
        except Exception:  # a failed call loses these utterances' events, not the stream  # noqa: BLE001
            log.exception("stream %s: scoring %d utterances failed", job.stream_id, len(job.bundles))
            self.metrics.errors.labels("scoring_failed").inc()
            job, events = ScoreJob(job.stream_id, [], job.release, job.ended), []
        self.emit(job, events)
        if job.ended:
            self.contexts.pop(job.stream_id, None)

    def emit(self, job: ScoreJob, events: list[dict[str, Any]]) -> None:
        """Called by a scorer thread: send a job's events, then free its offsets."""
        topic = self.settings.kafka.emotions_topic
        started = time.perf_counter()
        for event, wall_end in zip(events, job.wall_end, strict=True):
            self.producer.send(topic, key=job.stream_id.encode(), value=_json(event))
            self.metrics.utterances.labels(event["label"]).inc()
            self.metrics.stream_utterances.labels(job.stream_id, event["label"]).inc()
            latency = max(0.0, time.time() - wall_end)
            self.metrics.latency.observe(latency)
            self.latencies.append((job.stream_id, latency))
        self.metrics.stage.labels("produce").observe(time.perf_counter() - started)
        with self._lock:
            for held in job.release:
                self.offsets.done(held.tp, held.offset)
            self.stats.events += len(events)
            if job.ended:
                self.stats.ended_streams.add(job.stream_id)
                for held in job.release:
                    last = self.ended[held.tp].get(job.stream_id, -1)
                    self.ended[held.tp][job.stream_id] = max(last, held.offset)

    def _dead_letter(self, event: DeadLetterEvent, tp: TopicPartition, offset: int) -> None:
        log.warning("dead letter %s at %s/%d/%d: %s", event.reason.value, tp.topic, tp.partition, offset, event.detail)
        self.producer.send(self.settings.kafka.deadletter_topic, key=event.key.encode() if event.key else None,
                           value=event.model_dump_json().encode())
        self.metrics.errors.labels(event.reason.value).inc()
        self.metrics.segments.labels("dead_letter").inc()
        with self._lock:
            self.offsets.done(tp, offset)
            self.stats.dead_letters += 1

    def _commit(self) -> None:
        with self._lock:
            points = self.offsets.commit_points()
            metadata = {}
            for tp, point in points.items():
                ended = self.ended[tp]
                for stream in [s for s, last in ended.items() if last < point]:
                    del ended[stream]  # wholly before the commit: never replayed
                names = sorted(ended, key=ended.__getitem__)[-MAX_ENDED_IN_METADATA:]
                metadata[tp] = json.dumps({"ended": names}) if names else ""
        for tp, high in self.highwater.items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - self.read_up_to.get(tp, points.get(tp, high))))
        if not points:
            return
        self.producer.flush()  # events and dead letters are out before the offsets behind them move on
        self.committer.commit({tp: OffsetAndMetadata(offset, metadata[tp], -1) for tp, offset in points.items()})


T = TypeVar("T")


class _Worker(Generic[T]):
    """A thread handling its items in order (one per session actor)."""

    def __init__(self, name: str, handle: Callable[[T], None], maxsize: int) -> None:
        self.handle = handle
        self.queue: queue.Queue[tuple[T] | None] = queue.Queue(maxsize=maxsize)
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def put(self, item: T) -> None:
        self.queue.put((item,))  # blocks when the thread is behind: ingestion waits

    def idle(self) -> bool:
        return self.queue.unfinished_tasks == 0

    def join(self) -> None:
        self.queue.join()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                self.handle(item[0])
            except Exception:  # the thread lives on: later items must not wait forever  # noqa: BLE001
                log.exception("%s failed on an item", self.thread.name)
            finally:
                self.queue.task_done()


class StreamWorkers:
    """Scorer threads: each stream's jobs in order, different streams' at the same time.

    (Hashing streams onto a few threads made a stream wait for another's Serve call: at 4
    streams two usually shared a thread.) At most `limit` jobs are queued or running; `put`
    waits beyond that, so ingestion slows down instead of piling up.
    """

    def __init__(self, handle: Callable[[ScoreJob], None], limit: int) -> None:
        self.handle, self.limit = handle, limit
        self.pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="emostream-scorer")
        self.streams: dict[str, deque[ScoreJob]] = {}  # streams with a job running, and what waits behind it
        self.count = 0
        self.changed = threading.Condition()

    def put(self, job: ScoreJob) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.count < self.limit)
            self.count += 1
            if job.stream_id in self.streams:
                self.streams[job.stream_id].append(job)
                return
            self.streams[job.stream_id] = deque([job])
        self.pool.submit(self._run, job.stream_id)

    def idle(self) -> bool:
        with self.changed:
            return self.count == 0

    def join(self) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.count == 0)

    def stop(self) -> None:
        self.join()
        self.pool.shutdown(wait=True)

    def _run(self, stream: str) -> None:
        jobs = self.streams[stream]
        while True:
            try:
                self.handle(jobs[0])
            except Exception:  # the stream's later jobs must still run  # noqa: BLE001
                log.exception("scoring stream %s failed", stream)
            with self.changed:
                jobs.popleft()
                self.count -= 1
                self.changed.notify_all()
                if not jobs:
                    del self.streams[stream]
                    return


def _rows(dataset) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The dataset's rows, each as soon as its block is out. `Dataset.iter_rows` prefetches one batch: it
    hands a block over only once the next one exists, so a lone stream's segments reached the driver ~0.35 s
    late (bench/live.py, 1 stream: read task → driver 0.37 s with iter_rows, 0.09 s with prefetch_batches=0)."""
    batches = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
    try:
        for block in batches:
            yield from block.to_pylist()
    finally:
        batches.close()  # type: ignore[attr-defined]  # stops the dataset's executor and its read tasks


def _shorten_executor_wait() -> None:
    """Ray Data's executor loop waits up to 0.1 s per step for *all* its running tasks (`ray.wait`
    with num_returns=len(tasks)); an endless read task never finishes, so every step took 0.1 s and
    a segment crossed several. bench/live.py, 4 streams: read task → driver 0.80 s at 0.1, 0.17 s at
    0.02. The constant is private (Ray 2.60); without it the job still works, only slower."""
    from ray.data._internal.execution import streaming_executor_state  # noqa: PLC0415

    if hasattr(streaming_executor_state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S"):
        streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = EXECUTOR_WAIT_SECONDS
    else:
        log.warning("this Ray has no WAIT_FOR_TASK_COMPLETION_TIMEOUT_S: Ray Data adds up to 0.1 s per step")


def _rejected(row: dict[str, Any], rejection: Rejection) -> DeadLetterEvent:
    """A perceived row refused by the orderer (duplicate, too late, after the end)."""
    return dead_letter(rejection, row, row["stream_id"], row["seq"], row["stream_id"], row["value_bytes"])


def _json(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


class ServeScorer:
    """Scoring through the running Serve application (`app_name`): ASR, encoders and the emotion model.

    Drafts go to the audio encoder as soon as the job has them, and their transcripts on to the text
    encoder; a closed utterance whose audio was drafted gets those results attached here, and the
    application skips the encoders for it (`drafts`)."""

    def __init__(self, app_name: str, voice: VoiceSettings) -> None:
        from ray import serve  # noqa: PLC0415

        self.voice = voice
        self.ingress = serve.get_app_handle(app_name)
        self.audio = serve.get_deployment_handle("AudioEncoder", app_name)
        self.text = serve.get_deployment_handle("TextEncoder", app_name) if embeds_text(voice) else None
        # per draft: the pending Whisper response, the pending text embeddings (or None), the draft's position in them
        self.prepared: PreparedResults[tuple[Any, Any, int]] = PreparedResults()

    def score(self, bundles: list[UtteranceBundle], contexts: StreamContexts) -> tuple[list[dict[str, Any]], StreamContexts]:
        bundles = [self._with_prepared(bundle) for bundle in bundles]
        return self.ingress.score_bundles.remote(bundles, contexts).result()

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
            result = recognised.result()[position]
            embedding = texts.result()[position] if texts is not None else None
        except Exception:  # the application encodes the closed utterance instead  # noqa: BLE001
            log.warning("stream %s: encoding the draft failed; encoding the utterance again", bundle.stream_id, exc_info=True)
            self.prepared.failed()
            return bundle
        bundle = with_recognition([bundle], [result], self.voice, time.perf_counter() - started)[0]
        return replace(bundle, text_embedding=embedding) if embedding is not None else bundle
