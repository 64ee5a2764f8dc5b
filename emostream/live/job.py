"""The live job: media topic → Ray Data perception → session actors → Serve scoring → emotions topic.

    KafkaMediaSource (endless read tasks, our offsets)
      → map_batches(SegmentStage)       per segment: check, decode, faces, prosody  (actor pool)
      → driver: per-stream seq order    (StreamOrderer; duplicates and late segments dead-lettered)
      → SessionActor (stream hashed)    utterances, speakers, face tracks
      → scorer threads (stream hashed)  Serve: ASR + audio, text, emotion model, with the stream's context
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata
from ray.exceptions import RayActorError

from emostream.contracts import DeadLetterEvent
from emostream.ingest.consumer import OffsetTracker
from emostream.ingest.ordering import Outcome, Rejection, StreamOrderer
from emostream.kafka.clients import consumer as make_consumer
from emostream.kafka.clients import producer as make_producer
from emostream.live.sessions import SessionActor, owner, with_roles
from emostream.live.source import TICK, KafkaMediaSource, media_partitions
from emostream.live.stages import REJECTED, SegmentStage, dead_letter
from emostream.metrics import Metrics
from emostream.models.score import StreamContexts
from emostream.perception.utterance import UtteranceBundle
from emostream.settings import Settings

log = logging.getLogger(__name__)

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


@dataclass
class JobStats:
    segments: int = 0
    events: int = 0
    dead_letters: int = 0
    restarts: int = 0
    ended_streams: set[str] = field(default_factory=set)


# Scores a stream's utterance bundles with its context: the events (JSON-ready) and the context after them.
Score = Callable[[list[UtteranceBundle], StreamContexts], tuple[list[dict[str, Any]], StreamContexts]]


class LiveJob:
    """Runs until `stop` is set (or `until(stats)` is true); call from a process connected to Ray."""

    def __init__(self, settings: Settings, score: Score, metrics: Metrics | None = None, group_id: str | None = None) -> None:
        self.settings = settings
        self.live = settings.live
        self.score = score
        self.metrics = metrics or Metrics()
        self.group_id = group_id or settings.kafka.group_id
        self.stats = JobStats()
        self.latencies: deque[tuple[str, float]] = deque(maxlen=100_000)  # (stream, end-to-end seconds) of recent events
        self.producer = make_producer(settings.kafka)
        self.committer = make_consumer(settings.kafka, group_id=self.group_id)
        self._lock = threading.Lock()  # offsets and stats, shared with the scorer threads
        self._actors: list[Any] = []
        self._scorers: list[_Scorer] = []
        self._reset()

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, until: Callable[[JobStats], bool] | None = None) -> JobStats:
        stop = stop or threading.Event()
        self._scorers = [_Scorer(self, i) for i in range(max(1, self.live.session_actors * 2))]
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
            for scorer in self._scorers:
                scorer.stop()
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
        live = self.live
        source = KafkaMediaSource(self.settings.kafka, self.group_id, live.source_tasks, live.poll_seconds)
        ds = ray.data.read_datasource(source, num_cpus=0.05, override_num_blocks=live.source_tasks)
        return ds.map_batches(SegmentStage, fn_constructor_args=(self.settings.model_dump_json(),), batch_size=1,
                              batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=live.perception_actors),
                              num_cpus=live.perception_cpus)

    def _pipeline(self, stop: threading.Event, until: Callable[[JobStats], bool] | None) -> None:
        last_commit = last_idle = time.monotonic()
        rows = iter(self._dataset().iter_rows())
        try:
            for row in rows:
                for ready in self._in_source_order(row):
                    self._take(ready)
                now = time.monotonic()
                if now - last_idle >= 1.0:
                    last_idle = now
                    self._apply(self.orderer.tick())
                    self._flush_idle()
                if now - last_commit >= self.live.commit_seconds:
                    last_commit = now
                    self._commit()
                if stop.is_set() or (until is not None and self._idle() and until(self.stats)):
                    stop.set()
                    return
        finally:
            rows.close()  # type: ignore[attr-defined]  # stops the dataset's executor and its read tasks

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
        # sent by the producer → here, through Kafka, the read task, the perception actor and Ray Data's queues
        self.metrics.stage.labels("ingest").observe(max(0.0, time.time() - row["timestamp_ms"] / 1000))
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
        held = Held(tp, row["offset"], row["start"], row["end"], row["timestamp_ms"])
        self.held[stream].append(held)
        actor = self._actors[owner(stream, len(self._actors))]
        started = time.perf_counter()
        try:
            bundles: list[UtteranceBundle] = ray.get(actor.push.remote(row["payload"]))
        except RayActorError as error:
            raise SessionLost(f"session actor of stream {stream!r} died") from error
        self.metrics.stage.labels("session").observe(time.perf_counter() - started)
        with self._lock:
            self.stats.segments += 1
        self._submit(stream, bundles, row["end_of_stream"])
        self.metrics.streams.set(len(self.held))

    def _submit(self, stream: str, bundles: list[UtteranceBundle], ended: bool) -> None:
        """Hand a stream's closed utterances to its scorer; at its end, with all of its offsets."""
        scored = with_roles(bundles, self.live.score_roles)
        if len(scored) < len(bundles):
            self.metrics.skipped.labels("role").inc(len(bundles) - len(scored))
        wall_ends = [self._wall_end(stream, b.end) for b in scored]
        release = list(self.held.pop(stream, ())) if ended else []
        self._scorers[owner(stream, len(self._scorers))].put(ScoreJob(stream, scored, release, ended, wall_ends))

    def _wall_end(self, stream: str, end: float) -> float:
        """Wall-clock time at which the stream's media reached `end` (from the sending time of its segment)."""
        for held in reversed(self.held.get(stream, ())):
            if held.start <= end <= held.end + 1e-6:
                return held.sent_ms / 1000 - (held.end - end)
        return time.time()

    def _flush_idle(self) -> None:
        try:
            flushed = ray.get([actor.flush_idle.remote() for actor in self._actors])
        except RayActorError as error:
            raise SessionLost("a session actor died") from error
        for streams in flushed:
            for stream, bundles in streams.items():
                log.info("stream %s went idle: closing it", stream)
                self._submit(stream, bundles, ended=True)

    def _idle(self) -> bool:
        return all(scorer.idle() for scorer in self._scorers)

    def _drain(self) -> None:
        for scorer in self._scorers:
            scorer.join()

    # -- output ---------------------------------------------------------------------------------

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


class _Scorer:
    """A thread scoring the jobs of the streams hashed onto it, each stream's in order."""

    def __init__(self, job: LiveJob, index: int) -> None:
        self.job = job
        self.queue: queue.Queue[ScoreJob | None] = queue.Queue(maxsize=job.live.max_in_flight)
        self.thread = threading.Thread(target=self._loop, name=f"emostream-scorer-{index}", daemon=True)
        self.thread.start()

    def put(self, job: ScoreJob) -> None:
        self.queue.put(job)  # blocks when the scorer is behind: ingestion waits

    def idle(self) -> bool:
        return self.queue.unfinished_tasks == 0

    def join(self) -> None:
        self.queue.join()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while (job := self.queue.get()) is not None:
            try:
                self._score(job)
            except Exception:  # a failed call loses these utterances' events, not the stream  # noqa: BLE001
                log.exception("stream %s: scoring %d utterances failed", job.stream_id, len(job.bundles))
                self.job.metrics.errors.labels("scoring_failed").inc()
                self.job.emit(ScoreJob(job.stream_id, [], job.release, job.ended), [])
            finally:
                self.queue.task_done()

    def _score(self, job: ScoreJob) -> None:
        owner_job = self.job
        contexts = owner_job.contexts.setdefault(job.stream_id, StreamContexts())
        events: list[dict[str, Any]] = []
        if job.bundles:
            started = time.perf_counter()
            events, contexts = owner_job.score(job.bundles, contexts)
            owner_job.contexts[job.stream_id] = contexts
            owner_job.metrics.stage.labels("score").observe(time.perf_counter() - started)
            owner_job.metrics.batch.observe(len(job.bundles))
        owner_job.emit(job, events)
        if job.ended:
            owner_job.contexts.pop(job.stream_id, None)


def _rejected(row: dict[str, Any], rejection: Rejection) -> DeadLetterEvent:
    """A perceived row refused by the orderer (duplicate, too late, after the end)."""
    return dead_letter(rejection, row, row["stream_id"], row["seq"], row["stream_id"], row["value_bytes"])


def _json(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def serve_scorer(app_name: str) -> Score:
    """Scoring through the running Serve application's ingress (ASR, encoders, emotion model)."""
    from ray import serve  # noqa: PLC0415

    handle = serve.get_app_handle(app_name)

    def score(bundles: list[UtteranceBundle], contexts: StreamContexts) -> tuple[list[dict[str, Any]], StreamContexts]:
        return handle.score_bundles.remote(bundles, contexts).result()

    return score
