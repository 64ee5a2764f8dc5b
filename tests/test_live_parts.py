"""Parts of the live job that need no broker or Ray: stream ownership, contexts through serialisation,
the HTML report, the consumer helper's de-duplication and how often the node watch asks Ray."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from emostream.live import job as live_job
from emostream.live import nodes as live_nodes
from emostream.live.serve_client import ServeClient
from emostream.live.sessions import owner
from emostream.models.score import StreamContexts
from emostream.perception.running_stats import RunningStats
from emostream.report import render_report


def test_stream_contexts_keep_working_after_a_trip_through_ray_serialisation() -> None:
    """Contexts travel to the Serve scorer and back; their arrays come back read-only."""
    stats = RunningStats(3)
    stats.add(np.ones(3))
    stats.mean.setflags(write=False)  # as numpy arrays come out of Ray's object store
    stats._m2.setflags(write=False)
    stats.add(np.full(3, 3.0))
    assert stats.count == 2 and np.allclose(stats.mean, 2.0) and np.allclose(stats.std, np.sqrt(2.0))


def test_contexts_move_between_callers_under_new_names() -> None:
    contexts = StreamContexts()
    contexts._voices["call-1"] = {"agent": RunningStats(2)}
    taken = contexts.take("call-1", "r0-call-1")
    assert "call-1" not in contexts._voices and "r0-call-1" in taken._voices
    back = StreamContexts()
    back.absorb(taken.take("r0-call-1", "call-1"))
    assert set(back._voices) == {"call-1"}


def test_a_stream_always_has_the_same_owner() -> None:
    owners = {owner(f"call-{i}", 4) for i in range(200)}
    assert owners == {0, 1, 2, 3}
    assert all(owner("call-7", 4) == owner("call-7", 4) for _ in range(3))


def test_report_has_a_timeline_row_per_speaker_and_escapes_text() -> None:
    def event(speaker: str, start: float, label: str, transcript: str) -> dict:
        return {"stream_id": "call", "speaker": {"id": speaker}, "start": start, "end": start + 2, "label": label,
                "probabilities": {label: 0.8}, "valence": 0.1, "arousal": 0.2, "transcript": transcript,
                "explanation": f"{label} voice"}

    html = render_report([event("agent", 0, "calm", "hello"), event("customer", 3, "angry", "<script>x</script>"),
                          event("agent", 6, "happy", "sure")])
    assert html.count("<rect") == 3 and "call · agent" in html and "call · customer" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_stream_workers_run_streams_side_by_side_and_each_stream_in_order() -> None:
    """Scoring: one stream's Serve call never waits for another stream's; a stream's jobs keep their order."""
    import threading
    import time

    from emostream.live.job import ScoreJob
    from emostream.live.workers import StreamWorkers

    done: list[tuple[str, int]] = []
    running: set[str] = set()
    together = threading.Event()
    lock = threading.Lock()

    def handle(job: ScoreJob) -> None:
        with lock:
            running.add(job.stream_id)
            if len(running) == 2:
                together.set()
        time.sleep(0.05)
        with lock:
            running.discard(job.stream_id)
            done.append((job.stream_id, len(job.release)))

    workers = StreamWorkers(handle, limit=8)
    for n in range(4):
        for stream in ("a", "b"):
            workers.put(ScoreJob(stream, [], [None] * n, ended=False))  # type: ignore[list-item]
    workers.join()
    assert workers.idle() and together.is_set()
    assert [n for s, n in done if s == "a"] == [0, 1, 2, 3] and [n for s, n in done if s == "b"] == [0, 1, 2, 3]
    workers.stop()


def test_prepared_results_are_kept_per_stream_and_audio_used_once_and_bounded() -> None:
    """The live job keeps a draft's pending Whisper result until the closed utterance with that audio asks."""
    from emostream.live.drafts import PreparedResults

    a, b, c = (np.random.default_rng(seed).normal(size=16000).astype(np.float32) for seed in range(3))
    prepared: PreparedResults[str] = PreparedResults(capacity=2)
    prepared.put("s1", a, "result a")
    assert prepared.take("s2", a) is None  # another stream's utterance is its own
    assert prepared.take("s1", b) is None
    assert prepared.take("s1", a.copy()) == "result a" and prepared.take("s1", a) is None  # used once
    for audio, name in ((a, "a"), (b, "b"), (c, "c")):
        prepared.put("s1", audio, name)
    assert len(prepared) == 2 and prepared.take("s1", a) is None and prepared.take("s1", c) == "c"  # the oldest made room
    assert prepared.counts == {"prepared": 4, "used": 2, "missed": 4}


def test_a_scoring_call_that_times_out_is_cancelled() -> None:
    """An abandoned call would keep its place in the bounded Ingress queue (22.15): each retry under overload
    would add one, until the queue refuses every call."""
    class Response:
        cancelled = False

        def result(self, timeout_s: float) -> None:
            raise TimeoutError(f"no answer within {timeout_s} s")

        def cancel(self) -> None:
            self.cancelled = True

    response = Response()
    client = object.__new__(ServeClient)  # its handles, without a Serve application
    client.timeout_seconds = 0.1
    client.describe_roles = ()
    client.ingress = SimpleNamespace(score_bundles=SimpleNamespace(remote=lambda *_: response))
    with pytest.raises(TimeoutError):
        client.score([], StreamContexts())
    assert response.cancelled


def test_a_session_actor_killed_for_memory_is_a_lost_session_not_a_bad_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's memory monitor kills a session actor's worker: each later call raises OutOfMemoryError, not
    RayActorError. Taken for a bad segment, every segment of the actor's streams was dead-lettered for ever;
    it is a lost session: the job rebuilds from the last commit (22, found by the soak)."""
    from ray.exceptions import OutOfMemoryError  # noqa: PLC0415

    def killed(*_: object) -> None:
        raise OutOfMemoryError("Task was killed due to the node running low on memory.")

    monkeypatch.setattr(live_job.ray, "get", killed)
    job = object.__new__(live_job.LiveJob)  # the session thread's state, without Ray or Kafka
    job._lost, job._last_pushed = None, {}
    job._actors = [SimpleNamespace(push=SimpleNamespace(remote=lambda *_: None),
                                   close=SimpleNamespace(remote=lambda *_: None))]
    job.live = SimpleNamespace(prepare_drafts=False)
    job._push(0, live_job.SessionPush("call-1", b"", False, 0, held=None))  # type: ignore[arg-type]
    assert job._lost == "session actor 0 died"
    job._lost = None
    job._push(0, live_job.SessionClose("call-1"))
    assert job._lost == "session actor 0 died"


def test_the_node_watch_asks_ray_at_most_every_check_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job offers a look every second; the GCS is asked every CHECK_SECONDS, and a node that died is named at
    each look after (the job rebuilds at the first)."""
    now, asked = [0.0], []
    cluster = [{"NodeID": "head", "Alive": True}, {"NodeID": "second", "Alive": True}]
    monkeypatch.setattr(live_nodes.ray, "nodes", lambda: asked.append(now[0]) or [dict(node) for node in cluster])
    watch = live_nodes.NodeWatch(clock=lambda: now[0])
    cluster[1]["Alive"] = False
    for second in range(1, 21):
        now[0] = float(second)
        lost = watch.lost()
        assert lost == (["second"] if second % live_nodes.CHECK_SECONDS == 0 else []), (second, lost)
    assert asked == [0.0, live_nodes.CHECK_SECONDS, 2 * live_nodes.CHECK_SECONDS]
