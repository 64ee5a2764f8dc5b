"""Utterances from live streams: a face video with speech through a real broker, silent video, video only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emostream.ingest.publish import publish
from emostream.media.synthetic import mux_files, write_clip
from emostream.perception.faces.types import SegmentFaces
from emostream.settings import Settings, load_settings
from tests.kafka_helpers import consume_streams
from tests.speech_helpers import RATE, noise_floor_db, read_mono, room_noise, speech_bounds, write_wav

pytestmark = pytest.mark.broker


def test_face_video_with_speech_through_the_broker(  # type: ignore[no-untyped-def]
    settings: Settings, wolfgang: Path, librivox: list[Path], make_spine, tmp_path: Path
) -> None:
    # Three read sentences with a second of their own background hiss between them, under the face video.
    clips = [read_mono(clip) for clip in librivox[:3]]
    level = min(noise_floor_db(audio) for audio in clips)
    parts, spoken, position = [room_noise(1.0, 0, level)], [], 1.0
    for i, audio in enumerate(clips):
        start, end = speech_bounds(audio)
        spoken.append((position + start, position + end))
        parts += [audio, room_noise(1.0, i + 1, level)]
        position += len(audio) / RATE + 1.0
    speech = write_wav(tmp_path / "speech.wav", np.concatenate(parts))
    muxed = mux_files(wolfgang, speech, tmp_path / "meeting.mp4")
    publish(muxed, "meeting", settings)
    segments, stats = consume_streams(settings, {"meeting"})
    assert not stats.dead_letters

    spine = make_spine(settings)
    bundles = [b for segment in segments["meeting"] for b in spine.utterances(segment)]
    assert len(bundles) == 3, [(round(b.start, 2), round(b.end, 2), b.transcript) for b in bundles]
    boundaries = [s.start for s in segments["meeting"][1:]]
    # The first sentence (7 s) runs across segment boundaries and still comes out once, whole.
    assert any(b.start < cut < b.end for b in bundles for cut in boundaries)
    for bundle, (start, end) in zip(bundles, spoken, strict=True):
        # Looser than the LibriVox test: AAC coding shifts the audio by its ~60 ms encoder delay.
        assert bundle.start == pytest.approx(start, abs=0.3) and bundle.end == pytest.approx(end, abs=0.3)
        assert bundle.has_video and bundle.transcript
        visible = ([bundle.face] if bundle.face else []) + list(bundle.listeners)
        assert len(visible) == 1  # the one face on screen, as speaker or listener
        (face,) = visible
        assert np.isfinite(face.active_speaker_score) and -1 <= face.active_speaker_score <= 1
        assert len(face.times) >= 10 and face.expression.shape == (len(face.times), 7)
        assert all(bundle.start <= t <= bundle.end for t in face.times)
        assert 1 <= len(bundle.frames) <= 4 and max(bundle.frames[0].image.shape[:2]) == 224


def test_silent_video_gives_faces_and_no_utterances(wolfgang: Path, make_spine) -> None:  # type: ignore[no-untyped-def]
    spine = make_spine(load_settings())
    seen: list[SegmentFaces] = []
    original = spine.perceive.__call__

    def spy(segment):  # type: ignore[no-untyped-def]
        perceived = original(segment)
        if perceived.faces is not None:
            seen.append(perceived.faces)
        return perceived

    spine.perceive = spy
    assert spine.file_utterances(wolfgang, "silent") == []
    assert sum(len(f.analysed) for f in seen) > 250 and all(frame.faces for f in seen for frame in f.analysed)


def test_video_without_audio_and_audio_only_streams(tmp_path: Path, make_spine) -> None:  # type: ignore[no-untyped-def]
    spine = make_spine(load_settings(voice={"asr": False}))
    video_only = write_clip(tmp_path / "video-only.mp4", seconds=3, audio_channels=0)
    assert spine.file_utterances(video_only, "video-only") == []
    # A tone is not speech: an audio-only stream of it runs through and yields nothing either.
    tone = write_clip(tmp_path / "tone.wav", seconds=3, video=False, audio_channels=1, sample_rate=16000)
    assert spine.file_utterances(tone, "tone") == []
    assert spine.sessions.sessions == {}  # both streams ended and were forgotten
