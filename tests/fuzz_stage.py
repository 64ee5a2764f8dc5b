"""Header and media fuzzer of the live perception stage: `python -m tests.fuzz_stage EXAMPLES [--random]`.

Hypothesis builds media-topic records (headers mutated field by field, payloads cut, flipped and mislabelled
from real seeds: WAV, raw PCM, 7.1 Matroska, H.264 in MPEG-TS and MP4) and runs each through
`SegmentStage.process` (record check, decode, perception) as the live job does. Every record must give one
row that fits the stage's Arrow schema: a perceived segment, or a dead letter within its bound. It prints
one JSON line: examples, rows by kind and reason, the largest rise of peak memory (VmHWM) over the resident size
while one record was decoded (held to ingest.max_decoded_megabytes) and while one was processed whole (decode
and perception), and how far the resident size grew over the whole run.
tests/test_fuzz.py runs it in a subprocess, so a crash shows as a signal.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emostream.contracts import (
    MAX_DEAD_LETTER_DETAIL,
    MAX_DEAD_LETTER_KEY,
    SUPPORTED_CONTENT_TYPES,
    DeadLetterEvent,
)
from emostream.live import stages
from emostream.live.source import RECORD, SCHEMA, record_row
from emostream.live.stages import REJECTED, SEGMENT, SegmentStage, perceived
from emostream.live.stages import SCHEMA as STAGE_SCHEMA
from emostream.media.decode import decode_record
from emostream.media.segmenter import segment_file
from emostream.media.synthetic import write_clip
from emostream.settings import Settings
from tests.test_hardening_input import surround_mkv, wav_bytes

BUDGET_MEGABYTES = 8  # ingest.max_decoded_megabytes of the fuzzed stage: low, so that seeds reach it
# A dead letter's JSON: the bounded texts, with room for JSON escapes (\uXXXX is 6 characters for 1), and the rest.
MAX_DEAD_LETTER_BYTES = 6 * (MAX_DEAD_LETTER_DETAIL + 2 * MAX_DEAD_LETTER_KEY) + 1000


def seeds() -> dict[str, tuple[str, bytes]]:
    """Real media of each kind the stage reads: name -> (content type, payload)."""
    folder = Path(tempfile.mkdtemp(prefix="emostream-fuzz-"))
    clip = write_clip(folder / "clip.mp4", seconds=1.0, width=96, height=64, fps=10, gop=10, audio_channels=2)
    ts = next(iter(segment_file(clip, 1.0))).payload
    return {
        "wav-16k": ("audio/wav", wav_bytes(16000, 1, 0.5)),
        "wav-8k-stereo": ("audio/wav", wav_bytes(8000, 2, 0.5)),
        "wav-44k-8ch": ("audio/wav", wav_bytes(44100, 8, 0.2)),
        "pcm-8k": ("audio/pcm;rate=8000;channels=1", wav_bytes(8000, 1, 0.5)[44:]),
        # 50 s at 1 kHz: 100 KB that resample to 3.2 MB of float32, counted as 6.8 MB: near the budget
        "pcm-1k-long": ("audio/pcm;rate=1000;channels=1", wav_bytes(1000, 1, 50.0)[44:]),
        "mkv-7.1": ("video/x-matroska", surround_mkv("7.1", 0.3)),
        "ts": ("video/mp2t", ts),
        "mp4": ("video/mp4", clip.read_bytes()),
    }


def garbage() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=40), st.sampled_from(["", "nan", "inf", "-inf", "-1", "1e308", "-1e308", str(2**63),
                                                            str(2**64), "1" * 400, "0x10", " 1 ", "true", "ÿ"]))


def numbers(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    extreme = st.one_of(st.integers(min_value=-(2**70), max_value=2**70),
                        st.floats(allow_nan=True, allow_infinity=True))
    return st.one_of(valid.map(str), extreme.map(str), garbage())


@st.composite
def records(draw: st.DrawFn, media: dict[str, tuple[str, bytes]]) -> tuple[bytes | None, bytes, list[tuple[str | bytes, bytes]]]:
    content_type, payload = media[draw(st.sampled_from(sorted(media)))]
    change = draw(st.sampled_from(["none", "cut", "flip", "splice", "random", "empty"]))
    if change == "cut" and payload:
        payload = payload[: draw(st.integers(0, len(payload)))]
    elif change == "flip" and payload:
        data = bytearray(payload)
        for _ in range(draw(st.integers(1, 16))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        payload = bytes(data)
    elif change == "splice" and payload:
        at = draw(st.integers(0, len(payload)))
        payload = payload[:at] + draw(st.binary(max_size=512)) + payload[at:]
    elif change == "random":
        payload = draw(st.binary(max_size=2048))
    elif change == "empty":
        payload = b""
    if draw(st.integers(0, 5)) == 3:  # mislabelled or hand-written content types
        rate, channels = draw(st.sampled_from(["1", "1000", "8000", "16000", "384000", "0", "-5", "x", str(2**40)])), \
            draw(st.sampled_from(["1", "2", "8", "9", "16", "17", "64", "0", "-1"]))
        content_type = draw(st.one_of(st.sampled_from(SUPPORTED_CONTENT_TYPES), st.just(f"audio/pcm;rate={rate};channels={channels}"),
                                      garbage()))
    fields: dict[str, st.SearchStrategy[str]] = {
        "stream-id": st.one_of(st.sampled_from(["s", "call-7", "a" * 200]), garbage()),
        "seq": numbers(st.integers(0, 2**63 - 1)),
        "start": numbers(st.floats(0, 1e7)),
        "duration": numbers(st.floats(0, 5)),
        "timestamp-offset": numbers(st.floats(-100, 100)),
        "content-type": st.just(content_type),
        "end-of-stream": st.one_of(st.sampled_from(["true", "false"]), garbage()),
        "channels": st.one_of(st.sampled_from(["agent", "agent,customer", ",".join("abcdefgh"), "x" * 70]), garbage()),
        "sent-at": numbers(st.floats(0, 2e9)),
        "schema-version": st.one_of(st.just("1.0"), garbage()),
    }
    valid = {"stream-id": "s", "seq": "0", "start": "0", "content-type": content_type}
    headers: list[tuple[str | bytes, bytes]] = []
    for name, values in fields.items():
        # rare choices test for a middle value: Hypothesis draws the ends of a range (0, the maximum) often
        if draw(st.integers(0, 39)) == 17:
            continue  # a header left out (a required one makes a bad_headers dead letter)
        if draw(st.integers(0, 11)) != 5 or (name not in valid and draw(st.booleans())):
            text = valid.get(name)  # most fields stay valid, so most records reach the decoder
        else:
            text = draw(values)
        if text is None:
            continue
        raw = draw(st.binary(max_size=8)) if draw(st.integers(0, 49)) == 23 else text.encode("utf-8", "surrogatepass")
        headers.append(("emostream-" + name, raw))
    if draw(st.integers(0, 9)) == 4:  # other systems' headers, and names that are not UTF-8
        headers += draw(st.lists(st.tuples(st.one_of(st.text(max_size=20), st.binary(max_size=20)), st.binary(max_size=20)),
                                 max_size=3))
    key = b"s" if draw(st.integers(0, 5)) != 3 else draw(st.one_of(st.none(), st.binary(max_size=40), st.just(b"k" * 100_000)))
    return key, payload, headers


def resident(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, bytes."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))


def check(row: dict[str, Any], key: bytes | None, headers: list[tuple[str | bytes, bytes]]) -> str:
    """The outcome of one record; raises AssertionError when the stage broke a promise."""
    pa.Table.from_pylist([row], schema=STAGE_SCHEMA)  # fits the columns (int64 seq, …)
    if row["kind"] == SEGMENT:
        segment = perceived(row["payload"])
        assert segment.seq == row["seq"] and math.isfinite(segment.end), (key, headers)
        return "segment"
    assert row["kind"] == REJECTED, row["kind"]
    assert len(row["payload"]) <= MAX_DEAD_LETTER_BYTES, (len(row["payload"]), headers)
    letter = DeadLetterEvent.model_validate_json(row["payload"])
    return str(letter.reason)


def peak_of(work: Callable[[], Any]) -> tuple[Any, int]:
    """`work()` and how far the peak resident size (VmHWM) rose over the resident size before it, bytes."""
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak to the current resident size
    before = resident("VmRSS")
    result = work()
    return result, resident("VmHWM") - before


def run(examples: int, random: bool) -> dict[str, Any]:
    media = seeds()
    stage = SegmentStage(Settings(ingest={"max_decoded_megabytes": BUDGET_MEGABYTES},
                                  faces={"analysis_fps": 5}).model_dump_json())
    outcomes: Counter[str] = Counter()
    offset = iter(range(10**9))
    decode_peaks: list[int] = []  # per decoded record: how far decoding raised the peak memory
    record_peaks: list[int] = []  # per record: how far checking, decoding and perceiving it did

    def measured_decode(*args: Any) -> Any:
        segment, peak = peak_of(lambda: decode_record(*args))
        decode_peaks.append(peak)
        return segment

    stages.decode_record = measured_decode  # the stage's own decode, measured

    def process(record: tuple[bytes | None, bytes, list[tuple[str | bytes, bytes]]]) -> str:
        key, payload, headers = record
        row = record_row(RECORD, "media", 0, next(offset), key, payload, headers, 0, 0, 1)
        pa.Table.from_pylist([row], schema=SCHEMA)  # the source could have produced it
        out, peak = peak_of(lambda: stage.process(row))
        record_peaks.append(peak)
        return check(out, key, headers)

    for name, (content_type, payload) in media.items():  # every seed decodes: the face models load before measuring
        good: list[tuple[str | bytes, bytes]] = [("emostream-stream-id", b"s"), ("emostream-seq", b"0"),
                                                 ("emostream-start", b"0"), ("emostream-content-type", content_type.encode())]
        assert process((b"s", payload, good)) == "segment", name
    decode_peaks.clear()
    record_peaks.clear()
    start = resident("VmRSS")

    @settings(max_examples=examples, deadline=None, database=None, derandomize=not random,
              suppress_health_check=list(HealthCheck))
    @given(records(media))
    def fuzz(record: tuple[bytes | None, bytes, list[tuple[str | bytes, bytes]]]) -> None:
        outcomes[process(record)] += 1

    fuzz()
    return {"examples": sum(outcomes.values()), "outcomes": dict(outcomes), "budget_megabytes": BUDGET_MEGABYTES,
            "decode_peak_megabytes": max(decode_peaks) / 2**20, "record_peak_megabytes": max(record_peaks) / 2**20,
            "resident_growth_megabytes": (resident("VmRSS") - start) / 2**20}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", type=int)
    parser.add_argument("--random", action="store_true", help="a new random sequence (default: derandomized)")
    args = parser.parse_args()
    print(json.dumps(run(args.examples, args.random)))
