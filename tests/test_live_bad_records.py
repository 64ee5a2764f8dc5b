"""The live job on a real broker fed one of each kind of bad record between two good streams (issue 22, must show):
it stays up, both good streams give all their events (the ids /v1/analyze gives), every bad record gives exactly
one bounded dead letter with its reason, and the committed offsets reach the end of the topic."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from kafka import TopicPartition

from emostream.contracts import MAX_DEAD_LETTER_DETAIL, MAX_DEAD_LETTER_KEY
from emostream.ingest.bad_records import bad_records, send_bad_records
from emostream.ingest.publish import publish
from emostream.kafka.clients import consumer, producer
from emostream.media.synthetic import speech_track
from emostream.settings import Settings
from tests.kafka_helpers import read_topic
from tests.test_live import analyze, emotions

pytestmark = pytest.mark.broker  # starts Ray: loopback-only namespace

# A dead letter's JSON: its bounded texts (JSON escapes take up to 6 characters for 1) and the rest.
MAX_DEAD_LETTER_BYTES = 6 * (MAX_DEAD_LETTER_DETAIL + 2 * MAX_DEAD_LETTER_KEY) + 1000


def committed_and_end(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """The job group's committed offset of each media partition, and the offset after its last record (read, not
    the broker's end offset: Tansu's can be short of a batch's last record)."""
    partitions = [TopicPartition(settings.kafka.media_topic, p) for p in range(settings.kafka.partitions)]
    group = consumer(settings.kafka, group_id=settings.kafka.group_id)
    try:
        committed = {tp.partition: group.committed(tp) or 0 for tp in partitions}
    finally:
        group.close()
    reader = consumer(settings.kafka, group_id=None)
    end = dict.fromkeys(committed, 0)
    try:
        reader.assign(partitions)
        reader.seek_to_beginning()
        while batches := reader.poll(timeout_ms=3000):
            for tp, records in batches.items():
                end[tp.partition] = max(end[tp.partition], records[-1].offset + 1)
    finally:
        reader.close()
    return committed, end


def test_bad_records_between_good_streams_cost_nothing_but_their_dead_letters(
        cluster: str, settings: Settings, librivox: list[Path], tmp_path: Path) -> None:
    from emostream.live.job import LiveJob
    from emostream.live.serve_client import ServeClient

    talk = speech_track(librivox[:2], tmp_path / "talk.wav")
    publish(talk, "good-a", settings)
    out = producer(settings.kafka)
    bad = list(send_bad_records(out, settings.kafka, bad_records("bad", settings.kafka)))
    out.flush()
    out.close()
    publish(talk, "good-b", settings)
    closed = {"good-a", "good-b", *(r.key.decode() for r in bad if r.closing is not None)}  # type: ignore[union-attr]
    refused = [r for r in bad if r.reason is not None]  # the valid-but-hostile ones must give no dead letter

    job = LiveJob(settings, ServeClient.for_settings(settings))
    stop, failure = threading.Event(), []

    def run() -> None:
        try:
            job.run(stop=stop, until=lambda s: closed <= s.ended_streams and s.dead_letters >= len(refused))
        except BaseException as error:  # the test fails on it below
            failure.append(error)

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(timeout=600)
    stop.set()
    runner.join(timeout=60)
    assert not failure and not runner.is_alive(), failure
    assert closed <= job.stats.ended_streams and job.stats.restarts == 0, job.stats

    events = emotions(settings)
    for name in ("good-a", "good-b"):
        reference = {e["utterance_id"] for e in analyze(cluster, talk, name, None)}
        assert reference and {e["utterance_id"] for e in events if e["stream_id"] == name} == reference, name
    hostile = {r.key.decode() for r in bad if r.reason is None}  # type: ignore[union-attr]
    assert {"good-a", "good-b"} <= {e["stream_id"] for e in events} <= {"good-a", "good-b", *hostile}

    letters = read_topic(settings, settings.kafka.deadletter_topic, expect=len(refused) + 1, timeout=10)
    assert len(letters) == len(refused) == job.stats.dead_letters, [letter["reason"] for letter in letters]
    assert Counter(letter["reason"] for letter in letters) == Counter(r.reason.value for r in refused)  # type: ignore[union-attr]
    assert len({(letter["source"]["partition"], letter["source"]["offset"]) for letter in letters}) == len(refused)
    assert max(len(json.dumps(letter)) for letter in letters) <= MAX_DEAD_LETTER_BYTES

    committed, end = committed_and_end(settings)  # the job commits what it has done before it returns
    assert committed == end, (committed, end)
