"""The live job at the largest load `bench/live.py` calls real time on this machine: four streams of read speech
(the five LibriVox recordings with pauses, about 31 s), published in real time in 0.5 s segments and starting
together, so that their utterances end at the same moments (the README's figures: p95 1.40 s at four such
streams, 2.9 s at eight). What must hold under that load, whatever the timings: every stream's events complete,
each once, in the stream's order, with the utterance ids the in-process spine finds in the same media.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from emostream.contracts import utterance_id
from emostream.ingest.publish import publish
from emostream.media.synthetic import speech_track
from emostream.settings import Settings
from tests.test_live import emotions, run_job

# starts Ray (loopback-only namespace); over a minute: 31 s of real-time media, then the spine's reference
pytestmark = [pytest.mark.broker, pytest.mark.slow]

STREAMS = 4  # the largest load bench/live.py sustains in real time here (README: four streams starting together)
SEGMENT_SECONDS = 0.5  # the bench's segments


def test_four_real_time_streams_give_every_utterance_once_in_order(cluster: str, settings: Settings,
                                                                   librivox: list[Path], tmp_path: Path,
                                                                   make_spine) -> None:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"segment_seconds": SEGMENT_SECONDS})})
    talk = speech_track(librivox, tmp_path / "talk.wav")
    names = [f"load-{i}" for i in range(STREAMS)]
    publishers = [threading.Thread(target=publish, args=(talk, name, settings), kwargs={"realtime": True})
                  for name in names]
    for thread in publishers:
        thread.start()
    job = run_job(settings, set(names))
    for thread in publishers:
        thread.join()
    events = emotions(settings)

    # The reference: the in-process spine on the same media. Every stream carries the same media, so its
    # utterances are the same; an utterance's id is a function of its stream, speaker and start.
    bundles = make_spine(settings).file_utterances(talk, "reference")
    assert len(bundles) >= 5  # one or more per recording
    assert job.stats.dead_letters == 0 and job.stats.restarts == 0
    for name in names:
        ours = [e for e in events if e["stream_id"] == name]  # the emotions topic is keyed by stream: its order
        expected = [utterance_id(name, b.speaker_id, b.start) for b in bundles]
        assert [e["utterance_id"] for e in ours] == expected, (
            f"{name}: live {[(e['speaker']['id'], e['start']) for e in ours]} vs the spine "
            f"{[(b.speaker_id, b.start) for b in bundles]}")
        starts = [e["start"] for e in ours]
        assert starts == sorted(starts) and len(set(starts)) == len(starts), f"{name}: not in order: {starts}"
