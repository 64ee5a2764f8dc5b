"""The describer in the jobs: `emostream backfill --describe` and the live job's `live.describe_roles`, on real Ray
(Data, actors, Serve) with a tiny describer taught one fixed answer, so the words in an event can only have come
from it."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from emostream.models.config import EmotionConfig
from emostream.models.instructions import NO_CUE, Answer
from emostream.models.presets import DEFAULT_CHECKPOINT
from emostream.perception.utterance import UtteranceBundle
from emostream.settings import load_settings
from tests.model_helpers import random_bundle

pytestmark = pytest.mark.broker  # starts Ray: loopback-only namespace

WORDS = ["sadness"]


def fixed_answer_describer(folder: Path, bundles: list[UtteranceBundle]) -> Path:
    """A tiny LLM checkpoint (random blocks, a tiny GPT-2) trained to answer "sad … sadness" for each of `bundles`, read
    on its own as the describer reads it (seconds on a CPU): what the jobs must carry into the events, whatever a
    random tiny LM would write."""
    import torch

    from emostream.models.inputs import collate
    from emostream.models.llm import bundled_tokenizer, language_loss
    from emostream.models.presets import tiny

    torch.manual_seed(0)
    model = tiny(llm=True, audio_embedding=SERVED_WIDTH).train()  # reads what the default scorer reads
    tokenizer = bundled_tokenizer()
    answer = Answer("sad", "normal", tuple(WORDS), NO_CUE).text()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = sum(language_loss(model, model(collate([b], model.config)), tokenizer, [b.transcript], [answer]) for b in bundles)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
    model.eval().save_pretrained(folder)
    return folder


# The bundles' Whisper embedding follows the served model (the default's), and so must the describer's.
SERVED_WIDTH = EmotionConfig.from_pretrained(DEFAULT_CHECKPOINT).audio_embedding
CUSTOMER = replace(random_bundle(stream="call", seed=1, face=False, frames=False, audio_width=SERVED_WIDTH), role="customer")
AGENT = replace(random_bundle(stream="call", start=3.0, seed=2, face=False, frames=False, audio_width=SERVED_WIDTH),
                role="agent", speaker_id="agent")


@pytest.fixture(scope="module")
def describer(tmp_path_factory: pytest.TempPathFactory, librivox: list[Path]) -> Path:
    """Taught on the utterances the tests give it: the clip's, perceived in process as the backfill perceives it
    with this describer served (its transcripts then get text embeddings: `scoring_voice`), and both speakers of the
    live test's call (so words missing from an event mean the describer was not asked)."""
    from emostream.spine import Spine

    folder = tmp_path_factory.mktemp("describer")
    clip = Spine(load_settings(serve={"describer": str(folder)})).file_utterances(librivox[0], librivox[0].stem)
    return fixed_answer_describer(folder, [*clip, CUSTOMER, AGENT])


@pytest.fixture(scope="module")
def ray_cluster():  # type: ignore[no-untyped-def]
    import ray
    from ray import serve

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=3, include_dashboard=False)  # the app (1 CPU of shares) and its describer (1.2)
    yield
    serve.shutdown()
    ray.shutdown()


def test_backfill_without_a_describer_is_refused_before_ray_starts(librivox: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    from emostream.cli import main

    assert main(["backfill", "--describe", str(librivox[0]), "--out", "never-written.jsonl"]) == 2
    assert "--describe needs a describer: set serve.describer" in capsys.readouterr().err
    assert not Path("never-written.jsonl").exists()


def test_backfill_with_describe_gives_events_with_the_describers_words(ray_cluster: None, describer: Path,
                                                                      librivox: list[Path], tmp_path: Path) -> None:
    from emostream.live.backfill import backfill, records_from_files, write_events
    from emostream.sinks import open_sink

    settings = load_settings(serve={"describer": str(describer)})
    out = tmp_path / "events.jsonl"
    counts = write_events(backfill(records_from_files(librivox[:1], settings, None), settings, describe=True),
                          open_sink("jsonl", settings, out))
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert counts == {"event": len(events), "dead_letter": 0} and events
    assert all(event["open_vocabulary"] == WORDS for event in events), events
    assert all(event["explanation"] for event in events)  # no cue cited: the scorer's own explanation stays


def test_live_describe_roles_calls_the_describer_for_those_roles_only(ray_cluster: None, describer: Path) -> None:
    from ray import serve

    from emostream.live.serve_client import ServeClient, describe_call
    from emostream.models.score import StreamContexts
    from emostream.serve.app import build_app

    settings = load_settings(serve={"describer": str(describer)}, live={"serve_app": "described", "describe_roles": "customer"})
    serve.start(proxy_location="Disabled")  # the live job calls through handles: no HTTP proxy to wait for
    serve.run(build_app({"serve": {"describer": str(describer)}}), name="described", route_prefix=None)
    customer, agent = CUSTOMER, AGENT
    try:
        client = ServeClient.for_settings(settings)
        assert client.describe_roles == ("customer",)
        events, _ = client.score([customer, agent], StreamContexts())
        assert [e["open_vocabulary"] for e in events] == [WORDS, []]
        events, _ = client.score([agent], StreamContexts())  # no utterance of a described role: the default call
        assert events[0]["open_vocabulary"] == [] and describe_call(client.describe_roles, [agent]) == {}
        default = ServeClient.for_settings(load_settings(live={"serve_app": "described"}))
        assert default.describe_roles == () and describe_call(default.describe_roles, [customer, agent]) == {}
        events, _ = default.score([customer, agent], StreamContexts())
        assert [e["open_vocabulary"] for e in events] == [[], []]
    finally:
        serve.delete("described")
