"""Issue 22's input and resource items: each bad input below once crashed, overflowed or exhausted something."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from emostream.contracts import ContractError, DeadLetterReason, SegmentHeaders
from emostream.live.source import RECORD, SCHEMA, record_row
from emostream.live.stages import REJECTED, SegmentStage
from emostream.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def headers(**changes: str) -> list[tuple[str, bytes]]:
    base = {"emostream-stream-id": "s", "emostream-seq": "1", "emostream-start": "0",
            "emostream-content-type": "audio/pcm;rate=16000;channels=1", **changes}
    return [(name, value.encode()) for name, value in base.items()]


def stage_rows(records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]) -> list[dict[str, Any]]:
    """The perception stage's output rows for (key, value, headers) records, through its Arrow schema."""
    stage = SegmentStage(Settings().model_dump_json())
    rows = [record_row(RECORD, "media", 0, offset, key, value, hdrs, 0, 0, offset + 1)
            for offset, (key, value, hdrs) in enumerate(records)]
    return stage(pa.Table.from_pylist(rows, schema=SCHEMA)).to_pylist()


# -- 22.1: header bounds -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("emostream-seq", str(2**63)), ("emostream-seq", "-1"), ("emostream-start", "nan"), ("emostream-start", "inf"),
    ("emostream-start", "-1"), ("emostream-start", "1e300"), ("emostream-duration", "-2"),
    ("emostream-duration", "inf"), ("emostream-timestamp-offset", "nan"), ("emostream-timestamp-offset", "-1e300"),
    ("emostream-sent-at", "nan"),
])
def test_out_of_range_header_becomes_a_bad_headers_dead_letter(name: str, value: str) -> None:
    [row] = stage_rows([(b"s", b"\0\0" * 1600, headers(**{name: value}))])
    assert row["kind"] == REJECTED
    letter = json.loads(row["payload"])
    assert letter["reason"] == DeadLetterReason.BAD_HEADERS
    assert name in letter["detail"]


def test_largest_int64_seq_is_still_a_segment() -> None:
    [row] = stage_rows([(b"s", b"\0\0" * 1600, headers(**{"emostream-seq": str(2**63 - 1)}))])
    assert row["kind"] == "segment" and row["seq"] == 2**63 - 1


# -- 22.8: role names ----------------------------------------------------------------------------


@pytest.mark.parametrize(("roles", "message"), [
    ("x" * 100_000, "at most 64 characters"),
    (",".join(["r"] * 17), "at most 16 items"),
    ("agent,,customer", "at least 1 character"),
])
def test_channel_roles_have_length_and_count_limits(roles: str, message: str) -> None:
    with pytest.raises(ContractError, match=message) as caught:
        SegmentHeaders.from_kafka(headers(**{"emostream-channels": roles}))
    assert len(str(caught.value)) < 2000


def test_a_huge_role_gives_a_small_dead_letter() -> None:
    [row] = stage_rows([(b"s", b"\0\0" * 1600, headers(**{"emostream-channels": "x" * 100_000}))])
    assert row["kind"] == REJECTED and len(row["payload"]) < 3000


# -- 22.3: bounded dead letters ------------------------------------------------------------------


def test_a_100_kb_key_gives_a_dead_letter_of_a_few_kb() -> None:
    key = b"k" * 100_000
    cases = [
        (key, b"\0\0", headers(**{"emostream-stream-id": "k" * 100_000})),  # bad header value, repeated in detail
        (key, b"\0\0", headers()),  # key differs from the stream id
        (key, b"", [("emostream-seq", b"1")]),  # no stream id: the key stands for it
    ]
    for row in stage_rows(cases):
        assert row["kind"] == REJECTED
        assert len(row["payload"]) < 4000, row["payload"][:200]
        letter = json.loads(row["payload"])
        assert letter["key"].startswith("kkk") and letter["key"].endswith("[100000 chars]")
        assert row["stream_id"] is None or len(row["stream_id"]) <= 256


# -- 22.19: backfill --from-kafka with a client certificate --------------------------------------


def test_backfill_from_kafka_passes_the_client_certificate_and_key(tmp_path: Path) -> None:
    from confluent_kafka import Consumer  # noqa: PLC0415

    from emostream.live.backfill import confluent_config  # noqa: PLC0415
    from emostream.settings import KafkaSettings  # noqa: PLC0415

    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=emostream-test", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    kafka = KafkaSettings(security_protocol="SSL", ssl_cafile=str(cert), ssl_certfile=str(cert), ssl_keyfile=str(key))
    config = confluent_config(kafka)
    assert config["ssl.certificate.location"] == str(cert)
    assert config["ssl.key.location"] == str(key)
    assert config["ssl.ca.location"] == str(cert)
    # librdkafka loads the certificate and key when the client is made: a wrong pair or option name fails here
    Consumer({**config, "bootstrap.servers": "127.0.0.1:1", "group.id": "g"}).close()
