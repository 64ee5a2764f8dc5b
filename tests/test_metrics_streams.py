"""Per-stream series of emostream/metrics.py go away after their stream ends, so the label set stays bounded."""

from __future__ import annotations

from emostream.metrics import ENDED_STREAM_SECONDS, Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stream_count(metrics: Metrics, stream: str, label: str) -> float | None:
    return metrics.registry.get_sample_value("emostream_stream_utterances_total", {"stream": stream, "label": label})


def exported_streams(metrics: Metrics) -> set[str]:
    return {sample.labels["stream"] for family in metrics.registry.collect() if family.name == "emostream_stream_utterances"
            for sample in family.samples}


def test_an_ended_streams_series_stay_for_a_few_scrapes_then_go() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    for stream, label in (("call-1", "happy"), ("call-1", "sad"), ("call-2", "angry")):
        metrics.count_stream_utterance(stream, label)
    metrics.count_stream_utterance("call-1", "happy")
    assert stream_count(metrics, "call-1", "happy") == 2 and stream_count(metrics, "call-2", "angry") == 1

    metrics.end_stream("call-1")
    clock.now += ENDED_STREAM_SECONDS - 1
    metrics.forget_ended_streams()
    assert exported_streams(metrics) == {"call-1", "call-2"}  # scrapes still see its final counts

    clock.now += 1
    metrics.count_stream_utterance("call-2", "angry")  # any later event sweeps
    assert exported_streams(metrics) == {"call-2"} and stream_count(metrics, "call-2", "angry") == 2
    assert metrics.registry.get_sample_value("emostream_stream_utterances_total", {"stream": "call-1", "label": "sad"}) is None


def test_a_stream_that_resumes_after_its_end_is_kept() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    metrics.count_stream_utterance("call-3", "neutral")
    metrics.end_stream("call-3")
    metrics.count_stream_utterance("call-3", "neutral")  # a replay after a restart: open again
    clock.now += 10 * ENDED_STREAM_SECONDS
    metrics.forget_ended_streams()
    assert stream_count(metrics, "call-3", "neutral") == 2


def test_many_ended_streams_leave_no_series_behind() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    for k in range(200):
        metrics.count_stream_utterance(f"call-{k}", "happy")
        metrics.end_stream(f"call-{k}")
        clock.now += 10
    clock.now += ENDED_STREAM_SECONDS
    metrics.forget_ended_streams()
    assert exported_streams(metrics) == set()
