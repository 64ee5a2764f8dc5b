"""The live job: media topic → Ray Data perception → session actors → Serve scoring → emotions topic.

    KafkaMediaSource (endless read tasks, our offsets)
      → map_batches(SegmentStage)       per segment: check, decode, faces, prosody  (actor pool)
      → driver: per-stream seq order    (StreamOrderer; duplicates and late segments dead-lettered)
      → session threads → SessionActor  utterances, speakers, face tracks (one thread per actor, stream hashed);
                                        drafts (utterances in their closing pause) → Serve: Whisper, text embedding start early
      → scorer threads (per stream)     Serve: ASR + audio, text, emotion model, with the stream's context
      → a sink (the emotions topic by default); offsets committed past a stream once it ended and all its events are out

Delivery: a partition's commit never passes the first segment of a stream that is still open,
and moves past an ended stream only once all of its events were sent (and the sink
flushed). After a crash — of the job, or of a session actor, on which the job rebuilds its
pipeline — the open streams replay from their first segment through fresh sessions, which
find the same utterances and speakers again: repeated events have the ids of the first.
Streams that had ended (or were closed as idle) before the crash but have records after the
commit point are named in the commit's metadata with their last offset, and skipped up to it
on replay (`commits`: the metadata is bounded in bytes; a stream that does not fit is replayed
whole, or holds the commit at its first record).

The Ray Data flow is renewed every `live.renew_flow_seconds` (Ray Data keeps per-block statistics for a dataset's
life): the next flow reads from where this one's rows stopped, the sessions kept (`_pipeline`).

Where the parts live: the Ray Data flow in `dataflow`, the offsets and the commit (with the delivery
guarantee of `emostream.sinks.base`) in `commits`, the threads in `workers`, the Serve client in
`serve_client`; events go to a `Sink` (Kafka by default, `live.sink`).

Streams that pause: a stream quiet for `voice.idle_seconds` is closed by its session actor's idle flush (wall
clock, only while the job has read everything: a job that is behind is not a quiet stream), and a stream whose
next segment was sent `voice.idle_seconds` after its last (producer timestamps, which a replay reads again) goes
on in a fresh session in any case, so a replay cuts a paused stream where the live run did.

The price of exact replay is that Kafka must keep a stream's media for as long as the stream
is open (retention ≥ the longest call), and a restart re-processes the open streams from
their start (several times faster than real time).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import ray
from kafka import TopicPartition
from ray.exceptions import OutOfMemoryError, RayActorError

from emostream.contracts import DeadLetterEvent, DeadLetterReason, UtteranceEmotionEvent
from emostream.ingest.ordering import Outcome, Rejection, StreamOrderer
from emostream.ingest.records import dead_letter_event
from emostream.kafka.clients import consumer as make_consumer
from emostream.live.commits import CommitLedger, Committer, Held, commit, ended_before_commit
from emostream.live.dataflow import perceived_rows
from emostream.live.nodes import NodeWatch
from emostream.live.serve_client import ScoringFailed, ScoringService, score_with_retries
from emostream.live.sessions import owner, start_session_actors
from emostream.live.source import TICK, media_partitions
from emostream.live.stages import REJECTED, StageRow
from emostream.live.workers import OrderedWorker, StreamWorkers
from emostream.metrics import Metrics
from emostream.models.score import StreamContexts
from emostream.perception.utterance import UtteranceBundle, with_roles
from emostream.settings import Settings
from emostream.sinks import Sink, SinkError, open_sink

log = logging.getLogger(__name__)

# A session actor is gone: it died, or Ray's memory monitor killed its worker (an OutOfMemoryError on each call,
# not a RayActorError). Either way the job rebuilds from the last commit; neither is a bad segment.
SESSION_LOST = (RayActorError, OutOfMemoryError)


class SessionLost(RuntimeError):
    """A session actor died: its streams' state is gone and must be rebuilt from the commit."""


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
    seq: int
    held: Held  # where the segment is (for a dead letter if its session fails on it)
    close: bool = False  # close the stream's session after it (open longer than live.max_stream_seconds)


FLUSH_IDLE = None  # a session thread's item: flush the actor's idle streams


@dataclass(frozen=True)
class SessionClose:
    """A session thread's item: close a stream's session before its next segment (the stream paused)."""

    stream_id: str


@dataclass
class OpenStream:
    """What the driver keeps of a stream whose session is open."""

    since: float  # media start of the session's first segment
    last_sent_ms: int  # producer timestamp of its latest segment


class RecentStreams(AbstractSet[str]):
    """The streams that ended most recently, at most `capacity` (a set for callers waiting on streams to end;
    bounded, as a job runs forever)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._names: OrderedDict[str, None] = OrderedDict()

    def add(self, stream_id: str) -> None:
        self._names[stream_id] = None
        self._names.move_to_end(stream_id)
        while len(self._names) > self.capacity:
            self._names.popitem(last=False)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass
class JobStats:
    segments: int = 0
    events: int = 0
    dead_letters: int = 0
    restarts: int = 0
    renewals: int = 0  # Ray Data flows ended for a fresh one (live.renew_flow_seconds), the sessions kept
    ended_streams: RecentStreams = field(default_factory=RecentStreams)


class LiveJob:
    """Runs until `stop` is set (or `until(stats)` is true); call from a process connected to Ray.

    sink : where events and dead letters go (default: `live.sink`, Kafka). committer : where offsets are
    committed (default: a Kafka consumer in the job's group)."""

    def __init__(self, settings: Settings, scorer: ScoringService, metrics: Metrics | None = None, group_id: str | None = None,
                 sink: Sink | None = None, committer: Committer | None = None) -> None:
        self.settings = settings
        self.live = settings.live
        self.scorer = scorer
        self.metrics = metrics or Metrics()
        self.group_id = group_id or settings.kafka.group_id
        self.stats = JobStats()
        self.latencies: deque[tuple[str, float]] = deque(maxlen=100_000)  # (stream, end-to-end seconds) of recent events
        self.sink = sink or open_sink(self.live.sink, settings, self.live.sink_path)
        self.committer = committer or make_consumer(settings.kafka, group_id=self.group_id)
        self._lock = threading.Lock()  # stats, shared with the scorer threads
        self._actors: list[Any] = []
        self._lost: str | None = None  # why the session actors' state is gone (set by a session thread)
        self._nodes: NodeWatch | None = None  # the nodes under the pipeline (set when it is built)
        self._sessions: list[OrderedWorker[SessionPush | SessionClose | None]] = []
        self._scorers: StreamWorkers[ScoreJob] = StreamWorkers(self._score_job, self.live.max_in_flight)
        self._reset_state({})

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, until: Callable[[JobStats], bool] | None = None) -> JobStats:
        stop = stop or threading.Event()
        # Session calls run off the driver's loop, one thread per actor (in parallel across actors; a
        # stream's in order): a push that closes an utterance embeds its voice (~0.1 s) and must not hold
        # up the other streams' segments.
        self._sessions = [OrderedWorker(f"emostream-session-{i}", lambda item, i=i: self._push(i, item), self.live.max_in_flight)
                          for i in range(self.live.session_actors)]
        try:
            self._reset()
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
            try:
                self._commit()
            except SinkError:  # nothing more is committed; a restart replays from the last commit
                log.exception("the sink failed: offsets after the last commit are not committed")
            for worker in [*self._sessions, self._scorers]:
                worker.stop()
            for actor in self._actors:
                ray.kill(actor)
            self.sink.close()
            self.committer.close()
        return self.stats

    def _reset(self) -> None:
        """Start over from the last commit: fresh state (streams that ended after it are skipped), fresh sessions."""
        partitions = [TopicPartition(self.settings.kafka.media_topic, p) for p in media_partitions(self.settings.kafka)]
        self._reset_state(ended_before_commit(self.committer, partitions))
        for actor in self._actors:
            ray.kill(actor)
        self._lost = None
        self._actors = start_session_actors(self.settings, self.group_id)
        self._nodes = NodeWatch()

    def _reset_state(self, skip: dict[str, int]) -> None:
        """The driver's bookkeeping, empty (no Ray or broker needed: the job's parts are tested without them)."""
        ingest = self.settings.ingest
        self.orderer: StreamOrderer[StageRow] = StreamOrderer(ingest.reorder_buffer, ingest.gap_timeout_seconds,
                                                              ingest.stream_idle_seconds)
        self.ledger = CommitLedger(skip, self.live.commit_metadata_bytes)
        self.highwater: dict[TopicPartition, int] = {}
        self.contexts: dict[str, StreamContexts] = {}
        self.unordered: dict[int, dict[int, StageRow]] = {}  # per read task: rows ahead of their turn
        self.next_index: dict[int, int] = {}
        self.read_up_to: dict[TopicPartition, int] = {}  # next offset after the last record read, per partition
        self.caught_up: dict[TopicPartition, bool] = {}  # per partition: everything there was has been read
        self.open: dict[str, OpenStream] = {}  # per stream with an open session (driver)
        self._last_pushed: dict[str, Held] = {}  # per open stream: its last segment handed to its session (session threads)

    def _pipeline(self, stop: threading.Event, until: Callable[[JobStats], bool] | None) -> None:
        """One Ray Data flow after another, the sessions kept: Ray Data keeps a statistics record of every block a
        dataset has passed, in the driver and in its `_StatsActor`, for the dataset's life (ray-project/ray#66016; a
        few KB per block each: the 1-hour soak's driver grew 122 MB/h), so every `live.renew_flow_seconds` the job
        ends the flow and starts the next where this one's rows stopped: the rows it read past them are read again
        and numbered afresh by the new read tasks."""
        while self._flow(stop, until):
            self.stats.renewals += 1
            self.unordered, self.next_index = {}, {}

    def _flow(self, stop: threading.Event, until: Callable[[JobStats], bool] | None) -> bool:
        """Runs one flow until the job stops (False) or is due for renewal, `live.renew_flow_seconds` after its first
        row (True)."""
        last_commit = last_idle = time.monotonic()
        began: float | None = None  # the flow's first row (its perception actors loaded)
        start = {tp.partition: offset for tp, offset in self.read_up_to.items()}
        rows = perceived_rows(self.settings, self.group_id, start)
        try:
            for row in rows:
                for ready in self._in_source_order(row):
                    self._take(ready)
                now = time.monotonic()
                began = now if began is None else began
                if now - last_idle >= 1.0:
                    last_idle = now
                    # wall-clock decisions only for streams that went quiet, not for a job that is behind
                    caught_up = all(self.caught_up.values())
                    self._apply(self.orderer.tick(caught_up=caught_up))
                    if caught_up:
                        for worker in self._sessions:
                            worker.put(FLUSH_IDLE)
                    self._check_nodes()
                if self._lost is not None:
                    raise SessionLost(self._lost)
                if now - last_commit >= self.live.commit_seconds:
                    last_commit = now
                    self._commit()
                if stop.is_set() or (until is not None and self._idle() and until(self.stats)):
                    stop.set()
                    return False
                if now - began >= self.live.renew_flow_seconds:
                    return True
        finally:
            rows.close()  # type: ignore[attr-defined]
        return False

    def _check_nodes(self) -> None:
        """A node under the pipeline died: its read tasks restart from the commit, which only a rebuild can follow
        (`nodes`); its session actors' streams must replay anyway."""
        if self._nodes is not None and (lost := self._nodes.lost()):
            raise SessionLost(f"Ray node {', '.join(lost)} died")

    # -- one row ---------------------------------------------------------------------------------

    def _in_source_order(self, row: StageRow) -> list[StageRow]:
        """Rows back in the order their read task read them (the perception actors finish out of order)."""
        waiting = self.unordered.setdefault(row.task, {})
        waiting[row.index] = row
        ready = []
        while (expected := self.next_index.get(row.task, 0)) in waiting:
            ready.append(waiting.pop(expected))
            self.next_index[row.task] = expected + 1
        return ready

    def _take(self, row: StageRow) -> None:
        tp = row.tp
        if row.highwater is not None and row.highwater >= 0:
            self.highwater[tp] = row.highwater
        if row.kind == TICK:  # an empty poll: the read task is at the partition's end
            self.caught_up[tp] = True
            return
        self.caught_up[tp] = row.highwater is not None and 0 <= row.highwater <= row.offset + 1
        self.metrics.stage.labels("decode").observe(row.decode_seconds)
        self.metrics.stage.labels("fetch").observe(max(0.0, (row.read_ms - row.timestamp_ms) / 1000))
        self.metrics.stage.labels("ingest").observe(max(0.0, time.time() - row.read_ms / 1000))
        self.read_up_to[tp] = row.offset + 1
        self.ledger.read(tp, row.offset)
        if self.ledger.skips(row.stream_id, tp, row.offset):  # its events were all sent before the crash
            return
        if row.kind == REJECTED and row.seq is None:
            self._dead_letter(row.dead_letter_event(), row)
            return
        assert row.stream_id is not None and row.seq is not None  # a row with headers names both
        outcome = self.orderer.push(row.stream_id, row.seq, row, row.end_of_stream, media_time=row.start)
        if outcome.rejected is not None:
            self._dead_letter(_rejected(row, outcome.rejected), row)
        self._apply(outcome)

    def _apply(self, outcome: Outcome[StageRow]) -> None:
        for row, rejection in outcome.dropped:
            self._dead_letter(_rejected(row, rejection), row)
        for row in outcome.released:
            if row.kind == REJECTED:
                self._dead_letter(row.dead_letter_event(), row)
            else:
                self._segment(row)

    def _segment(self, row: StageRow) -> None:
        stream = row.stream_id
        assert stream is not None and row.start is not None and row.end is not None
        self.metrics.segments.labels("processed").inc()
        self.metrics.frames.inc(row.frames)
        self.metrics.faces.inc(row.faces)
        self.metrics.stage.labels("perceive").observe(row.perceive_seconds)
        held = Held(row.tp, row.offset, row.start, row.end, row.timestamp_ms, row.value_bytes)
        self.ledger.hold(stream, held)
        self.metrics.streams.set(self.ledger.open_streams())
        assert row.seq is not None
        # A stream that paused for voice.idle_seconds (producer timestamps, in the log: a replay decides the same)
        # goes on in a fresh session, as it does when its idle flush closed it meanwhile.
        worker = self._sessions[owner(stream, len(self._sessions))]
        opened = self.open.get(stream)
        if opened is not None and row.timestamp_ms - opened.last_sent_ms >= 1000 * self.settings.voice.idle_seconds:
            log.info("stream %s resumed after %.0f s: in a fresh session", stream, (row.timestamp_ms - opened.last_sent_ms) / 1000)
            worker.put(SessionClose(stream))
            opened = None
        if opened is None:
            opened = self.open[stream] = OpenStream(row.start, row.timestamp_ms)
        opened.last_sent_ms = row.timestamp_ms
        # A stream that never ends would hold the commit at its first segment forever: past max_stream_seconds of
        # media its session is closed (like an idle one) and its offsets released; the next segment starts afresh.
        # On media time, so a replay closes it at the same segment.
        close = not row.end_of_stream and row.end - opened.since >= self.live.max_stream_seconds
        if close:
            log.info("stream %s open for %.0f s of media: closing its session", stream, row.end - opened.since)
        if close or row.end_of_stream:
            del self.open[stream]
        worker.put(SessionPush(stream, row.payload, row.end_of_stream, row.seq, held, close))

    def _push(self, index: int, item: SessionPush | SessionClose | None) -> None:
        """Session thread `index`: a segment to its actor (or FLUSH_IDLE, or a SessionClose), and the utterances
        closed to scoring."""
        if self._lost is not None:
            return  # the pipeline is being rebuilt from the last commit: what is queued replays
        if isinstance(item, SessionClose):
            try:
                closing: list[UtteranceBundle] = ray.get(self._actors[index].close.remote(item.stream_id))
            except SESSION_LOST:
                self._lost = f"session actor {index} died"
                return
            self._submit(item.stream_id, closing, True, self._last_pushed.get(item.stream_id))
            return
        started = time.perf_counter()
        if item is not FLUSH_IDLE:
            self._last_pushed[item.stream_id] = item.held
        try:
            if item is FLUSH_IDLE:
                flushed: dict[str, list[UtteranceBundle]] = ray.get(self._actors[index].flush_idle.remote())
            else:
                bundles, drafts = ray.get(self._actors[index].push.remote(item.payload, self.live.prepare_drafts, item.close))
        except SESSION_LOST:
            self._lost = f"session actor {index} died"
            return
        except Exception as error:  # noqa: BLE001 (a bug met by this segment: it is lost, not the stream or the job)
            if item is FLUSH_IDLE:
                log.exception("session actor %d failed on the idle flush", index)
                self.metrics.errors.labels("session_failed").inc()
                return
            # (on an end-of-stream marker too: the session is still open on the actor, and its idle flush
            # closes the stream and releases its offsets with its last events)
            self._session_failed(item, error)
            return
        if item is FLUSH_IDLE:
            for stream, closing in flushed.items():
                log.info("stream %s went idle: closing it", stream)
                self.open.pop(stream, None)  # if it resumes, in a fresh session
                self._submit(stream, closing, True, self._last_pushed.get(stream))
            return
        self.metrics.stage.labels("session").observe(time.perf_counter() - started)
        with self._lock:
            self.stats.segments += 1
        self._submit(item.stream_id, bundles, item.ended or item.close, item.held)
        if drafts := with_roles(drafts, self.live.score_roles):
            self.scorer.prepare(drafts)

    def _session_failed(self, item: SessionPush, error: Exception) -> None:
        """Dead-letter a segment its session failed on; its offset stays held with the stream's others (and is
        released with them at the stream's end), so a crash before then replays it too."""
        log.error("session failed on segment %d of stream %s: %r", item.seq, item.stream_id, error)
        cause = getattr(error, "cause", None) or error  # a RayTaskError carries the actor's exception
        held = item.held
        detail = f"segment {item.seq} of stream {item.stream_id!r}: the stream's session failed on it: {cause}"
        self._send_dead_letter(dead_letter_event(
            Rejection(DeadLetterReason.PROCESSING_ERROR, detail[:2000]),
            held.source, item.stream_id, item.seq, item.stream_id, held.value_bytes))

    def _submit(self, stream: str, bundles: list[UtteranceBundle], ended: bool, through: Held | None = None) -> None:
        """Hand a stream's closed utterances to its scorer; at its end (or its session's close), with its offsets up
        to `through`, the last segment its session had (later ones are held for the session that follows; None:
        nothing was pushed since the last release)."""
        scored = with_roles(bundles, self.live.score_roles)
        if len(scored) < len(bundles):
            self.metrics.skipped.labels("role").inc(len(bundles) - len(scored))
        if not scored and not ended:
            return  # most segments close nothing
        wall_ends = [self.ledger.sent_at(stream, b.end) for b in scored]
        release = []
        if ended and through is not None:
            release = self.ledger.release(stream, through)
            self._last_pushed.pop(stream, None)
        self._scorers.put(ScoreJob(stream, scored, release, ended, wall_ends))

    def _idle(self) -> bool:
        return all(worker.idle() for worker in [*self._sessions, self._scorers])

    def _drain(self) -> None:
        for worker in [*self._sessions, self._scorers]:  # sessions first: they hand utterances to the scorers
            worker.join()

    # -- output ---------------------------------------------------------------------------------

    def _score_job(self, job: ScoreJob) -> None:
        """Scorer thread: a stream's closed utterances through the scorer with its context, then out.

        A call that fails or times out is tried `live.score_attempts` times; then each of its utterances is
        dead-lettered (processing_error, naming the stream, the utterance's times and a segment it came from)
        before the offsets behind it are released: no offset passes an utterance that was neither sent nor
        dead-lettered. (Stopping the job to replay instead would meet the same failure again when it is the input's;
        a Serve outage long enough to exhaust the tries shows as a burst of processing_error dead letters.)"""
        contexts = self.contexts.setdefault(job.stream_id, StreamContexts())
        events: list[dict[str, Any]] = []
        if job.bundles:
            started = time.perf_counter()
            try:
                events, contexts = score_with_retries(self.scorer, job.bundles, contexts, self.live.score_attempts,
                                                      self.live.score_timeout_seconds)
                self.contexts[job.stream_id] = contexts
                self.metrics.stage.labels("score").observe(time.perf_counter() - started)
                self.metrics.batch.observe(len(job.bundles))
            except ScoringFailed as error:
                log.error("%s: dead-lettering the utterances", error)
                self.metrics.errors.labels("scoring_failed").inc()
                for bundle in job.bundles:
                    self._dead_letter_utterance(bundle, job.release, str(error))
                job, events = ScoreJob(job.stream_id, [], job.release, job.ended), []
        self.emit(job, [UtteranceEmotionEvent.model_validate(event) for event in events])
        if job.ended:
            self.contexts.pop(job.stream_id, None)

    def emit(self, job: ScoreJob, events: list[UtteranceEmotionEvent]) -> None:
        """Called by a scorer thread: hand a job's events to the sink, then finish its offsets."""
        started = time.perf_counter()
        for event, wall_end in zip(events, job.wall_end, strict=True):
            self.sink.send(event)
            self.metrics.utterances.labels(event.label).inc()
            self.metrics.count_stream_utterance(job.stream_id, event.label)
            latency = max(0.0, time.time() - wall_end)
            self.metrics.latency.observe(latency)
            self.latencies.append((job.stream_id, latency))
        self.metrics.stage.labels("produce").observe(time.perf_counter() - started)
        self.ledger.delivered(job.stream_id, job.release, job.ended)
        with self._lock:
            self.stats.events += len(events)
            if job.ended:
                self.stats.ended_streams.add(job.stream_id)
        if job.ended:
            self.metrics.end_stream(job.stream_id)  # its per-stream series go a while after its end

    def _dead_letter(self, event: DeadLetterEvent, row: StageRow) -> None:
        """A record that needs nothing more: dead-lettered, its offset finished."""
        self._send_dead_letter(event)
        self.ledger.finished(row.tp, row.offset)

    def _dead_letter_utterance(self, bundle: UtteranceBundle, released: list[Held], why: str) -> None:
        """An utterance that could not be scored; its segments stay held until the stream ends, as any."""
        segments = released or self.ledger.held_during(bundle.stream_id, -float("inf"), float("inf"))
        during = [h for h in segments if h.start < bundle.end and h.end > bundle.start] or segments[-1:]
        if not during:  # cannot happen: an utterance's segments are held until its stream's events are out
            log.error("stream %s: no segment held for the utterance at %.2f s", bundle.stream_id, bundle.start)
            return
        first = during[0]
        detail = (f"stream {bundle.stream_id!r}: utterance {bundle.utterance_id} ({bundle.speaker_id}, "
                  f"{bundle.start:.2f}-{bundle.end:.2f} s) was not scored: {why}")
        self._send_dead_letter(dead_letter_event(Rejection(DeadLetterReason.PROCESSING_ERROR, detail), first.source,
                                                 bundle.stream_id, None, bundle.stream_id, first.value_bytes))

    def _send_dead_letter(self, event: DeadLetterEvent) -> None:
        source = event.source
        log.warning("dead letter %s at %s/%d/%d: %s", event.reason.value, source.topic, source.partition, source.offset,
                    event.detail)
        self.sink.dead_letter(event)
        self.metrics.errors.labels(event.reason.value).inc()
        self.metrics.segments.labels("dead_letter").inc()
        with self._lock:
            self.stats.dead_letters += 1

    def _commit(self) -> None:
        """Events and dead letters are flushed to the sink before the offsets behind them move on."""
        points = commit(self.ledger, self.sink, self.committer)
        for tp, high in self.highwater.items():
            done = points[tp].offset if tp in points else high
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - self.read_up_to.get(tp, done)))


def _rejected(row: StageRow, rejection: Rejection) -> DeadLetterEvent:
    """A perceived row refused by the orderer (duplicate, too late, after the end)."""
    return dead_letter_event(rejection, row.source, row.stream_id, row.seq, row.stream_id, row.value_bytes)
