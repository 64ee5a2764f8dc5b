"""The live job end to end on a real broker, real Ray (Data, actors, Serve) and real recordings.

A meeting-like audio+video stream and a two-channel call are published in real time; the
job must emit exactly one schema-valid event per utterance, with the right speakers, in
time order, and the same utterances `POST /v1/analyze` finds in the same files. A killed
session actor must cost nothing but repeats with the same ids. The metrics endpoint must
show the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from emostream.contracts import UtteranceEmotionEvent
from emostream.ingest.publish import publish
from emostream.kafka.broker import free_port
from emostream.kafka.clients import consumer, producer
from emostream.media.synthetic import speech_track
from emostream.metrics import Metrics, serve_metrics
from emostream.models.score import StreamContexts, load_scorer
from emostream.settings import Settings
from tests.kafka_helpers import read_topic
from tests.speech_helpers import meeting_and_call

pytestmark = pytest.mark.broker  # starts Ray: loopback-only namespace


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, wolfgang: Path, librivox: list[Path], shared_data: Path) -> dict[str, Path]:
    """An audio+video meeting (face video, read speech) and a stereo call (customer first, then the agent)."""
    return meeting_and_call(tmp_path_factory.mktemp("live-media"), wolfgang, librivox, shared_data)


CHANNELS = {"meeting": None, "call": ("customer", "agent")}


def analyze(server: str, path: Path, stream_id: str, channels: tuple[str, ...] | None) -> list[dict[str, Any]]:
    query = f"stream_id={stream_id}" + (f"&channels={','.join(channels)}" if channels else "")
    request = urllib.request.Request(f"{server}/v1/analyze?{query}", data=path.read_bytes(), method="POST")
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def emotions(settings: Settings, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Everything on the emotions topic, in topic order per partition."""
    reader = consumer(settings.kafka, [settings.kafka.emotions_topic], group_id=None)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=500).values():
                events += [json.loads(r.value) for r in records]
                deadline = time.monotonic() + 3  # stop 3 s after the last event
    finally:
        reader.close()
    return events


def run_job(settings: Settings, streams: set[str], metrics: Metrics | None = None,
            during: Any = None, **parts: Any) -> Any:
    """Run the live job in a thread until `streams` ended; `during(job)` runs meanwhile in this thread.
    parts: the job's sink or committer, if not the defaults."""
    from emostream.live.job import LiveJob
    from emostream.live.serve_client import ServeClient

    job = LiveJob(settings, ServeClient.for_settings(settings), metrics, **parts)
    stop = threading.Event()
    runner = threading.Thread(target=job.run, kwargs={"stop": stop, "until": lambda s: streams <= s.ended_streams})
    runner.start()
    try:
        if during is not None:
            during(job)
        runner.join(timeout=300)
    finally:
        stop.set()
        runner.join(timeout=60)
    assert streams <= job.stats.ended_streams, f"streams did not end: {job.stats}"
    return job


def publish_all(settings: Settings, media: dict[str, Path], names: list[str]) -> None:
    threads = [threading.Thread(target=publish, args=(media[name], name, settings),
                                kwargs={"channels": CHANNELS[name], "realtime": True}) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_every_utterance_once_in_order_with_speakers_and_metrics(cluster: str, settings: Settings,
                                                                  media: dict[str, Path]) -> None:
    metrics = Metrics()
    port = free_port()
    serve_metrics(metrics, "127.0.0.1", port)
    publisher = threading.Thread(target=publish_all, args=(settings, media, ["meeting", "call"]))
    publisher.start()
    job = run_job(settings, {"meeting", "call"}, metrics)
    publisher.join()
    events = emotions(settings)

    assert job.stats.dead_letters == 0
    ids = Counter(e["utterance_id"] for e in events)
    assert ids and max(ids.values()) == 1, f"repeated events: {ids}"
    for event in events:
        UtteranceEmotionEvent.model_validate(event)
    for name in ("meeting", "call"):
        ours = [e for e in events if e["stream_id"] == name]
        assert [e["start"] for e in ours] == sorted(e["start"] for e in ours), f"{name}: not in time order"
        reference = analyze(cluster, media[name], name, CHANNELS[name])
        assert {e["utterance_id"] for e in ours} == {e["utterance_id"] for e in reference}, (
            f"{name}: live {[(e['speaker']['id'], e['start']) for e in ours]} vs analyze "
            f"{[(e['speaker']['id'], e['start']) for e in reference]}")
    call = [e for e in events if e["stream_id"] == "call"]
    assert [e["speaker"]["role"] for e in call] == ["customer", "agent"]
    assert all(e["transcript"] for e in events)

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        scraped = {line.split(" ")[0]: float(line.split(" ")[1]) for line in response.read().decode().splitlines()
                   if line and not line.startswith("#")}
    assert sum(v for k, v in scraped.items() if k.startswith("emostream_utterances_total")) == len(events)
    assert scraped['emostream_segments_total{outcome="processed"}'] > 0
    assert scraped["emostream_frames_analysed_total"] > 0 and scraped["emostream_faces_total"] > 0
    assert scraped["emostream_end_to_end_latency_seconds_count"] == len(events)
    assert scraped["emostream_end_to_end_latency_seconds_sum"] > 0
    assert scraped['emostream_stage_seconds_count{stage="score"}'] > 0


def test_the_live_job_writes_to_a_jsonl_sink_and_commits_only_what_was_flushed(cluster: str, settings: Settings,
                                                                               media: dict[str, Path], tmp_path: Path) -> None:
    from kafka import TopicPartition

    from emostream.sinks.jsonl import JsonlSink

    out = tmp_path / "events.jsonl"
    order: list[tuple[str, int]] = []  # ("flush", lines durable) and ("commit", offsets committed), as they happen

    class RecordedJsonl(JsonlSink):
        def flush(self) -> None:
            super().flush()
            order.append(("flush", len(out.read_text().splitlines())))

    class WatchedCommitter:
        def __init__(self) -> None:
            self.inner = consumer(settings.kafka, group_id=settings.kafka.group_id)

        def commit(self, offsets: dict[Any, Any]) -> None:
            order.append(("commit", sum(o.offset for o in offsets.values())))
            self.inner.commit(offsets)

        def committed(self, partition: Any, metadata: bool = False) -> Any:
            return self.inner.committed(partition, metadata=metadata)

        def close(self) -> None:
            self.inner.close()

    report = publish(media["call"], "call", settings, channels=CHANNELS["call"])
    run_job(settings, {"call"}, sink=RecordedJsonl(out), committer=WatchedCommitter())

    events = [UtteranceEmotionEvent.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [e.speaker.role for e in events] == ["customer", "agent"]
    assert emotions(settings, timeout=2) == []  # the sink replaced the emotions topic
    commits = [i for i, (what, _) in enumerate(order) if what == "commit"]
    assert commits and all(order[i - 1][0] == "flush" for i in commits), order
    assert order[commits[-1] - 1][1] == len(events)  # the last commit came after both events were durable
    group = consumer(settings.kafka, group_id=settings.kafka.group_id)
    try:
        committed = [group.committed(TopicPartition(settings.kafka.media_topic, p)) or 0 for p in range(2)]
    finally:
        group.close()
    assert sum(committed) == report.segments + 1  # every segment and the end marker


def test_only_configured_roles_are_scored_and_bad_input_is_dead_lettered(cluster: str, settings: Settings,
                                                                         media: dict[str, Path]) -> None:
    settings = settings.model_copy(update={"live": settings.live.model_copy(update={"score_roles": ("customer",)})})
    metrics = Metrics()
    out = producer(settings.kafka)
    corrupt = [("emostream-stream-id", b"junk"), ("emostream-seq", b"0"), ("emostream-start", b"0"),
               ("emostream-content-type", b"video/mp2t")]
    out.send(settings.kafka.media_topic, key=b"junk", value=bytes(range(256)) * 40, headers=corrupt)
    out.send(settings.kafka.media_topic, key=b"junk", value=b"no headers at all", headers=[])
    out.flush()
    publish(media["call"], "call", settings, channels=CHANNELS["call"])
    job = run_job(settings, {"call"}, metrics)
    events = emotions(settings)
    assert [e["speaker"]["role"] for e in events] == ["customer"]  # the agent's utterance was never scored
    assert metrics.skipped.labels("role")._value.get() == 1
    letters = read_topic(settings, settings.kafka.deadletter_topic, expect=2)
    assert sorted(letter["reason"] for letter in letters) == ["bad_headers", "corrupt_segment"]
    assert job.stats.dead_letters == 2 and metrics.errors.labels("corrupt_segment")._value.get() == 1


def test_a_killed_session_actor_costs_only_repeats(cluster: str, settings: Settings, media: dict[str, Path],
                                                   librivox: list[Path], tmp_path: Path) -> None:
    import ray

    from emostream.live.sessions import owner

    talk = speech_track(librivox[:3], tmp_path / "talk.wav")

    def kill_after_first_event(job: Any) -> None:
        deadline = time.monotonic() + 120
        while job.stats.events < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        index = owner("talk", settings.live.session_actors)
        ray.kill(ray.get_actor(f"emostream-session-{settings.kafka.group_id}-{index}"))

    publisher = threading.Thread(target=publish, args=(talk, "talk", settings), kwargs={"realtime": True})
    publisher.start()
    job = run_job(settings, {"talk"}, during=kill_after_first_event)
    publisher.join()
    events = emotions(settings)

    assert job.stats.restarts == 1
    reference = {e["utterance_id"] for e in analyze(cluster, talk, "talk", None)}
    assert {e["utterance_id"] for e in events} == reference
    assert len(events) >= len(reference)  # repeats allowed, always with the same id


def test_renewed_flows_lose_and_repeat_nothing(cluster: str, settings: Settings, librivox: list[Path],
                                               tmp_path: Path) -> None:
    """The job ends its Ray Data flow every `renew_flow_seconds` (Ray Data's per-block statistics) and starts the
    next where the last one's rows stopped, the sessions kept: every utterance exactly once, as `/v1/analyze` finds."""
    settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"segment_seconds": 0.5}),
                                           "live": settings.live.model_copy(update={"renew_flow_seconds": 5.0})})
    talk = speech_track(librivox[:3], tmp_path / "talk.wav")  # ~18 s, in real time: renewed while it arrives
    warm = speech_track(librivox[3:4], tmp_path / "warm.wav")

    def publish_once_the_flow_runs(job: Any) -> None:
        # A flow is renewed 5 s after its first row: on a loaded machine the first flow's perception actors took
        # longer to load than the talk took to arrive, and nothing was renewed. A stream sent at once and seen to
        # end first means the flow is up, so the real-time talk spans its renewal.
        publish(warm, "warm", settings)
        deadline = time.monotonic() + 240
        while "warm" not in job.stats.ended_streams and time.monotonic() < deadline:
            time.sleep(0.2)
        publish(talk, "talk", settings, realtime=True)

    job = run_job(settings, {"warm", "talk"}, during=publish_once_the_flow_runs)
    events = [e for e in emotions(settings) if e["stream_id"] == "talk"]

    assert job.stats.renewals >= 1 and job.stats.restarts == 0 and job.stats.dead_letters == 0, job.stats
    ids = Counter(e["utterance_id"] for e in events)
    assert ids and max(ids.values()) == 1, f"repeated events: {ids}"
    assert set(ids) == {e["utterance_id"] for e in analyze(cluster, talk, "talk", None)}


def test_drafts_start_whisper_early_and_give_the_same_events(cluster: str, settings: Settings, librivox: list[Path],
                                                            tmp_path: Path, make_spine) -> None:  # type: ignore[no-untyped-def]
    """Published in 0.5 s segments, some utterances are drafted a segment before their pause closes them: their
    Whisper results and text embeddings are prepared ahead and used, and every utterance has the transcript
    and the emotion the in-process pipeline gives for the same segments."""
    settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"segment_seconds": 0.5})})
    talk = speech_track(librivox[:3], tmp_path / "talk.wav")
    publisher = threading.Thread(target=publish, args=(talk, "talk", settings), kwargs={"realtime": True})
    publisher.start()
    job = run_job(settings, {"talk"})
    publisher.join()
    counts = job.scorer.prepared.counts
    assert counts["used"] >= 1 and counts["used"] + counts["missed"] == job.stats.events and not counts["failed"], counts
    events = {e["utterance_id"]: e for e in emotions(settings)}
    bundles = make_spine(settings).file_utterances(talk, "talk")
    assert {i: e["transcript"] for i, e in events.items()} == {b.utterance_id: b.transcript for b in bundles}
    scorer, contexts = load_scorer(None), StreamContexts()
    for bundle in bundles:  # one at a time with the stream's context, as the job scores them
        expected = scorer.score([bundle], contexts)[0]
        got = events[bundle.utterance_id]
        assert got["label"] == expected.label
        assert got["probabilities"] == pytest.approx(expected.probabilities, abs=1e-3)


def test_backfill_of_files_and_of_a_kafka_range_gives_the_same_utterances(cluster: str, settings: Settings,
                                                                        media: dict[str, Path], tmp_path: Path) -> None:
    from emostream.live.backfill import backfill, records_from_files, records_from_kafka, write_events
    from emostream.sinks import open_sink

    out = tmp_path / "events.jsonl"
    counts = write_events(backfill(records_from_files([media["meeting"]], settings, None), settings),
                          open_sink("jsonl", settings, out))
    from_files = [json.loads(line) for line in out.read_text().splitlines()]
    assert counts == {"event": len(from_files), "dead_letter": 0}
    reference = analyze(cluster, media["meeting"], "meeting", None)
    assert [e["utterance_id"] for e in from_files] == [e["utterance_id"] for e in reference]

    publish(media["call"], "call", settings, channels=CHANNELS["call"])
    publish(media["call"], "call", settings, channels=CHANNELS["call"])  # sent twice: the repeats count once
    counts = write_events(backfill(records_from_kafka(settings, "earliest", "latest"), settings), open_sink("kafka", settings))
    events = emotions(settings)
    assert counts["event"] == len(events) == 2
    assert [e["speaker"]["role"] for e in events] == ["customer", "agent"]
    assert {e["utterance_id"] for e in events} == {e["utterance_id"] for e in analyze(cluster, media["call"], "call", CHANNELS["call"])}


@contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """`processes` busy loops beside the test, started and stopped by pid: Ray's tasks and actors then run late
    and out of step, as on a loaded machine (where the backfill's order and wall-clock decisions used to slip)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def utterance_ids(outputs: Iterable[Any]) -> list[str]:
    events = [o for o in outputs if isinstance(o, UtteranceEmotionEvent)]
    return [e.utterance_id for e in sorted(events, key=lambda e: (e.start, e.utterance_id))]


def same_ids_each_time(server: str, settings: Settings, meeting: Path, repetitions: int, burners: int) -> None:
    """Backfill from the file, backfill from its Kafka range, and /v1/analyze: the same ids, every repetition,
    with `burners` busy loops beside them."""
    from emostream.live.backfill import backfill, records_from_files, records_from_kafka

    publish(meeting, "meeting", settings)
    reference = [e["utterance_id"] for e in analyze(server, meeting, "meeting", None)]
    assert reference
    with cpu_load(burners):
        for repetition in range(repetitions):
            from_files = utterance_ids(backfill(records_from_files([meeting], settings, None), settings))
            from_kafka = utterance_ids(backfill(records_from_kafka(settings, "earliest", "latest"), settings))
            analyzed = [e["utterance_id"] for e in analyze(server, meeting, "meeting", None)]
            assert from_files == from_kafka == analyzed == reference, (
                f"repetition {repetition}: files {from_files}, kafka {from_kafka}, analyze {analyzed}, first {reference}")
            print(f"repetition {repetition + 1}/{repetitions}: {len(reference)} ids, the same by all three paths", flush=True)


@pytest.mark.timeout(1800)  # four runs over the meeting clip beside a busy loop (minutes on two cores)
def test_backfill_from_files_and_from_kafka_and_analyze_give_the_same_ids_under_cpu_load(
        cluster: str, settings: Settings, media: dict[str, Path]) -> None:
    same_ids_each_time(cluster, settings, media["meeting"], repetitions=1, burners=1)


@pytest.mark.slow
@pytest.mark.timeout(6 * 3600)
def test_backfill_from_files_and_from_kafka_and_analyze_give_the_same_ids_20_times_under_cpu_load(
        cluster: str, settings: Settings, media: dict[str, Path]) -> None:
    same_ids_each_time(cluster, settings, media["meeting"], repetitions=20, burners=os.cpu_count() or 2)
