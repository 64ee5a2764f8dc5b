"""Decode one media segment into RGB frames and 16 kHz audio with stream timestamps.

A segment's earliest timestamp stands for its header's `start`; every frame
and sample is placed on the stream clock from there. Memory is bounded:
a segment that would decode to more than `max_decoded_megabytes` is refused.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av
import numpy as np

from emostream.contracts import CONTAINER_CONTENT_TYPES, RAW_PCM_CONTENT_TYPE, SegmentHeaders, raw_pcm_format
from emostream.settings import IngestSettings

SAMPLE_RATE = 16000  # Hz, the rate every audio model downstream expects
# A segment may decode to a little less media than its header declares (codec delay,
# rounding); less than this much less and it counts as truncated.
TRUNCATION_TOLERANCE = 0.1  # s


class DecodeError(ValueError):
    """The segment cannot be decoded; `truncated` tells a short segment from a corrupt one."""

    def __init__(self, message: str, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True)
class DecodedSegment:
    """What one segment holds, on the stream clock."""

    stream_id: str
    seq: int
    start: float  # stream seconds (from the header)
    frames: np.ndarray  # shape = (n_frames, height, width, 3), uint8 RGB
    frame_times: np.ndarray  # shape = (n_frames,), float64 stream seconds of each frame
    audio: np.ndarray  # shape = (n_channels, n_samples), float32 in [-1, 1] at SAMPLE_RATE
    audio_start: float  # stream seconds of audio[:, 0]
    channels: tuple[str, ...] = field(default=())  # role of each audio channel (from the header)
    end_of_stream: bool = False

    @property
    def is_end_marker(self) -> bool:
        """An empty end-of-stream marker: the stream ended and this segment holds no media."""
        return self.end_of_stream and not self.frames.size and not self.audio.size

    @property
    def audio_seconds(self) -> float:
        return self.audio.shape[1] / SAMPLE_RATE

    @property
    def end(self) -> float:
        """Stream seconds just after the last frame or sample."""
        ends = [self.start]
        if len(self.frame_times):
            step = float(np.median(np.diff(self.frame_times))) if len(self.frame_times) > 1 else 0.0
            ends.append(float(self.frame_times[-1]) + step)
        if self.audio.shape[1]:
            ends.append(self.audio_start + self.audio_seconds)
        return max(ends)


def decode_segment(
    headers: SegmentHeaders,
    payload: bytes,
    threads: int = 1,
    max_decoded_megabytes: int = 512,
    max_frame_side: int = 0,
) -> DecodedSegment:
    """Decode `payload` as described by `headers`; raise DecodeError when it cannot be."""
    if not payload:
        raise DecodeError("empty segment")
    base = headers.content_type.split(";")[0].strip().lower()
    roles = headers.channels or ()
    budget = max_decoded_megabytes * 1024 * 1024
    if base == RAW_PCM_CONTENT_TYPE:
        rate, n_channels = raw_pcm_format(headers.content_type)
        audio = _raw_pcm(payload, rate, n_channels)
        frames, frame_times, audio_start = _no_frames(), np.zeros(0), headers.start
    else:
        frames, frame_times, audio, audio_start = _decode_container(
            payload, CONTAINER_CONTENT_TYPES[base], headers, threads, budget, max_frame_side
        )
    if roles and audio.shape[0] and len(roles) != audio.shape[0]:
        raise DecodeError(f"channel map names {len(roles)} channels ({','.join(roles)}) but the audio has {audio.shape[0]}")
    segment = DecodedSegment(
        stream_id=headers.stream_id, seq=headers.seq, start=headers.start, frames=frames,
        frame_times=frame_times, audio=audio, audio_start=audio_start, channels=roles,
        end_of_stream=headers.end_of_stream,
    )
    if headers.duration is not None:
        decoded = segment.end - segment.start
        if decoded < headers.duration - TRUNCATION_TOLERANCE:
            raise DecodeError(
                f"segment declares {headers.duration:.3f} s of media but decodes to {decoded:.3f} s", truncated=True
            )
    return segment


def _no_frames() -> np.ndarray:
    return np.zeros((0, 0, 0, 3), dtype=np.uint8)


def _raw_pcm(payload: bytes, rate: int, n_channels: int) -> np.ndarray:
    frame_bytes = 2 * n_channels
    if len(payload) % frame_bytes:
        raise DecodeError(f"raw PCM of {len(payload)} bytes is not a whole number of {n_channels}-channel s16 frames")
    interleaved = np.frombuffer(payload, dtype="<i2")
    if rate == SAMPLE_RATE:
        return interleaved.reshape(-1, n_channels).T.astype(np.float32) / 32768.0
    frame = av.AudioFrame.from_ndarray(interleaved.reshape(1, -1), format="s16", layout=channel_layout(n_channels))
    frame.sample_rate = rate
    return _resample_all([frame], n_channels)


def channel_layout(n_channels: int) -> str:
    """A named FFmpeg layout for a channel count (sources may say only "1 channels", which encoders refuse)."""
    return {1: "mono", 2: "stereo"}.get(n_channels, f"{n_channels}c")


def _resample_all(frames: list[av.AudioFrame], n_channels: int) -> np.ndarray:
    resampler = av.AudioResampler(format="fltp", layout=channel_layout(n_channels), rate=SAMPLE_RATE)
    chunks = [out.to_ndarray() for frame in [*frames, None] for out in resampler.resample(frame)]
    return np.concatenate(chunks, axis=1) if chunks else np.zeros((n_channels, 0), dtype=np.float32)


def _decode_container(
    payload: bytes, format_name: str, headers: SegmentHeaders, threads: int, budget: int, max_frame_side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    try:
        container = av.open(io.BytesIO(payload), format=format_name)
    except av.error.FFmpegError as error:
        raise DecodeError(f"corrupt {format_name} segment: the container cannot be read ({error})") from error
    with container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise DecodeError(f"{format_name} container has no audio or video stream")
        if headers.timestamp_offset is not None:
            offset = headers.timestamp_offset
        else:  # the segment's earliest timestamp stands for the header's `start`
            offset = headers.start - (container.start_time or 0) / 1e6
        frames: list[np.ndarray] = []
        frame_times: list[float] = []
        audio_frames: list[av.AudioFrame] = []
        audio_start: float | None = None
        used = 0
        for stream in (video, audio):
            if stream is not None:
                stream.codec_context.thread_count = threads
                stream.codec_context.thread_type = "SLICE"
        try:
            for packet in container.demux(*[s for s in (video, audio) if s is not None]):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        if frame.time is None or frame.time + offset < 0:
                            continue  # no timing, or pre-roll before stream time 0
                        image = _rgb(frame, max_frame_side)
                        used += image.nbytes
                        frames.append(image)
                        frame_times.append(frame.time + offset)
                    else:
                        if audio_start is None:
                            audio_start = (frame.time or 0.0) + offset
                        used += frame.samples * 4 * max(1, frame.layout.nb_channels)
                        audio_frames.append(frame)
                    if used > budget:
                        raise DecodeError(f"segment decodes to more than {budget // 2**20} MiB (max_decoded_megabytes)")
        except av.error.FFmpegError as error:
            raise DecodeError(f"corrupt {format_name} segment: decoding failed ({error})") from error
        if video is not None and not frames and audio is None:
            raise DecodeError("video segment decodes to no frame (does it start at a key frame?)")
        n_channels = audio.codec_context.channels if audio is not None else 1
        try:
            samples = _resample_all(audio_frames, n_channels) if audio_frames else np.zeros((0, 0), np.float32)
        except av.error.FFmpegError as error:
            raise DecodeError(f"audio cannot be resampled ({error})") from error
    audio_start = audio_start if audio_start is not None else headers.start
    if audio_start < 0:  # pre-roll (encoder priming) before stream time 0
        samples, audio_start = samples[:, round(-audio_start * SAMPLE_RATE):], 0.0
    order = np.argsort(frame_times, kind="stable")  # decoders emit in presentation order; be sure
    stacked = np.stack([frames[i] for i in order]) if frames else _no_frames()
    return stacked, np.asarray(frame_times, dtype=np.float64)[order], samples, audio_start


def _rgb(frame: av.VideoFrame, max_side: int) -> np.ndarray:
    width, height = frame.width, frame.height
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
        return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    return frame.to_ndarray(format="rgb24")


def end_marker(headers: SegmentHeaders) -> DecodedSegment:
    """The decoded form of an empty end-of-stream marker."""
    return DecodedSegment(
        stream_id=headers.stream_id, seq=headers.seq, start=headers.start,
        frames=np.zeros((0, 0, 0, 3), np.uint8), frame_times=np.zeros(0),
        audio=np.zeros((0, 0), np.float32), audio_start=headers.start, end_of_stream=True,
    )


def decode_record(headers: SegmentHeaders, payload: bytes, ingest: IngestSettings) -> DecodedSegment:
    """A media record decoded under the ingest limits (the end marker for an empty end-of-stream); DecodeError if not."""
    if not payload and headers.end_of_stream:
        return end_marker(headers)
    return decode_segment(headers, payload, ingest.decode_threads, ingest.max_decoded_megabytes, ingest.max_frame_side)
