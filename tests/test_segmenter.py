"""Segmenting and decoding real media without a broker: what goes in comes back, on the same clock."""

from pathlib import Path

import numpy as np
import pytest

from emostream.contracts import SegmentHeaders
from emostream.media.decode import SAMPLE_RATE, DecodedSegment, DecodeError, analysed_frame_indices, decode_segment
from emostream.media.records import segment_headers
from emostream.media.segmenter import MediaError, probe, segment_file
from emostream.media.synthetic import mux_files, write_clip
from emostream.perception.faces.analyze import FaceAnalyzer
from emostream.settings import FaceSettings
from tests.media_helpers import correlation, read_wav, source_audio_seconds, source_frame_times, write_stereo_call


def decode_all(path: Path, segment_seconds: float = 2.0, max_segment_seconds: float = 10.0) -> list[DecodedSegment]:
    return [decode_segment(segment_headers("s", seg, None), seg.payload)
            for seg in segment_file(path, segment_seconds, max_segment_seconds)]


def assert_frames_match(path: Path, decoded: list[DecodedSegment]) -> None:
    expected = source_frame_times(path)
    got = np.concatenate([d.frame_times for d in decoded])
    assert abs(len(got) - len(expected)) <= 1, f"{len(got)} frames decoded, {len(expected)} in the source"
    frame = float(np.median(np.diff(expected)))
    n = min(len(got), len(expected))
    assert np.max(np.abs(got[:n] - np.asarray(expected[:n]))) < frame
    assert np.all(np.diff(got) > 0), "frame times go forward across segments"


def test_real_video_is_cut_at_key_frames_and_decodes_frame_for_frame(wolfgang: Path) -> None:
    segments = list(segment_file(wolfgang, 2.0))
    # The file has a key frame every 3.003 s: cuts fall there, not at 2 s.
    assert [round(s.start, 3) for s in segments] == [0.0, 3.003, 6.006, 9.009, 12.012, 15.015, 18.018]
    assert all(s.content_type == "video/mp2t" for s in segments)
    decoded = [decode_segment(segment_headers("s", s, None), s.payload) for s in segments]
    assert_frames_match(wolfgang, decoded)
    assert decoded[0].frames.shape[1:] == (360, 640, 3)
    audio = sum(d.audio.shape[1] for d in decoded) / SAMPLE_RATE
    assert abs(audio - source_audio_seconds(wolfgang)) < 0.02


def test_real_speech_wav_becomes_exact_wav_segments(librivox: list[Path]) -> None:
    source, rate = read_wav(librivox[0])
    segments = list(segment_file(librivox[0], 2.0))
    assert all(s.content_type == "audio/wav" for s in segments)
    assert [s.start for s in segments[:3]] == [0.0, 2.0, 4.0]
    decoded = [decode_segment(segment_headers("s", s, None), s.payload) for s in segments]
    audio = np.concatenate([d.audio for d in decoded], axis=1)
    assert abs(audio.shape[1] / SAMPLE_RATE - source.shape[1] / rate) < 0.02
    assert rate == SAMPLE_RATE and np.allclose(audio[0], source[0], atol=1e-4)  # lossless at 16 kHz


def test_muxed_real_video_and_speech_keep_both_streams(tmp_path: Path, wolfgang: Path, librivox: list[Path]) -> None:
    muxed = mux_files(wolfgang, librivox[0], tmp_path / "meeting.mp4")
    decoded = decode_all(muxed)
    assert_frames_match(muxed, decoded)
    audio = sum(d.audio.shape[1] for d in decoded) / SAMPLE_RATE
    assert abs(audio - source_audio_seconds(muxed)) < 0.02
    assert decoded[0].audio.shape[0] == 1


def test_each_av_segment_carries_the_audio_of_its_own_span(tmp_path: Path, wolfgang: Path, librivox: list[Path]) -> None:
    """The MP4 muxer stores audio some way behind the video; cut in file order, a segment's audio had lagged its
    video by about a second, so speech reached the session a segment later than its pictures. Now the audio of
    each segment starts where its key frame does and runs to the next one, to within an AAC packet (1,024 samples),
    and none is lost."""
    muxed = mux_files(wolfgang, librivox[0], tmp_path / "meeting.mp4")
    decoded = decode_all(muxed)
    packet = 1024 / 16000
    speech = [d for d in decoded if d.audio.shape[1]]  # the speech is shorter than the video
    assert len(speech) >= 3
    for segment, after in zip(speech[:-1], speech[1:], strict=True):
        audio_end = segment.audio_start + segment.audio.shape[1] / SAMPLE_RATE
        assert abs(segment.audio_start - segment.frame_times[0]) <= packet, (segment.frame_times[0], segment.audio_start)
        assert abs(audio_end - after.frame_times[0]) <= packet, (audio_end, after.frame_times[0])
        assert abs(after.audio_start - audio_end) < 1e-3  # the next segment's audio follows on, no gap, no overlap
    audio = sum(d.audio.shape[1] for d in decoded) / SAMPLE_RATE
    assert abs(audio - source_audio_seconds(muxed)) < 0.02


def test_stereo_call_keeps_its_channels_in_order(tmp_path: Path, librivox: list[Path]) -> None:
    call = write_stereo_call(librivox[0], librivox[1], tmp_path / "call.wav")
    audio = np.concatenate([d.audio for d in decode_all(call)], axis=1)
    assert audio.shape[0] == 2
    left, right = read_wav(librivox[0])[0][0], read_wav(librivox[1])[0][0]
    assert correlation(audio[0], left) > 0.99 and correlation(audio[1], right) > 0.99
    assert abs(correlation(audio[0], right)) < 0.2


def test_flac_and_other_rates_are_resampled_to_16k(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "tone.flac", seconds=3, video=False, audio_channels=2, sample_rate=44100)
    decoded = decode_all(clip)
    audio = np.concatenate([d.audio for d in decoded], axis=1)
    assert abs(audio.shape[1] / SAMPLE_RATE - 3.0) < 0.02
    spectrum = np.abs(np.fft.rfft(audio[:, :SAMPLE_RATE], axis=1))
    assert list(spectrum.argmax(axis=1)) == [220, 440]  # 1 s window: bin = Hz


def test_far_apart_key_frames_are_re_encoded_to_fit_the_segment_length(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "long-gop.mp4", seconds=12, fps=25, gop=300)
    assert probe(clip).max_keyframe_gap == pytest.approx(12.0)
    segments = list(segment_file(clip, 2.0, max_segment_seconds=10.0))
    assert len(segments) == 6 and max(s.duration for s in segments) < 2.05  # 2 s of video, plus audio priming
    assert_frames_match(clip, [decode_segment(segment_headers("s", s, None), s.payload) for s in segments])


def test_codecs_mpeg_ts_cannot_carry_are_re_encoded(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "vp9.webm", seconds=3, video_codec="libvpx-vp9", audio_channels=0)
    decoded = decode_all(clip)
    assert_frames_match(clip, decoded)
    pcm_video = write_clip(tmp_path / "pcm.mov", seconds=3, audio_channels=2)  # PCM audio in a video
    decoded = decode_all(pcm_video)
    assert abs(sum(d.audio.shape[1] for d in decoded) / SAMPLE_RATE - 3.0) < 0.02


def test_unreadable_input_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video")
    with pytest.raises(MediaError, match="notes.mp4: cannot open as media"):
        list(segment_file(junk))
    with pytest.raises(MediaError, match="cannot open"):
        probe(tmp_path / "missing.wav")


def test_raw_pcm_segments_decode_and_resample(librivox: list[Path]) -> None:
    source, rate = read_wav(librivox[0])
    pcm = (source[0][: rate * 2] * 32767).astype("<i2").tobytes()
    headers = SegmentHeaders(stream_id="tel", seq=0, start=4.0, content_type=f"audio/pcm;rate={rate};channels=1")
    decoded = decode_segment(headers, pcm)
    assert decoded.audio.shape == (1, 2 * SAMPLE_RATE) and decoded.audio_start == 4.0
    at_8k = SegmentHeaders(stream_id="tel", seq=0, start=0, content_type="audio/pcm;rate=8000;channels=2")
    assert abs(decode_segment(at_8k, b"\0\0" * 2 * 8000).audio_seconds - 1.0) < 0.01
    with pytest.raises(DecodeError, match="not a whole number"):
        decode_segment(at_8k, b"\0\0\0")


def test_truncated_and_corrupt_segments_are_told_apart(wolfgang: Path) -> None:
    segment = next(iter(segment_file(wolfgang)))
    headers = segment_headers("s", segment, None)
    with pytest.raises(DecodeError) as truncated:
        decode_segment(headers, segment.payload[: len(segment.payload) // 3])
    assert truncated.value.truncated and "decodes to" in str(truncated.value)
    with pytest.raises(DecodeError) as corrupt:
        decode_segment(headers, b"\x47" + bytes(range(256)) * 50)
    assert not corrupt.value.truncated


def test_decoded_memory_is_bounded(wolfgang: Path) -> None:
    segment = next(iter(segment_file(wolfgang)))
    with pytest.raises(DecodeError, match="more than 1 MiB"):
        decode_segment(segment_headers("s", segment, None), segment.payload, max_decoded_megabytes=1)
    small = decode_segment(segment_headers("s", segment, None), segment.payload, max_frame_side=160)
    assert small.frames.shape[1:] == (90, 160, 3)


def test_frames_only_perception_looks_at_are_converted_and_the_segment_is_unchanged(wolfgang: Path) -> None:
    """`frame_rates` converts the frames `analysed_frame_indices` picks, nothing else: the same pixels and times,
    the same segment end, and faces analysed on them report the segment's own frame indices and count."""
    segment = next(iter(segment_file(wolfgang, 2.0)))
    headers = segment_headers("s", segment, None)
    every = decode_segment(headers, segment.payload)
    some = decode_segment(headers, segment.payload, frame_rates=(15.0, 1.0))
    chosen = sorted(set(analysed_frame_indices(every.frame_times, 15.0)) | set(analysed_frame_indices(every.frame_times, 1.0)))
    assert 0 < len(chosen) < len(every.frame_times)
    assert np.array_equal(some.frame_times, every.frame_times[chosen])
    assert np.array_equal(some.frames, every.frames[chosen])
    assert np.array_equal(some.frame_indices, chosen) and np.array_equal(some.all_frame_times, every.frame_times)
    assert some.end == every.end and np.array_equal(some.audio, every.audio)
    assert decode_segment(headers, segment.payload, frame_rates=(0.0,)).decoded_frame_times is None  # 0: every frame
    analyzer = FaceAnalyzer(FaceSettings(analysis_fps=15.0))
    on_some, on_every = analyzer.analyze(some), analyzer.analyze(every)
    assert on_some.frame_count == on_every.frame_count == len(every.frame_times)
    assert [(f.time, f.index, len(f.faces)) for f in on_some.analysed] == [(f.time, f.index, len(f.faces)) for f in on_every.analysed]
