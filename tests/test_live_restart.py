"""The whole live job killed mid-stream (`emostream run` and its Ray, SIGKILL) and started again:
every utterance comes out, repeats only with the same ids. Slow: two Ray and Serve start-ups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import pytest
import yaml

from emostream.ingest.publish import publish
from emostream.kafka.broker import free_port
from emostream.kafka.clients import consumer
from emostream.media.synthetic import speech_track
from emostream.settings import Settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]

EMOSTREAM = str(Path(sys.executable).with_name("emostream"))


def start_job(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen([EMOSTREAM, "--config", str(config), "run", "--cpus", "2"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the job and every process it started (its local Ray), by process id."""
    family = [process.pid] + [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def wait_for_metrics(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).close()
            time.sleep(5)  # the dataset starts right after the endpoint
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the job's metrics endpoint did not come up within {timeout} s")


def events_until(settings: Settings, done, timeout: float) -> list[dict]:  # type: ignore[no-untyped-def]
    reader = consumer(settings.kafka, [settings.kafka.emotions_topic], group_id=None)
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(events):
            for records in reader.poll(timeout_ms=500).values():
                events += [json.loads(r.value) for r in records]
    finally:
        reader.close()
    return events


def test_the_killed_job_resumes_and_repeats_only_with_the_same_ids(settings: Settings, librivox: list[Path],
                                                                   make_spine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    talk = speech_track(librivox[:3], tmp_path / "talk.wav")
    expected = {b.utterance_id for b in make_spine(settings).file_utterances(talk, "talk")}
    assert len(expected) >= 3
    config = tmp_path / "settings.yaml"
    metrics_port = free_port()
    config.write_text(yaml.safe_dump({"kafka": settings.kafka.model_dump(mode="json"),
                                      "serve": {"port": free_port()}, "live": {"metrics_port": metrics_port}}))
    log = tmp_path / "job.log"

    job = start_job(config, log)
    publisher = threading.Thread(target=publish, args=(talk, "talk", settings), kwargs={"realtime": True})
    try:
        wait_for_metrics(metrics_port, timeout=240)  # the job is up: the talk starts while it runs
        publisher.start()
        first = events_until(settings, lambda got: len(got) >= 1, timeout=240)
        assert first, f"no event before the kill; job log:\n{log.read_text()[-3000:]}"
    finally:
        kill_tree(job)
    publisher.join()

    job = start_job(config, log)
    try:
        events = events_until(settings, lambda got: expected <= {e["utterance_id"] for e in got}, timeout=300)
    finally:
        kill_tree(job)
    ids = Counter(e["utterance_id"] for e in events)
    assert expected <= set(ids), f"missing after the restart; job log:\n{log.read_text()[-3000:]}"
    assert set(ids) == expected  # repeats, if any, carry the ids of the first run
