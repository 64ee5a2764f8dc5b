"""The spine in one process gives the events the chain gave before it was rewritten (issue 18).

`tests/data/spine_events.json` was written by the in-process chain as it stood before the spine existed
(commit 7d9a14b: perception.pipeline.Perception, then EmotionScorer.score): the same media, the same default
model, the same ids, labels and probabilities must come out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emostream.settings import load_settings
from tests.speech_helpers import meeting_and_call

BEFORE = json.loads((Path(__file__).parent / "data" / "spine_events.json").read_text())


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, wolfgang: Path, librivox: list[Path], shared_data: Path) -> dict[str, Path]:
    """The meeting (face video, read speech) and the stereo call of tests/test_live.py."""
    return meeting_and_call(tmp_path_factory.mktemp("spine-media"), wolfgang, librivox, shared_data)


@pytest.mark.parametrize(("name", "channels"), [("meeting", None), ("call", ("customer", "agent"))])
def test_the_spine_gives_the_events_of_the_chain_it_replaced(name: str, channels: tuple[str, ...] | None,
                                                             media: dict[str, Path], make_spine) -> None:  # type: ignore[no-untyped-def]
    events = list(make_spine(load_settings()).file_events(media[name], name, channels))
    before = BEFORE[name]
    assert [(e.utterance_id, e.speaker.id, e.label) for e in events] == [(b["utterance_id"], b["speaker"], b["label"]) for b in before]
    for event, old in zip(events, before, strict=True):
        assert (event.start, event.end) == pytest.approx((old["start"], old["end"]), abs=1e-3)
        assert event.probabilities == pytest.approx(old["probabilities"], abs=2e-3)
