"""Issue 22's input and resource items: each bad input below once crashed, overflowed or exhausted something."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pytest

from emostream.contracts import MAX_AUDIO_CHANNELS, ContractError, DeadLetterReason, SegmentHeaders
from emostream.ingest.bad_records import RawName, wav_bytes
from emostream.live.source import RECORD, SCHEMA, record_row
from emostream.live.stages import REJECTED, SegmentStage
from emostream.media.decode import DecodeError, decode_segment
from emostream.media.records import segment_headers
from emostream.media.segmenter import segment_file
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
    ("emostream-duration", "inf"), ("emostream-duration", "121"), ("emostream-timestamp-offset", "nan"),
    ("emostream-timestamp-offset", "-1e300"), ("emostream-sent-at", "nan"),
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


# -- 22.2: many audio channels -------------------------------------------------------------------


def surround_mkv(layout: str, seconds: float = 1.0) -> bytes:
    """A Matroska file of PCM audio in a named FFmpeg layout (e.g. 7.1), as a camera or mixer writes it."""
    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as container:
        stream = container.add_stream("pcm_s16le", rate=48000)
        stream.codec_context.layout = layout
        n_channels = stream.codec_context.channels
        samples = (3000 * np.sin(np.linspace(0, 440 * np.pi, int(48000 * seconds)))).astype("<i2")
        frame = av.AudioFrame.from_ndarray(np.tile(samples[:, None], (1, n_channels)).reshape(1, -1), format="s16",
                                           layout=layout)
        frame.sample_rate = 48000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def decode_in_subprocess(content_type: str, payload: bytes, **limits: int) -> dict[str, Any]:
    """decode_segment in a child process: a crash shows as a signal instead of killing pytest."""
    script = textwrap.dedent(f"""
        import json, sys
        from emostream.contracts import SegmentHeaders
        from emostream.media.decode import decode_segment, DecodeError
        headers = SegmentHeaders(stream_id="s", seq=0, start=0, content_type={content_type!r})
        try:
            segment = decode_segment(headers, sys.stdin.buffer.read(), **{limits!r})
            print(json.dumps({{"audio": list(segment.audio.shape), "seconds": segment.audio_seconds}}))
        except DecodeError as error:
            print(json.dumps({{"error": str(error)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], input=payload, capture_output=True, timeout=120,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, f"decoder died with {done.returncode}: {done.stderr.decode()[-2000:]}"
    return json.loads(done.stdout)


@pytest.mark.parametrize("n_channels", [8, 9, 16])
def test_raw_pcm_with_many_channels_decodes_without_a_crash(n_channels: int) -> None:
    pcm = np.zeros((8000, n_channels), "<i2").tobytes()
    result = decode_in_subprocess(f"audio/pcm;rate=8000;channels={n_channels}", pcm)
    assert result["audio"][0] == n_channels and abs(result["seconds"] - 1.0) < 0.01


@pytest.mark.parametrize("n_channels", [8, 9, 16])
def test_wav_with_many_channels_decodes_without_a_crash(n_channels: int) -> None:
    result = decode_in_subprocess("audio/wav", wav_bytes(44100, n_channels, 1.0))
    assert result["audio"][0] == n_channels and abs(result["seconds"] - 1.0) < 0.01


@pytest.mark.parametrize("layout", ["7.1", "hexadecagonal"])
def test_surround_container_decodes_without_a_crash(layout: str) -> None:
    result = decode_in_subprocess("video/x-matroska", surround_mkv(layout))
    assert result["audio"][0] == av.AudioLayout(layout).nb_channels and abs(result["seconds"] - 1.0) < 0.01


def test_more_channels_than_the_limit_is_a_decode_error_naming_both() -> None:
    result = decode_in_subprocess("audio/wav", wav_bytes(16000, MAX_AUDIO_CHANNELS + 4, 0.1))
    assert result["error"] == (f"audio with {MAX_AUDIO_CHANNELS + 4} channels is over the limit of "
                               f"{MAX_AUDIO_CHANNELS} channels (each channel is analysed as a voice of its own)")
    with pytest.raises(ContractError, match=f"1–{MAX_AUDIO_CHANNELS} channels"):
        SegmentHeaders.from_kafka(headers(**{"emostream-content-type": "audio/pcm;rate=8000;channels=17"}))


def test_resampling_channel_by_channel_keeps_stereo_samples() -> None:
    """The per-channel path gives what FFmpeg's stereo resampler gives, where that one works."""
    rng = np.random.default_rng(0)
    pcm = (rng.normal(0, 3000, (8000, 2))).astype("<i2")
    decoded = decode_segment(SegmentHeaders(stream_id="s", seq=0, start=0, content_type="audio/pcm;rate=8000;channels=2"),
                             pcm.tobytes())
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate = 8000
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=16000)
    expected = np.concatenate([out.to_ndarray() for piece in (frame, None) for out in resampler.resample(piece)], axis=1)
    assert decoded.audio.shape == expected.shape
    np.testing.assert_allclose(decoded.audio, expected, atol=1e-6)


# -- 22.13: memory budgets counted before decoding -----------------------------------------------


def test_a_444_byte_wav_at_1_hz_is_refused_before_it_is_resampled() -> None:
    tiny = wav_bytes(1, 1, 200.0)
    assert len(tiny) == 444
    result = decode_in_subprocess("audio/wav", tiny, max_decoded_megabytes=1)
    assert result == {"error": "audio at 1 Hz is outside 1000–384000 Hz"}


def test_audio_budget_counts_samples_after_resampling() -> None:
    low_rate = wav_bytes(1000, 1, 100.0)  # 200 KB that resample to 6.4 MB of float32 at 16 kHz
    with pytest.raises(DecodeError, match="more than 4 MiB"):
        decode_segment(SegmentHeaders(stream_id="s", seq=0, start=0, content_type="audio/wav"), low_rate,
                       max_decoded_megabytes=4)
    with pytest.raises(DecodeError, match="more than 4 MiB"):
        decode_segment(SegmentHeaders(stream_id="s", seq=0, start=0, content_type="audio/pcm;rate=1000;channels=1"),
                       low_rate[44:], max_decoded_megabytes=4)


PEAK_SCRIPT = """
import sys
from pathlib import Path
from emostream.contracts import SegmentHeaders
from emostream.media.decode import decode_segment

def resident(field):  # kB in /proc/self/status: VmRSS now, VmHWM the peak since the last reset
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field + ":"))

headers = SegmentHeaders.model_validate_json(Path(sys.argv[1]).read_text())
payload = Path(sys.argv[2]).read_bytes()
Path("/proc/self/clear_refs").write_text("5")  # resets the peak to the current resident size
before = resident("VmRSS")
decoded = decode_segment(headers, payload, max_decoded_megabytes=int(sys.argv[3]))
print(resident("VmHWM") - before, decoded.frames.nbytes + decoded.audio.nbytes)
"""


def test_a_segment_longer_than_a_segment_may_be_is_refused() -> None:
    """Perception holds several times a segment's audio, so a record of 121 s is refused whatever the budget."""
    long = SegmentHeaders(stream_id="s", seq=0, start=0, content_type="audio/pcm;rate=8000;channels=1")
    with pytest.raises(DecodeError, match="holds 121.0 s of media, over the 120 s"):
        decode_segment(long, b"\0\0" * 8000 * 121)
    with pytest.raises(DecodeError, match=r"holds 120\.\d s of media, over the 120 s"):  # found as it decodes
        decode_segment(long.model_copy(update={"content_type": "audio/wav"}), wav_bytes(8000, 1, 121.0))


def test_video_within_budget_is_never_held_twice(wolfgang: Path, tmp_path: Path) -> None:
    """Peak memory of a decode (a fresh process's peak RSS over its peak before) stays within the budget: frames
    are counted before they are converted and not copied again into the stacked array."""
    segment = next(iter(segment_file(wolfgang)))
    hdrs = segment_headers("s", segment, None)
    (tmp_path / "headers.json").write_text(hdrs.model_dump_json())
    (tmp_path / "payload").write_bytes(segment.payload)

    def peak_and_size(budget: int) -> tuple[int, int]:
        done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "headers.json"), str(tmp_path / "payload"),
                               str(budget)], capture_output=True, timeout=300, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
        peak, size = map(int, done.stdout.split())
        return peak, size

    _, size = peak_and_size(4096)
    # the decoded media once, plus the decoder's own buffers (about 25 MiB here); not the media twice
    budget = int(size / 2**20) + 40
    peak, _ = peak_and_size(budget)
    assert peak < budget * 2**20, f"decoding {size / 2**20:.0f} MiB peaked at {peak / 2**20:.0f} MiB, over {budget} MiB"
    with pytest.raises(DecodeError, match="more than"):
        decode_segment(hdrs, segment.payload, max_decoded_megabytes=int(0.5 * size / 2**20))


# -- 22.11: the backfill keeps its records in order -----------------------------------------------


class BuiltDataset:
    """Stands in for a Ray dataset: records what a real one keeps from its creation (ray.data's read functions
    copy the current DataContext into the dataset) and goes on being that dataset through map and flat_map."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from ray.data import DataContext  # noqa: PLC0415

        self.preserve_order = DataContext.get_current().execution_options.preserve_order

    def map(self, *args: Any, **kwargs: Any) -> BuiltDataset:
        return self

    flat_map = map


def test_the_backfills_datasets_are_built_to_keep_their_records_in_order(librivox: list[Path],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Data keeps a dataset's execution options from when it is created: preserve_order set after the backfill's
    dataset was built had no effect, and a stream's segments out of order looked like gaps and cut utterances
    differently (the intermittent file/Kafka backfill mismatch). Without Ray: what matters is the option's value
    at the moment each dataset is created."""
    import ray.data  # noqa: PLC0415
    from ray.data import DataContext  # noqa: PLC0415

    from emostream.live.backfill import records_from_files, records_from_kafka  # noqa: PLC0415

    monkeypatch.setattr(ray.data, "from_items", BuiltDataset)
    monkeypatch.setattr(ray.data, "read_kafka", BuiltDataset)
    settings = Settings()
    built = {}
    for name, build in (("files", lambda: records_from_files(librivox[:1], settings, None)),
                        ("kafka", lambda: records_from_kafka(settings, "earliest", "latest"))):
        monkeypatch.setattr(DataContext.get_current().execution_options, "preserve_order", False)  # a fresh process's
        built[name] = build().preserve_order
    assert built == {"files": True, "kafka": True}


# -- 22.12: one perceiver, many threads ----------------------------------------------------------


def face_points(perceived: Any) -> list[np.ndarray]:
    return [face.landmarks.points for frame in perceived.faces.analysed for face in frame.faces]


def test_segment_perception_is_the_same_from_concurrent_threads(wolfgang: Path) -> None:
    """Serve calls a deployment's sync `perceive` from a thread pool on one shared perceiver."""
    from emostream.perception.segment import SegmentPerceiver  # noqa: PLC0415

    segment = next(iter(segment_file(wolfgang)))
    decoded = decode_segment(segment_headers("s", segment, None), segment.payload, max_frame_side=320)
    perceiver = SegmentPerceiver(Settings(faces={"analysis_fps": 0, "detect_every": 1, "landmarks": True}))
    alone = face_points(perceiver(decoded))
    assert alone, "the clip shows a face"
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda _: face_points(perceiver(decoded)), range(8)))
    for points in together:
        assert len(points) == len(alone)
        for mine, theirs in zip(points, alone, strict=True):
            np.testing.assert_array_equal(mine, theirs)


# -- 22.4: a header name that is not UTF-8 -------------------------------------------------------


@pytest.mark.broker
def test_a_header_name_that_is_not_utf8_is_dead_lettered_and_the_partition_goes_on(settings: Settings) -> None:
    from emostream.kafka.clients import producer  # noqa: PLC0415
    from emostream.live.source import read_partitions  # noqa: PLC0415

    pcm = b"\0\0" * 1600
    out = producer(settings.kafka)
    for seq in range(4):  # one batch: the bad record sits between good ones
        hdrs = headers(**{"emostream-seq": str(seq)})
        if seq == 1:
            hdrs = [(RawName(b"emostream-\xff\xfe"), b"x"), *hdrs]
        out.send(settings.kafka.media_topic, key=b"s", value=pcm, headers=hdrs, partition=0)
    out.flush()
    out.close()

    rows: list[dict[str, Any]] = []
    reader = read_partitions(settings.kafka, settings.kafka.group_id, [0], poll_seconds=0.2)
    deadline = time.monotonic() + 30
    while len(rows) < 4 and time.monotonic() < deadline:
        rows += [row for row in next(reader).to_pylist() if row["kind"] == RECORD]
    reader.close()
    assert [row["offset"] for row in rows] == [0, 1, 2, 3]
    assert rows[1]["header_keys"][0] == b"emostream-\xff\xfe"
    stage = SegmentStage(Settings().model_dump_json())
    processed = [stage.process(row) for row in rows]
    assert [row["kind"] for row in processed] == ["segment", REJECTED, "segment", "segment"]
    letter = json.loads(processed[1]["payload"])
    assert letter["reason"] == DeadLetterReason.BAD_HEADERS
    assert letter["detail"] == "header name b'emostream-\\xff\\xfe' is not UTF-8"
