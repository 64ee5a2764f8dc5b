"""Write small generated clips: the demo's fallback sample and test inputs with chosen properties.

These are test patterns (moving colour bars and tones), not recordings; real
media for tests lives in ../shared/data.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from emostream.media.decode import channel_layout


def write_clip(
    path: str | Path,
    seconds: float = 4.0,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    gop: int = 50,  # frames between key frames
    audio_channels: int = 1,  # 0 writes a silent-free video-only clip
    sample_rate: int = 48000,
    video: bool = True,
    video_codec: str = "libx264",
) -> Path:
    """Write a clip whose channel k carries a 220·(k+1) Hz tone, so channel order is checkable."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        v_stream = None
        if video:
            v_stream = out.add_stream(video_codec, rate=fps)
            v_stream.width, v_stream.height, v_stream.pix_fmt = width, height, "yuv420p"
            v_stream.codec_context.gop_size = gop
            if video_codec == "libx264":
                v_stream.codec_context.options = {"preset": "ultrafast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        a_stream = None
        if audio_channels:
            codec = "pcm_s16le" if path.suffix in (".wav", ".mov", ".mkv") else ("flac" if path.suffix == ".flac" else "aac")
            a_stream = out.add_stream(codec, rate=sample_rate)
            a_stream.codec_context.layout = channel_layout(audio_channels)
        if v_stream is not None:
            bars = np.repeat(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None], height, axis=0)
            for i in range(round(seconds * fps)):
                image = np.concatenate([np.roll(bars, i * 4, axis=1), np.flip(bars, 1), np.full_like(bars, i % 256)], axis=2)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, fps)
                for packet in v_stream.encode(frame):
                    out.mux(packet)
            for packet in v_stream.encode(None):
                out.mux(packet)
        if a_stream is not None:
            total = round(seconds * sample_rate)
            t = np.arange(total) / sample_rate
            tones = np.stack([0.3 * np.sin(2 * np.pi * 220 * (k + 1) * t) for k in range(audio_channels)])
            samples = (tones * 32767).astype(np.int16)
            chunk = 1024
            for start in range(0, total, chunk):
                block = np.ascontiguousarray(samples[:, start:start + chunk].T).reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(block, format="s16", layout=a_stream.codec_context.layout)
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
                for packet in a_stream.encode(frame):
                    out.mux(packet)
            for packet in a_stream.encode(None):
                out.mux(packet)
    return path


def mux_files(video_path: str | Path, audio_path: str | Path, out_path: str | Path, audio_codec: str = "aac") -> Path:
    """Write the video stream of one file (copied) with the audio of another (encoded) into one container.

    The result lasts as long as the longer of the two; used to build audio-visual test
    streams from a face video and a speech recording.
    """
    out_path = Path(out_path)
    with av.open(str(video_path)) as video_in, av.open(str(audio_path)) as audio_in, av.open(str(out_path), "w") as out:
        v_in = video_in.streams.video[0]
        a_in = audio_in.streams.audio[0]
        v_out = out.add_stream_from_template(v_in)
        a_out = out.add_stream(audio_codec, rate=a_in.codec_context.sample_rate)
        a_out.codec_context.layout = channel_layout(a_in.codec_context.channels)
        a_out.codec_context.format = "fltp"  # the native AAC encoder's only sample format
        a_out.codec_context.bit_rate = 64_000  # within AAC's limit at 16 kHz mono (the default 128k is not)
        for packet in video_in.demux(v_in):
            if packet.dts is None:
                continue
            packet.stream = v_out
            out.mux(packet)
        for frame in audio_in.decode(a_in):
            frame.pts = None  # let the encoder number samples from 0
            for packet in a_out.encode(frame):
                out.mux(packet)
        for packet in a_out.encode(None):
            out.mux(packet)
    return out_path


def speech_track(recordings: list[Path], out_path: str | Path, pause_seconds: float = 1.0, seed: int = 0) -> Path:
    """Real speech recordings one after another, with pauses of background noise, as one 16 kHz mono WAV.

    The pauses carry noise at the recordings' own background level (their quietest tenth),
    so the joins sound like one recording, not like speech cut into digital silence.
    """
    import soundfile  # noqa: PLC0415

    rate = 16000
    clips = []
    for path in recordings:
        audio, clip_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        if clip_rate != rate:
            raise ValueError(f"{path}: {clip_rate} Hz, expected {rate} Hz")
        clips.append(audio.mean(axis=1))
    hop = rate // 100
    levels = [np.percentile(np.sqrt((c[: len(c) // hop * hop].reshape(-1, hop) ** 2).mean(axis=1)), 10) for c in clips]
    noise = np.random.default_rng(seed)
    pause = lambda: noise.normal(0, max(min(levels), 1e-5), int(pause_seconds * rate)).astype(np.float32)  # noqa: E731
    track = np.concatenate([pause()] + [part for clip in clips for part in (clip, pause())])
    soundfile.write(str(out_path), track, rate, subtype="PCM_16")
    return Path(out_path)
