"""The `emostream_*` Prometheus metrics of the live job and the backfill.

One `Metrics` object per job, on its own registry, served over HTTP next to
Ray's own metrics (`serve_metrics`). The names here are the ones the Grafana
dashboard and the alert rules in `k8s/` query; a test checks them against
this registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

# stage label values of emostream_stage_seconds
# fetch: producer send → a read task has the record (Kafka); ingest: read task → the job's driver (Ray Data,
# including decode and perceive in the actor pool)
STAGES = ("fetch", "ingest", "decode", "perceive", "session", "score", "produce")

# An ended stream's per-stream series stay this long (seconds) before they are removed: several
# scrapes (every 15 s in k8s/) see its final counts, and the label set grows with the open streams
# only, not with every stream the job has ever seen.
ENDED_STREAM_SECONDS = 300.0


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry or CollectorRegistry()
        self._clock = clock
        self._lock = threading.Lock()
        self._stream_labels: dict[str, set[str]] = {}  # stream -> emotion labels it has series for
        self._ended: dict[str, float] = {}  # stream -> when it ended (clock)
        r = self.registry
        self.segments = Counter("emostream_segments", "Media segments taken from Kafka or files", ["outcome"], registry=r)
        self.frames = Counter("emostream_frames_analysed", "Video frames run through face analysis", registry=r)
        self.faces = Counter("emostream_faces", "Faces found in analysed frames", registry=r)
        self.utterances = Counter("emostream_utterances", "Utterance events emitted, by emotion label", ["label"], registry=r)
        self.stream_utterances = Counter("emostream_stream_utterances", "Utterance events per stream and label",
                                         ["stream", "label"], registry=r)
        self.skipped = Counter("emostream_utterances_skipped", "Utterances not scored, by reason (e.g. role)",
                               ["reason"], registry=r)
        self.errors = Counter("emostream_errors", "Inputs dead-lettered or failed, by reason", ["reason"], registry=r)
        self.lag = Gauge("emostream_consumer_lag", "Media messages not yet committed, per partition",
                         ["topic", "partition"], registry=r)
        self.streams = Gauge("emostream_active_streams", "Streams with open sessions", registry=r)
        self.latency = Histogram("emostream_end_to_end_latency_seconds",
                                 "From the end of an utterance (wall clock of its media) to its event on Kafka",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("emostream_stage_seconds", "Time spent per stage and call", ["stage"],
                               buckets=STAGE_BUCKETS, registry=r)
        self.batch = Histogram("emostream_score_batch_size", "Utterances per scoring call", buckets=BATCH_BUCKETS,
                               registry=r)

    def count_stream_utterance(self, stream: str, label: str) -> None:
        """One utterance event of `stream` with emotion `label` (emostream_stream_utterances_total).

        Count per-stream events through this method, not `stream_utterances` directly, and call
        `end_stream` when the stream ends: only then are its series removed again.
        """
        self.stream_utterances.labels(stream, label).inc()
        with self._lock:
            self._stream_labels.setdefault(stream, set()).add(label)
            self._ended.pop(stream, None)  # a stream that comes back (a replay after a restart) is open again
        self.forget_ended_streams()

    def end_stream(self, stream: str) -> None:
        """Mark `stream` ended: its per-stream series are removed ENDED_STREAM_SECONDS from now."""
        with self._lock:
            self._ended[stream] = self._clock()
        self.forget_ended_streams()

    def forget_ended_streams(self) -> None:
        """Remove the series of streams that ended at least ENDED_STREAM_SECONDS ago (called by the two above)."""
        now = self._clock()
        with self._lock:
            expired = [stream for stream, ended in self._ended.items() if now - ended >= ENDED_STREAM_SECONDS]
            for stream in expired:
                del self._ended[stream]
                for label in self._stream_labels.pop(stream, set()):
                    self.stream_utterances.remove(stream, label)

    def names(self) -> set[str]:
        """Every sample name this registry exports (`_total`, `_bucket`, `_sum`, `_count` included)."""
        names = set()
        for family in self.registry.collect():
            names.add(family.name)
            for suffix in {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                           "gauge": ()}.get(family.type, ()):
                names.add(family.name + suffix)
        return names


def serve_metrics(metrics: Metrics, host: str, port: int) -> None:
    """Serve `metrics` at http://host:port/metrics from a daemon thread (port 0: not served)."""
    if port:
        start_http_server(port, addr=host, registry=metrics.registry)
