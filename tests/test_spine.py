"""The spine in one process gives the events the chain gave before it was rewritten (issue 18).

`tests/data/spine_events.json` was written by the in-process chain as it stood before the spine existed
(commit 7d9a14b: perception.pipeline.Perception, then EmotionScorer.score): the same media, the same default
model, the same ids, labels and probabilities must come out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from emostream.media.synthetic import mux_files, speech_track
from emostream.settings import load_settings

BEFORE = json.loads((Path(__file__).parent / "data" / "spine_events.json").read_text())


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, wolfgang: Path, librivox: list[Path], shared_data: Path) -> dict[str, Path]:
    """The meeting (face video, read speech) and the stereo call of tests/test_live.py."""
    tmp = tmp_path_factory.mktemp("spine-media")
    meeting = mux_files(wolfgang, speech_track(librivox[:1], tmp / "speech.wav"), tmp / "meeting.mp4")
    ravdess = shared_data / "ravdess-speech-16k"
    customer, _ = soundfile.read(ravdess / "Actor_03" / "03-01-05-02-01-01-03.flac", dtype="float32")  # angry
    agent, rate = soundfile.read(ravdess / "Actor_08" / "03-01-02-01-02-01-08.flac", dtype="float32")  # calm
    gap = int(1.5 * rate)
    call = np.zeros((len(customer) + gap + len(agent), 2), np.float32)
    call[: len(customer), 0] = customer
    call[len(customer) + gap :, 1] = agent
    soundfile.write(tmp / "call.wav", call, rate, subtype="PCM_16")
    return {"meeting": meeting, "call": tmp / "call.wav"}


@pytest.mark.parametrize(("name", "channels"), [("meeting", None), ("call", ("customer", "agent"))])
def test_the_spine_gives_the_events_of_the_chain_it_replaced(name: str, channels: tuple[str, ...] | None,
                                                             media: dict[str, Path], make_spine) -> None:  # type: ignore[no-untyped-def]
    events = list(make_spine(load_settings()).file_events(media[name], name, channels))
    before = BEFORE[name]
    assert [(e.utterance_id, e.speaker.id, e.label) for e in events] == [(b["utterance_id"], b["speaker"], b["label"]) for b in before]
    for event, old in zip(events, before, strict=True):
        assert (event.start, event.end) == pytest.approx((old["start"], old["end"]), abs=1e-3)
        assert event.probabilities == pytest.approx(old["probabilities"], abs=2e-3)
