"""Decode one media segment into RGB frames and 16 kHz audio with stream timestamps.

A segment's earliest timestamp stands for its header's `start`; every frame
and sample is placed on the stream clock from there. Memory is bounded:
a segment that would decode to more than `max_decoded_megabytes` is refused,
counted before anything is allocated (the stream's rate, channels and frame
size are checked first, from the container's metadata). Bad input raises
DecodeError and nothing else.

Video frames are decoded one by one (a P- or B-frame needs the frames before it), but
only the frames perception will look at need converting to RGB arrays: `frame_rates`
keeps the first frame of each 1/rate-second slot on the stream clock as the decoder
emits them (in presentation order), the frames `analysed_frame_indices` picks from the
whole segment.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import av
import numpy as np

from emostream.contracts import (
    CONTAINER_CONTENT_TYPES,
    MAX_AUDIO_CHANNELS,
    MAX_SEGMENT_SECONDS,
    MAX_STREAM_SECONDS,
    RAW_PCM_CONTENT_TYPE,
    SegmentHeaders,
    raw_pcm_format,
)
from emostream.settings import IngestSettings

SAMPLE_RATE = 16000  # Hz, the rate every audio model downstream expects
# A segment may decode to a little less media than its header declares (codec delay,
# rounding); less than this much less and it counts as truncated.
TRUNCATION_TOLERANCE = 0.1  # s
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000  # Hz of any audio we decode (8 kHz telephony … 384 kHz studio)
# Full-scale value of each integer sample format, to bring samples to float in [-1, 1].
SAMPLE_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2.0**31, "s64": 2.0**63, "flt": 1.0, "dbl": 1.0}


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
    # When only some frames were converted (`frame_rates`): shape = (n_decoded,), float64 stream seconds of every
    # decoded frame, of which `frame_times` is a subset. None: `frames` holds every frame.
    decoded_frame_times: np.ndarray | None = None

    @property
    def all_frame_times(self) -> np.ndarray:
        """Stream seconds of every frame the segment holds, converted or not."""
        return self.frame_times if self.decoded_frame_times is None else self.decoded_frame_times

    @property
    def frame_indices(self) -> np.ndarray:
        """shape = (n_frames,): each converted frame's position among all of the segment's frames."""
        return np.searchsorted(self.all_frame_times, self.frame_times)

    @property
    def is_end_marker(self) -> bool:
        """An empty end-of-stream marker: the stream ended and this segment holds no media."""
        return self.end_of_stream and not self.frames.size and not self.audio.size

    @property
    def audio_seconds(self) -> float:
        return self.audio.shape[1] / SAMPLE_RATE

    @property
    def frame_step(self) -> float:
        """Seconds between the segment's frames (the median interval; 0 with fewer than two frames)."""
        times = self.all_frame_times
        return float(np.median(np.diff(times))) if len(times) > 1 else 0.0

    @property
    def end(self) -> float:
        """Stream seconds just after the last frame or sample."""
        ends = [self.start]
        times = self.all_frame_times
        if len(times):
            ends.append(float(times[-1]) + self.frame_step)
        if self.audio.shape[1]:
            ends.append(self.audio_start + self.audio_seconds)
        return max(ends)


def analysed_frame_indices(frame_times: np.ndarray, fps: float, step: float = 0.0) -> list[int]:
    """The frames to analyse: the first frame in each 1/fps slot of the stream clock (all frames when fps is 0).

    Slots are on the stream clock, not the segment's, so the choice does not depend on how the stream was cut.
    step : the stream's frame interval (`DecodedSegment.frame_step`), when known: the first frame counts only if the
    frame before it, one step earlier in the segment before, lies in an earlier slot. Without it, a slot that began
    in the segment before gets a second frame here (0.5 s segments of 30 fps video at 15 fps: 160 frames in 10 s).
    """
    if fps <= 0:
        return list(range(len(frame_times)))
    chosen: list[int] = []
    last_slot = math.floor((frame_times[0] - step) * fps + 1e-6) if step > 0 and len(frame_times) else None
    for index, t in enumerate(frame_times):
        slot = math.floor(t * fps + 1e-6)
        if slot != last_slot:
            chosen.append(index)
            last_slot = slot
    return chosen


def decode_segment(
    headers: SegmentHeaders,
    payload: bytes,
    threads: int = 1,
    max_decoded_megabytes: int = 512,
    max_frame_side: int = 0,
    frame_rates: Sequence[float] | None = None,
) -> DecodedSegment:
    """Decode `payload` as described by `headers`; raise DecodeError (and nothing else) when it cannot be.

    frame_rates : convert only the frames `analysed_frame_indices` picks at any of these rates (a rate of 0 picks
    every frame); None converts every frame."""
    if not payload:
        raise DecodeError("empty segment")
    base = headers.content_type.split(";")[0].strip().lower()
    roles = headers.channels or ()
    budget = max_decoded_megabytes * 1024 * 1024
    try:
        if base == RAW_PCM_CONTENT_TYPE:
            rate, n_channels = raw_pcm_format(headers.content_type)
            audio = _raw_pcm(payload, rate, n_channels, budget)
            frames, frame_times, decoded_times, audio_start = _no_frames(), np.zeros(0), None, headers.start
        else:
            frames, frame_times, decoded_times, audio, audio_start = _decode_container(
                payload, CONTAINER_CONTENT_TYPES[base], headers, threads, budget, max_frame_side, frame_rates
            )
    except DecodeError:
        raise
    except (av.error.FFmpegError, ValueError, OverflowError, IndexError, KeyError) as error:
        # FFmpeg and PyAV fail on hostile input in more ways than their documented errors; each is this segment's
        raise DecodeError(f"corrupt segment: decoding failed ({type(error).__name__}: {error})") from error
    if roles and audio.shape[0] and len(roles) != audio.shape[0]:
        raise DecodeError(f"channel map names {len(roles)} channels ({','.join(roles)}) but the audio has {audio.shape[0]}")
    segment = DecodedSegment(
        stream_id=headers.stream_id, seq=headers.seq, start=headers.start, frames=frames,
        frame_times=frame_times, audio=audio, audio_start=audio_start, channels=roles,
        end_of_stream=headers.end_of_stream, decoded_frame_times=decoded_times,
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


def _raw_pcm(payload: bytes, rate: int, n_channels: int, budget: int) -> np.ndarray:
    frame_bytes = 2 * n_channels
    if len(payload) % frame_bytes:
        raise DecodeError(f"raw PCM of {len(payload)} bytes is not a whole number of {n_channels}-channel s16 frames")
    _check_audio_format(rate, n_channels)
    _check_length(len(payload) // frame_bytes / rate)
    _check_budget(_audio_bytes(len(payload) // frame_bytes, rate, n_channels), budget)
    interleaved = np.frombuffer(payload, dtype="<i2")
    return _resample(interleaved.reshape(-1, n_channels).T.astype(np.float32) / 32768.0, rate)


def channel_layout(n_channels: int) -> str:
    """A named FFmpeg layout for a channel count (sources may say only "1 channels", which encoders refuse)."""
    return {1: "mono", 2: "stereo"}.get(n_channels, f"{n_channels}c")


def _check_audio_format(rate: int, n_channels: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise DecodeError(f"audio at {rate} Hz is outside {MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz")
    if not 1 <= n_channels <= MAX_AUDIO_CHANNELS:
        raise DecodeError(f"audio with {n_channels} channels is over the limit of {MAX_AUDIO_CHANNELS} channels "
                          "(each channel is analysed as a voice of its own)")


def _audio_bytes(n_samples: int, rate: int, n_channels: int) -> int:
    """Memory `n_samples` per channel take as float32: decoded and joined, then resampled to SAMPLE_RATE in pieces
    and joined (each twice)."""
    return 4 * n_channels * 2 * (n_samples + int(n_samples * SAMPLE_RATE / rate) + 1)


def _check_length(seconds: float) -> None:
    if seconds > MAX_SEGMENT_SECONDS:
        raise DecodeError(f"segment holds {seconds:.1f} s of media, over the {MAX_SEGMENT_SECONDS:.0f} s a segment may hold")


def _check_budget(needed: int, budget: int) -> None:
    if needed > budget:
        raise DecodeError(f"segment decodes to more than {budget // 2**20} MiB (max_decoded_megabytes)")


def _samples(frame: av.AudioFrame) -> np.ndarray:
    """The frame's samples as float32 in [-1, 1], shape = (n_channels, n_samples)."""
    name = frame.format.name
    planar = name.endswith("p")
    raw = frame.to_ndarray()
    n_channels = frame.layout.nb_channels
    planes = raw if planar else raw.reshape(-1, n_channels).T
    scale = SAMPLE_SCALE[name.removesuffix("p")]
    out = planes.astype(np.float32)
    if name.startswith("u8"):
        out -= 128.0
    return out / scale if scale != 1.0 else out


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """(n_channels, n) float32 at `rate` -> the same at SAMPLE_RATE.

    One mono resampler per channel: FFmpeg's resampler behind PyAV crashes the process on 8- and 16-channel
    layouts (7.1 sound), and channels are resampled independently anyway, so this gives the same samples.
    Each gets a second of input at a time: the resampler's own buffers grow with the frame it is given
    (100 s at 1 kHz in one frame peaked at 7 times its output).
    """
    if rate == SAMPLE_RATE:
        return audio.astype(np.float32, copy=False)
    resampled = [_resample_channel(channel, rate) for channel in audio]
    length = min((sum(chunk.shape[1] for chunk in chunks) for chunks in resampled), default=0)
    out = np.empty((len(resampled), length), np.float32)
    for i, chunks in enumerate(resampled):  # each channel's pieces moved into place and freed
        at = 0
        while chunks and at < length:
            chunk = chunks.pop(0)[0, : length - at]
            out[i, at : at + len(chunk)] = chunk
            at += len(chunk)
    return out


def _resample_channel(channel: np.ndarray, rate: int) -> list[np.ndarray]:
    """One channel at SAMPLE_RATE, as the resampler's output pieces, each of shape = (1, n)."""
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=SAMPLE_RATE)
    out: list[np.ndarray] = []
    for first in [*range(0, len(channel), rate), None]:
        piece = None
        if first is not None:
            piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(channel[None, first : first + rate], dtype=np.float32),
                                               format="fltp", layout="mono")
            piece.sample_rate = rate
        out += [frame.to_ndarray() for frame in resampler.resample(piece)]
    return out


def _decode_container(
    payload: bytes, format_name: str, headers: SegmentHeaders, threads: int, budget: int, max_frame_side: int,
    frame_rates: Sequence[float] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, float]:
    """frames, their times, the times of every decoded frame when only some were converted (else None), audio and
    its start."""
    try:
        container = av.open(io.BytesIO(payload), format=format_name)
    except av.error.FFmpegError as error:
        raise DecodeError(f"corrupt {format_name} segment: the container cannot be read ({error})") from error
    with container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise DecodeError(f"{format_name} container has no audio or video stream")
        for stream in (video, audio):
            if stream is not None and stream.codec_context is None:
                raise DecodeError(f"{format_name} container: no decoder for its {stream.type} stream's codec")
        # What the streams declare is checked before a single frame is decoded (MPEG-TS may declare nothing
        # until the first frame: then the first frame is checked before it is converted).
        rate = n_channels = 0
        if audio is not None and audio.codec_context.sample_rate:
            rate, n_channels = audio.codec_context.sample_rate, audio.codec_context.channels
            _check_audio_format(rate, n_channels)
        if video is not None and video.codec_context.width and video.codec_context.height:
            _check_budget(_rgb_bytes(video.codec_context.width, video.codec_context.height, max_frame_side), budget)
        if headers.timestamp_offset is not None:
            offset = headers.timestamp_offset
        else:  # the segment's earliest timestamp stands for the header's `start`
            offset = headers.start - (container.start_time or 0) / 1e6
        frames: list[np.ndarray] = []
        frame_times: list[float] = []  # of the converted frames
        decoded_times: list[float] = []  # of every decoded frame
        picker = _FramePicker(frame_rates)
        audio_chunks: list[np.ndarray] = []
        audio_start: float | None = None
        audio_samples = used_by_frames = 0
        for stream in (video, audio):
            if stream is not None:
                stream.codec_context.thread_count = threads
                stream.codec_context.thread_type = "SLICE"
        try:
            for packet in container.demux(*[s for s in (video, audio) if s is not None]):
                for frame in packet.decode():
                    if frame.time is not None and abs(frame.time + offset) > MAX_STREAM_SECONDS:
                        raise DecodeError(f"a frame at container time {frame.time:.0f} s lies outside stream time "
                                          f"0–{MAX_STREAM_SECONDS:.0f} s")
                    if isinstance(frame, av.VideoFrame):
                        if frame.time is None or frame.time + offset < 0:
                            continue  # no timing, or pre-roll before stream time 0
                        if frame_times:
                            _check_length(frame.time + offset - min(frame_times))
                        used_by_frames += _rgb_bytes(frame.width, frame.height, max_frame_side)  # kept or not: a bound
                    else:
                        if not audio_samples and not audio_chunks:  # the first frame: the stream may not have said
                            rate, n_channels = frame.sample_rate, frame.layout.nb_channels
                            _check_audio_format(rate, n_channels)
                        if (frame.sample_rate, frame.layout.nb_channels) != (rate, n_channels):
                            raise DecodeError(f"audio changes from {rate} Hz, {n_channels} channels to "
                                              f"{frame.sample_rate} Hz, {frame.layout.nb_channels} within the segment")
                        audio_samples += frame.samples
                        _check_length(audio_samples / rate)
                    # counted before the frame is converted: the budget holds for what is about to be allocated
                    _check_budget(used_by_frames + _audio_bytes(audio_samples, rate or SAMPLE_RATE, n_channels), budget)
                    if isinstance(frame, av.VideoFrame):
                        decoded_times.append(frame.time + offset)
                        if picker.keep(frame.time + offset):
                            frames.append(_rgb(frame, max_frame_side))
                            frame_times.append(frame.time + offset)
                    else:
                        if audio_start is None:
                            audio_start = (frame.time or 0.0) + offset
                        audio_chunks.append(_samples(frame))
        except av.error.FFmpegError as error:
            raise DecodeError(f"corrupt {format_name} segment: decoding failed ({error})") from error
        if video is not None and not frames and audio is None:
            raise DecodeError("video segment decodes to no frame (does it start at a key frame?)")
    if audio_chunks:
        samples = _resample(np.concatenate(audio_chunks, axis=1), rate)
    else:
        samples = np.zeros((0, 0), np.float32)
    del audio_chunks
    audio_start = audio_start if audio_start is not None else headers.start
    if audio_start < 0:  # pre-roll (encoder priming) before stream time 0
        samples, audio_start = samples[:, round(-audio_start * SAMPLE_RATE):], 0.0
    order = np.argsort(frame_times, kind="stable")  # decoders emit in presentation order; be sure
    every = None if len(decoded_times) == len(frame_times) else np.sort(np.asarray(decoded_times, dtype=np.float64))
    return _stack(frames, order), np.asarray(frame_times, dtype=np.float64)[order], every, samples, audio_start


class _FramePicker:
    """Whether a decoded frame is converted: it is the first of its 1/rate-second slot at one of the rates (frames
    come in presentation order, so this picks what `analysed_frame_indices` picks from the whole segment; given the
    frame step, it may leave out the segment's first frame, converted here all the same)."""

    def __init__(self, rates: Sequence[float] | None) -> None:
        self.every = rates is None or any(rate <= 0 for rate in rates)
        self.rates = [] if self.every or rates is None else list(rates)
        self.last: list[int | None] = [None] * len(self.rates)

    def keep(self, time: float) -> bool:
        slots = [math.floor(time * rate + 1e-6) for rate in self.rates]
        first = any(slot != last for slot, last in zip(slots, self.last, strict=True))
        self.last = list(slots)
        return self.every or first


def _rgb_bytes(width: int, height: int, max_side: int) -> int:
    """Bytes of one RGB frame of this size after `_rgb`'s downscaling."""
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
    return 3 * width * height


def _rgb(frame: av.VideoFrame, max_side: int) -> np.ndarray:
    width, height = frame.width, frame.height
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
        return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    return frame.to_ndarray(format="rgb24")


def _stack(frames: list[np.ndarray], order: np.ndarray) -> np.ndarray:
    """The frames in `order` as one array, each freed once copied (np.stack would hold every frame twice)."""
    if not frames:
        return _no_frames()
    shape = frames[0].shape
    out = np.empty((len(frames), *shape), dtype=np.uint8)
    for place, i in enumerate(order):
        if frames[i].shape != shape:
            raise DecodeError(f"frame size changes within the segment ({shape[1]}x{shape[0]} to "
                              f"{frames[i].shape[1]}x{frames[i].shape[0]})")
        out[place] = frames[i]
        frames[i] = _no_frames()
    return out


def end_marker(headers: SegmentHeaders) -> DecodedSegment:
    """The decoded form of an empty end-of-stream marker."""
    return DecodedSegment(
        stream_id=headers.stream_id, seq=headers.seq, start=headers.start,
        frames=np.zeros((0, 0, 0, 3), np.uint8), frame_times=np.zeros(0),
        audio=np.zeros((0, 0), np.float32), audio_start=headers.start, end_of_stream=True,
    )


def decode_record(headers: SegmentHeaders, payload: bytes, ingest: IngestSettings,
                  frame_rates: Sequence[float] | None = None) -> DecodedSegment:
    """A media record decoded under the ingest limits (the end marker for an empty end-of-stream); DecodeError if not.
    `frame_rates`: as in `decode_segment`."""
    if not payload and headers.end_of_stream:
        return end_marker(headers)
    return decode_segment(headers, payload, ingest.decode_threads, ingest.max_decoded_megabytes, ingest.max_frame_side,
                          frame_rates)
