import json
from pathlib import Path

import pytest

from emostream.cli.schema import schema_documents
from emostream.contracts import (
    ContractError,
    DeadLetterEvent,
    SegmentHeaders,
    UtteranceEmotionEvent,
    utterance_id,
)

SCHEMAS = Path(__file__).resolve().parent.parent / "deployments" / "schemas"


def test_segment_headers_round_trip_through_kafka_headers() -> None:
    headers = SegmentHeaders(stream_id="call-7", seq=41, start=82.0, duration=2.0, timestamp_offset=81.0,
                             content_type="video/mp2t", channels=("agent", "customer"), sent_at=1.5)
    wire = headers.to_kafka()
    assert ("emostream-stream-id", b"call-7") in wire
    assert ("emostream-channels", b"agent,customer") in wire
    assert SegmentHeaders.from_kafka([*wire, ("traceparent", b"00-abc")]) == headers


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([], "emostream-stream-id is missing"),
        ([("emostream-stream-id", b"s"), ("emostream-seq", b"x"), ("emostream-start", b"0"),
          ("emostream-content-type", b"audio/wav")], "emostream-seq = 'x'"),
        ([("emostream-stream-id", b"s"), ("emostream-seq", b"1"), ("emostream-start", b"0"),
          ("emostream-content-type", b"video/x-flv")], "unsupported content type 'video/x-flv'"),
        ([("emostream-stream-id", b"s"), ("emostream-seq", b"1"), ("emostream-start", b"0"),
          ("emostream-content-type", b"audio/pcm;rate=abc")], "raw PCM needs integer parameters"),
        ([("emostream-stream-id", b"bad id!"), ("emostream-seq", b"1"), ("emostream-start", b"0"),
          ("emostream-content-type", b"audio/wav")], "emostream-stream-id = 'bad id!'"),
        ([("emostream-stream-id", b"s"), ("emostream-seq", b"1"), ("emostream-start", b"0"),
          ("emostream-content-type", b"audio/wav"), ("emostream-end-of-stream", b"maybe")], "expected true or false"),
        ([("emostream-stream-id", b"\xff"), ("emostream-seq", b"1")], "is not UTF-8"),
        ([("emostream-schema-version", b"2.0"), ("emostream-stream-id", b"s"), ("emostream-seq", b"1"),
          ("emostream-start", b"0"), ("emostream-content-type", b"audio/wav")], "unsupported schema version"),
    ],
)
def test_malformed_headers_name_the_problem(headers: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SegmentHeaders.from_kafka(headers)


def test_utterance_ids_are_deterministic_per_stream_speaker_and_start() -> None:
    assert utterance_id("call-7", "customer", 12.3456) == utterance_id("call-7", "customer", 12.3459)
    assert utterance_id("call-7", "customer", 12.3) != utterance_id("call-7", "agent", 12.3)
    assert utterance_id("call-7", "customer", 12.3) != utterance_id("call-8", "customer", 12.3)


def test_emotion_event_validates_every_field() -> None:
    event = UtteranceEmotionEvent(
        stream_id="call-7", utterance_id=utterance_id("call-7", "customer", 1.0),
        speaker={"id": "customer", "role": "customer", "channel": 1},
        start=1.0, end=3.5, transcript="I have been waiting for an hour", label="angry",
        probabilities={"angry": 0.7, "neutral": 0.3}, valence=-0.6, arousal=0.7,
        open_vocabulary=["irritated"], explanation="pitch 1.8 σ above this speaker's mean",
        cues=[{"modality": "voice", "name": "pitch_mean", "value": 1.8, "detail": "+1.8 σ"}],
        listeners=[{"face_track": 2, "label": "neutral", "probabilities": {"neutral": 1.0}}],
        model={"name": "emostream-lite", "version": "1"}, timings={"processing_seconds": 0.2},
        produced_at="2026-11-22T00:00:00Z",
    )
    assert UtteranceEmotionEvent.model_validate_json(event.model_dump_json()) == event
    with pytest.raises(ValueError, match="end 0.5 is before start 1.0"):
        UtteranceEmotionEvent.model_validate({**event.model_dump(), "end": 0.5})
    with pytest.raises(ValueError, match="valence"):
        UtteranceEmotionEvent.model_validate({**event.model_dump(), "valence": 2})


def test_committed_json_schemas_match_the_contracts() -> None:
    documents = schema_documents()
    assert sorted(documents) == sorted(p.name for p in SCHEMAS.glob("*.schema.json"))
    for name, text in documents.items():
        assert (SCHEMAS / name).read_text() == text, f"{name} drifted: run `emostream schema`"
    dead_letter = json.loads(documents["dead-letter-event.schema.json"])
    assert "reason" in dead_letter["required"] and "source" in dead_letter["required"]


def test_dead_letter_event_never_carries_media() -> None:
    assert "value" not in DeadLetterEvent.model_fields
    assert "value_bytes" in DeadLetterEvent.model_fields
