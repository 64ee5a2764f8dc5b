"""Cut a media file into self-contained segments that decode on their own.

Video (with or without audio) becomes MPEG-TS segments that start at a key
frame; packets are copied, and the file is re-encoded only when its codecs do
not fit MPEG-TS or its key frames are further apart than `max_segment_seconds`.
Audio-only input becomes WAV segments of exactly `segment_seconds`, keeping the
source's sample rate and channels (stereo call audio stays stereo).

Stream time 0 is the source's presentation start. Inside a segment, container
timestamps are stream time minus the segment's `timestamp_offset` (a header), so
they stay small on endless streams; packets the source marks as pre-roll keep
their place before 0 and the decoder drops what they decode to.
"""

from __future__ import annotations

import io
import logging
import tempfile
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import numpy as np

from emostream.media.decode import channel_layout

log = logging.getLogger(__name__)

# Codecs MPEG-TS carries, so their packets can be copied as they are.
TS_VIDEO_CODECS = {"h264", "hevc", "mpeg2video"}
TS_AUDIO_CODECS = {"aac", "mp3", "mp3float", "mp2", "ac3", "eac3"}
TS_MARGIN = Fraction(1)  # s; keeps B-frame DTS and audio priming of the first packets above zero
REENCODE_VIDEO_CODEC = "libx264"
REENCODE_AUDIO_CODEC = "aac"
REENCODE_AUDIO_RATE = 48000  # Hz
# A segment waits for its audio (stored behind the video in the file) until the video has run this far past its
# end; then it goes without the rest, which joins the next segment (`_ts_segments`).
AUDIO_WAIT_SECONDS = Fraction(2)


class MediaError(ValueError):
    """The input file cannot be read or segmented; the message says why."""


@dataclass(frozen=True)
class MediaSegment:
    seq: int  # 0, 1, 2, … within the stream
    start: float  # stream seconds of the earliest sample
    duration: float  # media seconds in the segment
    content_type: str  # "video/mp2t" or "audio/wav"
    payload: bytes  # the container bytes
    audio_channels: int  # 0 when the segment has no audio
    timestamp_offset: float  # stream time = container timestamp + this


@dataclass(frozen=True)
class MediaInfo:
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    audio_channels: int
    duration: float  # s, as the container declares it (0 when unknown)
    max_keyframe_gap: float  # s between key frames, including the last one to the end


def probe(path: str | Path) -> MediaInfo:
    """What the file holds, reading only packet headers (no decoding)."""
    container = _open(path)
    with container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaError(f"{path}: no audio or video stream")
        max_gap, duration = 0.0, (container.duration or 0) / 1e6
        if video is not None:
            keyframes, last = [], 0.0
            for packet in container.demux(video):
                if packet.pts is None:
                    continue
                t = float(packet.pts * packet.time_base)
                last = max(last, t + float((packet.duration or 0) * packet.time_base))
                if packet.is_keyframe:
                    keyframes.append(t)
            if not keyframes:
                raise MediaError(f"{path}: the video stream has no key frame")
            edges = sorted(keyframes) + [last]
            max_gap = max(b - a for a, b in zip(edges, edges[1:], strict=False)) if len(edges) > 1 else 0.0
        return MediaInfo(
            has_video=video is not None,
            has_audio=audio is not None,
            video_codec=video.codec_context.name if video is not None else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            audio_channels=audio.codec_context.channels if audio is not None else 0,
            duration=duration,
            max_keyframe_gap=max_gap,
        )


def segment_file(
    path: str | Path, segment_seconds: float = 2.0, max_segment_seconds: float = 10.0, info: MediaInfo | None = None
) -> Iterator[MediaSegment]:
    """Yield the file's segments in order; see the module docstring for the format.

    `info` is the file's `probe` result, when the caller has it already.
    """
    info = info or probe(path)
    if not info.has_video:
        yield from _wav_segments(path, segment_seconds)
        return
    reencode_video = info.video_codec not in TS_VIDEO_CODECS or info.max_keyframe_gap > max_segment_seconds
    reencode_audio = info.has_audio and info.audio_codec not in TS_AUDIO_CODECS
    if not (reencode_video or reencode_audio):
        yield from _ts_segments(_open(path), segment_seconds, info.audio_channels)
        return
    log.info(
        "%s: re-encoding %s (video codec %s, key frames up to %.1f s apart, audio codec %s)",
        path, "video" if reencode_video else "audio", info.video_codec, info.max_keyframe_gap, info.audio_codec,
    )
    # A temporary file that is deleted on close: long inputs do not fit in memory.
    with tempfile.TemporaryFile() as tmp:
        origin = _reencode_to_ts(path, tmp, segment_seconds, reencode_video, reencode_audio)
        tmp.seek(0)
        yield from _ts_segments(av.open(tmp, format="mpegts"), segment_seconds, info.audio_channels, origin)


def _open(path: str | Path | IO[bytes]) -> av.container.InputContainer:
    try:
        return av.open(str(path) if isinstance(path, Path) else path)
    except (av.error.FFmpegError, OSError) as error:
        raise MediaError(f"{path}: cannot open as media ({error})") from error


# -- audio only ---------------------------------------------------------------------------------


def _wav_segments(path: str | Path, segment_seconds: float) -> Iterator[MediaSegment]:
    with _open(path) as container:
        stream = container.streams.audio[0]
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        # Packed s16 at the source rate and layout: lossless for PCM and FLAC input.
        resampler = av.AudioResampler(format="s16", layout=stream.codec_context.layout, rate=rate)
        per_segment = max(1, round(segment_seconds * rate))
        pending: list[np.ndarray] = []
        pending_samples, emitted, seq = 0, 0, 0

        def cut(n: int) -> MediaSegment:
            nonlocal pending, pending_samples, emitted, seq
            samples = np.concatenate(pending, axis=0)
            chunk, rest = samples[:n], samples[n:]
            pending, pending_samples = ([rest] if len(rest) else []), len(rest)
            segment = MediaSegment(
                seq=seq, start=emitted / rate, duration=n / rate, content_type="audio/wav",
                payload=wav_bytes(chunk, rate), audio_channels=channels, timestamp_offset=emitted / rate,
            )
            emitted += n
            seq += 1
            return segment

        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1, channels)  # (n, channels) int16
                    pending.append(samples)
                    pending_samples += len(samples)
                    while pending_samples >= per_segment:
                        yield cut(per_segment)
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1, channels))
                pending_samples += out.samples
        except av.error.FFmpegError as error:
            raise MediaError(f"{path}: audio decoding failed ({error})") from error
        while pending_samples > 0:
            yield cut(min(per_segment, pending_samples))


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """A WAV file of int16 samples shaped (n, channels)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
    return buffer.getvalue()


# -- video (with or without audio) ---------------------------------------------------------------


def _seconds(packet: av.Packet) -> Fraction:
    return Fraction(packet.pts) * packet.time_base


@dataclass
class _Cut:
    """A segment being gathered: its key frame's time, where the next key frame cut it (None: not yet), its packets."""

    start: Fraction
    end: Fraction | None = None
    packets: list[av.Packet] = field(default_factory=list)


def _ts_segments(
    container: av.container.InputContainer, segment_seconds: float, audio_channels: int,
    origin: Fraction | None = None,  # source time of stream time 0; by default the container's start
) -> Iterator[MediaSegment]:
    """Segments from key frame to key frame, each with the audio of its own time span.

    Containers interleave audio some way behind the video (the bench's MP4 about 1 s; ffmpeg's MPEG-TS muxer
    up to 0.7 s): cut in file order, a segment carried the audio of a second earlier, and an utterance's end
    reached the session a segment or two after its video. So an audio packet goes to the segment whose key
    frames enclose its time, and a segment is handed out once the audio has passed its end, or the video has
    run AUDIO_WAIT_SECONDS beyond it (audio stored much later, or ended, would hold every segment back: what
    comes after that joins the earliest segment still open, as in file order).
    """
    with container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        streams = [s for s in (video, audio) if s is not None]
        if origin is None and container.start_time is not None:
            origin = Fraction(container.start_time, 1_000_000)  # honours edit lists
        cuts: list[_Cut] = []  # not yet handed out, in order
        early: list[av.Packet] = []  # audio before the first key frame: it joins the first segment
        seq, audio_reached, video_reached = 0, None, None
        for packet in container.demux(*streams):
            if packet.pts is None or packet.size == 0:
                continue  # flush packets, or packets without timing we cannot place
            if origin is None:
                origin = _seconds(packet)
            t = _seconds(packet)
            if packet.stream is video:
                video_reached = t if video_reached is None else max(video_reached, t)
                if packet.is_keyframe and (not cuts or t - cuts[-1].start >= Fraction(segment_seconds)):
                    if cuts:
                        cuts[-1].end = t
                    cuts.append(_Cut(t, packets=[] if cuts else early))
                    early = []
                # (video before the first key frame is kept, as before: the decoder drops it)
                (cuts[-1].packets if cuts else early).append(packet)
            else:
                audio_reached = t
                home = next((cut for cut in reversed(cuts) if cut.start <= t), cuts[0] if cuts else None)
                (home.packets if home is not None else early).append(packet)
            while cuts and cuts[0].end is not None and (
                    audio is None or (audio_reached is not None and audio_reached >= cuts[0].end)
                    or (video_reached is not None and video_reached - cuts[0].end >= AUDIO_WAIT_SECONDS)):
                yield _ts_segment(seq, cuts.pop(0).packets, streams, origin, audio_channels)
                seq += 1
        if origin is not None:
            for cut in cuts:
                yield _ts_segment(seq, cut.packets, streams, origin, audio_channels)
                seq += 1
            if not cuts and early:
                yield _ts_segment(seq, early, streams, origin, audio_channels)


def _ts_segment(
    seq: int, packets: list[av.Packet], streams: list[av.stream.Stream], origin: Fraction, audio_channels: int
) -> MediaSegment:
    start = max(Fraction(0), min(_seconds(p) for p in packets) - origin)
    end = max(_seconds(p) + Fraction(p.duration or 0) * p.time_base for p in packets if p.stream is streams[0])
    offset = start - TS_MARGIN
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as out:
        outputs = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in packets:
            shift = round((origin + offset) / packet.time_base)  # container time = stream time - offset
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = outputs[packet.stream.index]
            out.mux(packet)
    return MediaSegment(
        seq=seq,
        start=float(start),
        duration=max(0.0, float(end - origin - start)),
        content_type="video/mp2t",
        payload=buffer.getvalue(),
        audio_channels=audio_channels if len(streams) > 1 else 0,
        timestamp_offset=float(offset),
    )


def _reencode_to_ts(
    path: str | Path, out_file: IO[bytes], segment_seconds: float, reencode_video: bool, reencode_audio: bool
) -> Fraction:
    """Write the file as one MPEG-TS with a key frame every `segment_seconds` (or TS-ready audio).

    Every timestamp moves TS_MARGIN later, so encoder priming (negative timestamps)
    survives MPEG-TS; returns where the source's start lies in the new file.
    """
    with _open(path) as source, av.open(out_file, "w", format="mpegts") as out:
        origin = Fraction(source.start_time or 0, 1_000_000) + TS_MARGIN

        def mux(packet: av.Packet) -> None:
            shift = round(TS_MARGIN / packet.time_base)
            packet.pts += shift
            if packet.dts is not None:
                packet.dts += shift
            out.mux(packet)

        video = source.streams.video[0]
        audio = source.streams.audio[0] if source.streams.audio else None
        rate = video.average_rate or video.guessed_rate or Fraction(25)
        if reencode_video:
            v_out = out.add_stream(REENCODE_VIDEO_CODEC, rate=rate)
            v_out.width, v_out.height = video.codec_context.width, video.codec_context.height
            v_out.pix_fmt = "yuv420p"
            v_out.codec_context.gop_size = max(1, round(float(rate) * segment_seconds))
            # Closed GOPs and no scene-cut key frames: every segment then starts at a fixed cadence.
            v_out.codec_context.options = {"preset": "veryfast", "x264-params": "scenecut=0:open-gop=0"}
        else:
            v_out = out.add_stream_from_template(video)
        a_out = None
        if audio is not None:
            if reencode_audio:
                a_out = out.add_stream(REENCODE_AUDIO_CODEC, rate=REENCODE_AUDIO_RATE)
                a_out.codec_context.layout = channel_layout(audio.codec_context.channels)
            else:
                a_out = out.add_stream_from_template(audio)
        outputs = {video.index: (v_out, reencode_video)}
        if audio is not None and a_out is not None:
            outputs[audio.index] = (a_out, reencode_audio)
        try:
            for packet in source.demux(*[s for s in (video, audio) if s is not None]):
                target, reencode = outputs[packet.stream.index]
                if not reencode:
                    if packet.pts is not None and packet.size:
                        packet.stream = target
                        mux(packet)
                    continue
                for frame in packet.decode():
                    if target.type == "video":
                        frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder place key frames
                    for encoded in target.encode(frame):
                        mux(encoded)
            for target, reencode in outputs.values():
                if reencode:
                    for encoded in target.encode(None):
                        mux(encoded)
        except av.error.FFmpegError as error:
            raise MediaError(f"{path}: re-encoding failed ({error})") from error
    return origin
