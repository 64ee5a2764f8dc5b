"""The header and media fuzzer (tests/fuzz_stage.py) through the live perception stage, in a subprocess so that a
crash of the decoder or a model shows as a signal instead of taking pytest down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def fuzz(examples: int, *flags: str, timeout: float) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.fuzz_stage", str(examples), *flags], capture_output=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    if done.returncode < 0:
        pytest.fail(f"the stage died of {signal.Signals(-done.returncode).name}: {done.stderr.decode()[-3000:]}")
    assert done.returncode == 0, done.stderr.decode()[-5000:]  # a falsifying example, printed by Hypothesis
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def check(result: dict, examples: int) -> None:
    outcomes = result["outcomes"]
    assert result["examples"] == examples  # one row per record
    assert outcomes.get("segment", 0) > examples // 10  # enough records got through to the decoder and the models
    assert {"bad_headers", "corrupt_segment"} <= set(outcomes)
    # decoding one record raised peak memory by less than ingest.max_decoded_megabytes
    assert result["decode_peak_megabytes"] < result["budget_megabytes"], result


def test_fuzzed_records_each_give_a_segment_or_a_bounded_dead_letter() -> None:
    check(fuzz(300, timeout=300), 300)


@pytest.mark.slow
def test_fuzzed_records_at_length() -> None:
    check(fuzz(5000, "--random", timeout=3600), 5000)
