"""Publish real media through a real Tansu broker, consume, decode, and compare with the source."""

from pathlib import Path

import numpy as np
import pytest

from emostream.ingest.publish import publish
from emostream.media.decode import SAMPLE_RATE, DecodedSegment
from emostream.media.segmenter import MediaError
from emostream.media.synthetic import mux_files
from emostream.settings import Settings
from tests.kafka_helpers import consume_streams, consume_until
from tests.media_helpers import correlation, read_wav, source_audio_seconds, source_frame_times, write_stereo_call

pytestmark = pytest.mark.broker


def media_of(segments: list[DecodedSegment]) -> tuple[np.ndarray, float]:
    frames = np.concatenate([s.frame_times for s in segments if len(s.frame_times)] or [np.zeros(0)])
    audio = sum(s.audio.shape[1] for s in segments) / SAMPLE_RATE
    return frames, audio


def test_real_video_speech_and_their_mux_come_back_decoded(
    settings: Settings, tmp_path: Path, wolfgang: Path, librivox: list[Path]
) -> None:
    muxed = mux_files(wolfgang, librivox[0], tmp_path / "meeting.mp4")
    inputs = {"video": wolfgang, "speech": librivox[0], "meeting": muxed}
    reports = {stream: publish(path, stream, settings) for stream, path in inputs.items()}
    received, stats = consume_streams(settings, set(inputs))
    assert stats.dead_letters == {}
    for stream, path in inputs.items():
        segments = received[stream]
        assert [s.seq for s in segments] == list(range(reports[stream].segments + 1))  # + the end marker
        assert segments[-1].end_of_stream
        frames, audio = media_of(segments)
        expected_frames = source_frame_times(path) if stream != "speech" else []
        assert abs(len(frames) - len(expected_frames)) <= 1, stream
        if expected_frames:
            period = float(np.median(np.diff(expected_frames)))
            n = min(len(frames), len(expected_frames))
            assert np.max(np.abs(frames[:n] - np.asarray(expected_frames[:n]))) < period, stream
        assert abs(audio - source_audio_seconds(path)) < 0.02, stream


def test_stereo_call_comes_back_as_two_channels_in_order(settings: Settings, tmp_path: Path, librivox: list[Path]) -> None:
    call = write_stereo_call(librivox[0], librivox[1], tmp_path / "call.wav")
    publish(call, "call-1", settings, channels=("agent", "customer"))
    received, _ = consume_streams(settings, {"call-1"})
    media = [s for s in received["call-1"] if not s.is_end_marker]
    assert all(s.channels == ("agent", "customer") for s in media)
    audio = np.concatenate([s.audio for s in media], axis=1)
    assert audio.shape[0] == 2
    assert correlation(audio[0], read_wav(librivox[0])[0][0]) > 0.99
    assert correlation(audio[1], read_wav(librivox[1])[0][0]) > 0.99


def test_a_channel_map_that_does_not_fit_is_refused_before_publishing(settings: Settings, librivox: list[Path]) -> None:
    with pytest.raises(MediaError, match="names 2 channels .agent,customer. but the audio has 1"):
        publish(librivox[0], "call-2", settings, channels=("agent", "customer"))


def test_oversized_segments_are_refused_at_the_publisher(settings: Settings, wolfgang: Path) -> None:
    small = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"max_message_bytes": 100_000})})
    with pytest.raises(MediaError, match="over kafka.max_message_bytes .100000.; use shorter --segment-seconds"):
        publish(wolfgang, "big", small)


def test_realtime_publishing_follows_the_media_clock(settings: Settings, librivox: list[Path]) -> None:
    report = publish(librivox[0], "live", settings, realtime=True, segment_seconds=1.0)
    # A live source cannot send 7.1 s of speech faster than it is spoken.
    assert report.wall_seconds >= report.media_seconds - 0.05


def test_a_restarted_consumer_resumes_after_the_last_commit(settings: Settings, librivox: list[Path]) -> None:
    from emostream.kafka.clients import producer
    from emostream.media.records import end_of_stream_headers, segment_headers
    from emostream.media.segmenter import segment_file

    segments = list(segment_file(librivox[0], 1.0))  # 8 segments
    out = producer(settings.kafka)

    def send(seqs: range) -> None:
        for seq in seqs:
            headers = segment_headers("resume", segments[seq], None)
            out.send(settings.kafka.media_topic, key=b"resume", value=segments[seq].payload, headers=headers.to_kafka())
        out.flush()

    send(range(0, 3))
    first, _ = consume_until(settings, lambda got: len(got) >= 3)
    send(range(3, 8))
    out.send(settings.kafka.media_topic, key=b"resume", value=b"",
             headers=end_of_stream_headers("resume", 8, 8.0).to_kafka())
    out.flush()
    out.close()
    second, _ = consume_streams(settings, {"resume"})
    # Nothing lost, nothing processed twice: the second consumer starts where the first committed.
    assert [s.seq for s in first] == [0, 1, 2]
    assert [s.seq for s in second["resume"]] == [3, 4, 5, 6, 7, 8]
