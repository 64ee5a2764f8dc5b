"""Feature extraction for training and evaluation: a Ray Data job from labelled examples to a Parquet cache.

Each example's media span goes through the same perception operators as the
live path (decode, faces, prosody, Whisper, voice and sentence embeddings),
in an actor pool so the models load once per actor. Rows land in
`<cache>/<key>/` where the key hashes the operator settings (the face settings
only when the media can carry pictures) and the augmentation recipe: change
either and a new cache is built; run the job
again and examples already in the cache are skipped (resumable).

Augmented copies of audio-only examples (speed, gain, added noise) multiply
the training data; video examples get gain and noise only (a speed change
would desynchronise the faces). Telephone-band copies (`Augment.telephone_copies`)
go through a noisy 8 kHz mu-law line (`media/telephone.py`, the one the call-level
evaluation uses). The cache holds features, never raw audio or frames.

By default a row is the whole labelled span as one utterance. With
`Augment.live_cut` the rows are what the live path scores instead: each copy is
pushed through a `StreamSession` with the product's own segmentation (VAD, merge
gap, Smart Turn, edge tightening, the minimum utterance length) and every
utterance it cuts is a row labelled with the clip's label (`piece`, `pieces`: its
place and how many the copy became; a copy that became none has no row, as the
live path would lose it: the cache keeps a marker without features for it, so a
re-run does not cut it again, and `read_features` leaves the marker out).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emostream.media.decode import SAMPLE_RATE, DecodedSegment
from emostream.media.telephone import telephone_copy, with_noise
from emostream.perception.utterance import UtteranceBundle
from emostream.settings import Settings
from emostream.training.datasets import Example

if TYPE_CHECKING:
    from emostream.perception.voice.speakers import VoiceEmbedder
    from emostream.spine import Perceive

log = logging.getLogger(__name__)

FEATURE_VERSION = 1  # bump when what a row holds changes
SEGMENT_SECONDS = 2.0  # augmented audio is cut into segments of this length again
# examples per Parquet file of the cache (a Ray Data block): what a stopped extraction loses per actor at most
# (a live-cut example with telephone copies takes each actor seconds to a minute on a busy machine)
EXAMPLES_PER_FILE = 8


@dataclass(frozen=True)
class Augment:
    """Augmented copies per audio example (0 = none) and the ranges they are drawn from."""

    copies: int = 0
    speed: tuple[float, float] = (0.9, 1.1)  # playback rate (changes tempo and pitch together)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    noise_snr_db: tuple[float, float] = (15.0, 35.0)  # white noise this far below the speech level
    seed: int = 0
    # What the live path sees (issue 19, item 7):
    telephone_copies: int = 0  # copies through a noisy 8 kHz mu-law line (media/telephone.py), after the augmented ones
    telephone_snr_db: tuple[float, float] = (20.0, 40.0)  # line noise this far below the speech level
    live_cut: bool = False  # rows: the utterances a live StreamSession cuts from each copy, not the whole span


# Fields added to Augment after caches were built: they count in the cache key only when set, so a cache
# built before them keeps its key (and its half hour of extraction).
LATER_FIELDS = ("telephone_copies", "telephone_snr_db", "live_cut")


# Voice settings only the live cut reads (VAD, merge gap, Smart Turn, lengths, idleness): a whole-clip extraction
# pushes the labelled span into a session that does not cut (`StreamSession(cut=False)`), so they count in the cache
# key only with `Augment.live_cut`; changing them must not cost a whole-clip cache its half hour of extraction.
CUT_ONLY_VOICE_FIELDS = ("vad_onset", "vad_offset", "merge_gap_seconds", "turn_model", "turn_pause_seconds", "turn_threshold",
                         "min_resume_seconds", "min_utterance_seconds", "max_utterance_seconds", "idle_seconds")
# Voice settings added after caches existed: they count in the cache key only when set, so their arrival keeps the
# keys of the caches extracted without them.
LATER_VOICE_FIELDS = ("feature_model_dir",)


# File types that carry sound alone. When every example of an extraction is one, no row can hold a face, so the face
# settings stay out of its cache key: a new face default must not cost a voice corpus its extraction (half an hour
# for the default recipe's live cut here).
AUDIO_ONLY_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".opus")


def may_hold_faces(examples: Iterable[Example]) -> bool:
    """Whether any example's media is of a file type that can carry pictures."""
    return any(example.media.suffix.lower() not in AUDIO_ONLY_SUFFIXES for example in examples)


def cache_key(settings: Settings, augment: Augment, faces: bool = True) -> str:
    """Hash of everything that changes the features: the version, the face settings (unless `faces` is False: media
    without pictures), the voice settings (of those, the ones only the live cut reads when the rows are its
    utterances), augmentation."""
    settings = feature_settings(settings)
    defaults = asdict(Augment())
    voice = settings.voice.model_dump(mode="json")
    voice = {name: value for name, value in voice.items() if name not in LATER_VOICE_FIELDS or value is not None}
    if not augment.live_cut:
        voice = {name: value for name, value in voice.items() if name not in CUT_ONLY_VOICE_FIELDS}
    recipe: dict[str, Any] = {"version": FEATURE_VERSION, "voice": voice,
                              "augment": {name: value for name, value in asdict(augment).items()
                                          if name not in LATER_FIELDS or value != defaults[name]}}
    if faces:
        recipe["faces"] = settings.faces.model_dump(mode="json")
    return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def cache_folder(cache_root: Path, settings: Settings, augment: Augment, examples: Iterable[Example]) -> Path:
    """The folder under `cache_root` that holds (or will hold) the features of `examples` for these settings."""
    return Path(cache_root) / cache_key(settings, augment, faces=may_hold_faces(examples))


def example_to_json(example: Example) -> str:
    return json.dumps({**asdict(example), "media": str(example.media)})


def example_from_json(text: str) -> Example:
    fields_ = json.loads(text)
    return Example(**{**fields_, "media": Path(fields_["media"]), "open_vocabulary": tuple(fields_["open_vocabulary"])})


def augmented(segments: list[DecodedSegment], rng: np.random.Generator, augment: Augment,
              span: tuple[float, float]) -> list[DecodedSegment]:
    """One augmented copy (speed, gain, noise) of an example's decoded segments; audio-only examples are first cut
    to `span` (video examples keep their speed: a speed change would desynchronise the faces)."""
    has_video = any(len(s.frames) for s in segments)

    def change(audio: np.ndarray) -> np.ndarray:
        if not has_video:
            rate = rng.uniform(*augment.speed)
            positions = np.arange(0, audio.shape[1] - 1, rate)
            audio = np.stack([np.interp(positions, np.arange(audio.shape[1]), channel) for channel in audio]).astype(np.float32)
        audio = audio * 10 ** (rng.uniform(*augment.gain_db) / 20)
        return with_noise(audio, rng, augment.noise_snr_db).astype(np.float32)

    return with_audio(segments, change, span)


def telephoned(segments: list[DecodedSegment], rng: np.random.Generator, augment: Augment,
               span: tuple[float, float]) -> list[DecodedSegment]:
    """One telephone-band copy of an example's decoded segments (`media.telephone.telephone_copy`); audio-only
    examples are first cut to `span`."""
    return with_audio(segments, lambda audio: telephone_copy(audio, rng, augment.telephone_snr_db), span)


def with_audio(segments: list[DecodedSegment], change: Callable[[np.ndarray], np.ndarray],
               span: tuple[float, float]) -> list[DecodedSegment]:
    """The segments with their audio (channels, samples) replaced by `change` of it. Audio-only examples: the span's
    audio only, cut into SEGMENT_SECONDS segments again (`change` may change its length); video examples keep their
    segmentation and frames (`change` must keep the length)."""
    has_video = any(len(s.frames) for s in segments)
    audio = np.concatenate([s.audio for s in segments if s.audio.size], axis=1)
    start = next(s.audio_start for s in segments if s.audio.size)
    if not has_video:
        first = max(int((span[0] - start) * SAMPLE_RATE), 0)
        last = audio.shape[1] if not np.isfinite(span[1]) else max(int((span[1] - start) * SAMPLE_RATE), first + 1)
        audio, start = audio[:, first:last], start + first / SAMPLE_RATE
    audio = change(audio)
    if has_video:  # keep the original segmentation, frames untouched
        out, offset = [], 0
        for s in segments:
            n = s.audio.shape[1] if s.audio.size else 0
            out.append(replace(s, audio=audio[:, offset : offset + n]) if n else s)
            offset += n
        return out
    step = int(SEGMENT_SECONDS * SAMPLE_RATE)
    base = segments[0]
    return [
        replace(base, seq=k, start=start + i / SAMPLE_RATE, audio=audio[:, i : i + step], audio_start=start + i / SAMPLE_RATE,
                frames=np.zeros((0, 0, 0, 3), np.uint8), frame_times=np.zeros(0), end_of_stream=False)
        for k, i in enumerate(range(0, audio.shape[1], step))
    ]


def example_rng(augment: Augment, key: str) -> np.random.Generator:
    """The random generator of an example's copies: the same copies for the same seed and example on every run."""
    return np.random.default_rng([augment.seed, int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)])


def _floats(array: np.ndarray | None) -> list[float] | None:
    return None if array is None else np.asarray(array, np.float32).ravel().tolist()


def bundle_row(bundle: UtteranceBundle, example: Example, variant: int, piece: int = 0, pieces: int = 1) -> dict[str, Any]:
    """One Parquet row: the example's labels and its bundle's features (no raw media); `piece` of `pieces` is the
    utterance's place among those the live path cut from the variant (`Augment.live_cut`; else 0 of 1)."""
    face = bundle.face
    return {
        "key": example.key, "variant": variant, "piece": piece, "pieces": pieces, "dataset": example.dataset, "media": str(example.media),
        "speaker": example.speaker, "label": example.label, "valence": example.valence, "arousal": example.arousal,
        "explanation": example.explanation, "open_vocabulary": list(example.open_vocabulary),
        "reference_transcript": example.transcript, "transcript": bundle.transcript,
        "start": bundle.start, "end": bundle.end,
        "prosody": _floats(bundle.prosody.as_array()),
        "audio_embedding": _floats(bundle.audio_embedding),
        "speaker_embedding": _floats(bundle.speaker_embedding),
        "text_embedding": _floats(bundle.text_embedding),
        "face_times": _floats(face.times) if face else None,
        "face_expression": _floats(face.expression) if face else None,
        "face_features": _floats(face.features) if face else None,
        "face_geometry": _floats(face.geometry) if face else None,
        "face_geometry_z": _floats(face.geometry_z) if face else None,
    }


def lost_row(example: Example, variant: int) -> dict[str, Any]:
    """The cache's marker of a variant the live path cut to nothing (`pieces` 0, no features): the example counts as
    extracted (a re-run would only cut it to nothing again); `read_features` leaves the marker out."""
    return {**dict.fromkeys(ROW_COLUMNS), "key": example.key, "variant": variant, "piece": 0, "pieces": 0,
            "dataset": example.dataset, "media": str(example.media), "speaker": example.speaker, "label": example.label}


ROW_COLUMNS = (  # bundle_row's keys, in order
    "key", "variant", "piece", "pieces", "dataset", "media", "speaker", "label", "valence", "arousal", "explanation", "open_vocabulary",
    "reference_transcript", "transcript", "start", "end", "prosody", "audio_embedding", "speaker_embedding", "text_embedding",
    "face_times", "face_expression", "face_features", "face_geometry", "face_geometry_z",
)


@dataclass
class FeatureExtractor:
    """Ray Data actor: example rows in, feature rows out (one per variant)."""

    settings_json: str
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        # the actor loads the models, the driver does not
        from emostream.perception.encode import UtteranceEncoder  # noqa: PLC0415
        from emostream.perception.voice.speakers import VoiceEmbedder  # noqa: PLC0415
        from emostream.spine import Spine  # noqa: PLC0415

        self.settings = Settings.model_validate_json(self.settings_json)
        self.voices = VoiceEmbedder()
        # its perceive and encode stages (a labelled span replaces stitching); the features are the settings' own
        # (resolved by extract_features), whatever model the settings would score with
        self.spine = Spine(self.settings, encode=UtteranceEncoder(self.settings.voice), voices=self.voices)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows: list[dict[str, Any]] = []
        for record in batch["example"]:
            example = example_from_json(record)
            try:
                rows += self.extract(example)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the job; it is logged and skipped
                log.warning("example %s (%s): %s", example.key, example.media, error)
        return {name: [row[name] for row in rows] for name in ROW_COLUMNS}

    def extract(self, example: Example) -> list[dict[str, Any]]:
        from emostream.perception.session import StreamSession  # noqa: PLC0415

        segments, (lo, hi) = span_segments(example, self.settings)
        if not any(s.audio.size for s in segments):
            raise ValueError("no audio in the example's span")
        rng = example_rng(self.augment, example.key)
        variants = ([segments] + [augmented(segments, rng, self.augment, (lo, hi)) for _ in range(self.augment.copies)]
                    + [telephoned(segments, rng, self.augment, (lo, hi)) for _ in range(self.augment.telephone_copies)])
        rows = []
        for number, parts in enumerate(variants):
            if self.augment.live_cut:
                bundles = self.live_utterances(example, parts, (lo, hi))
                rows += [bundle_row(b, example, number, k, len(bundles)) for k, b in enumerate(bundles)] or [lost_row(example, number)]
                continue
            session = StreamSession(example.key, self.settings, self.voices, cut=False)
            for part in parts:
                session.push(self.spine.perceive(part))
            whole = number > 0 and not any(len(p.frames) for p in parts)  # an augmented audio copy is the span itself
            bundle = self.spine.encode([session.utterance(None if whole else example.start, None if whole else example.end)])[0]
            rows.append(bundle_row(bundle, example, number))
        return rows

    def live_utterances(self, example: Example, parts: list[DecodedSegment], span: tuple[float, float]) -> list[UtteranceBundle]:
        """The utterances the live path cuts from a copy of the example (`live_cut`), encoded."""
        cut = live_cut(parts, span, self.settings, self.spine.perceive, self.voices, example.key)
        if not cut:
            log.info("example %s: the live path cuts no utterance from it (lost)", example.key)
        return self.spine.encode(cut) if cut else []


def span_segments(example: Example, settings: Settings) -> tuple[list[DecodedSegment], tuple[float, float]]:
    """The decoded segments of the example's media that overlap its labelled span, and the span (start, end; end
    inf for the whole file)."""
    from emostream.media.records import file_segments  # noqa: PLC0415

    segments = [s for s in file_segments(example.media, example.key, settings.ingest) if not s.is_end_marker]
    span = (example.start or 0.0, example.end if example.end is not None else float("inf"))
    return [s for s in segments if s.end > span[0] and s.start < span[1]], span


def live_cut(parts: list[DecodedSegment], span: tuple[float, float], settings: Settings, perceive: Perceive,
             voices: VoiceEmbedder, stream_id: str) -> list[UtteranceBundle]:
    """The utterances (not yet encoded) the live path cuts from one stream's segments: a fresh `StreamSession` with
    the settings' segmentation (VAD, merge gap, Smart Turn, edge tightening; shorter than
    voice.min_utterance_seconds: dropped), flushed at the end, as backfill and the live job stitch. Of a span of a
    longer file, those lying at least half inside it."""
    from emostream.perception.session import StreamSession  # noqa: PLC0415

    session = StreamSession(stream_id, settings, voices)
    cut = [b for part in parts for b in session.push(perceive(part))] + session.flush()
    return [b for b in cut if min(b.end, span[1]) - max(b.start, span[0]) >= (b.end - b.start) / 2]


def feature_settings(settings: Settings) -> Settings:
    """The settings with the Whisper features resolved (`voice.audio_features` unset: those of the model the settings
    score with), as the cache key and the extraction use them."""
    from emostream.perception.encode import voice_for_model  # noqa: PLC0415

    if settings.voice.audio_features is not None:
        return settings
    return settings.model_copy(update={"voice": voice_for_model(settings.voice, settings.serve.model)})


def cache_files(folder: Path) -> list[Path]:
    """The Parquet files of a cache folder that read whole. A file the job was stopped while writing has no footer:
    it is skipped with a warning, so its examples count as not cached and the next extraction does them again."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    files = []
    for file in sorted(Path(folder).glob("*.parquet")):
        try:
            pq.read_metadata(file)
        except (OSError, pa.ArrowInvalid) as error:
            log.warning("feature cache %s: %s is unreadable (%s), an extraction stopped while writing it? Skipped: its "
                        "examples are extracted again; delete the file", folder, file.name, error)
            continue
        files.append(file)
    return files


def cached_keys(folder: Path) -> set[str]:
    """Example keys already in a cache folder."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    keys: set[str] = set()
    for file in cache_files(folder):
        keys.update(pq.read_table(file, columns=["key"]).column("key").to_pylist())
    return keys


def extract_features(examples: list[Example], settings: Settings, cache_root: Path, augment: Augment | None = None,
                     workers: int = 1, batch_size: int = 4) -> Path:
    """Run the extraction job (inside an initialised Ray) for examples not cached yet; returns the cache folder."""
    import ray  # noqa: PLC0415

    settings = feature_settings(settings)
    augment = augment or Augment()
    folder = cache_folder(cache_root, settings, augment, examples)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(json.dumps({"version": FEATURE_VERSION, "augment": asdict(augment),
                                                    "settings": json.loads(settings.model_dump_json())}, indent=1))
    done = cached_keys(folder)
    todo = [e for e in examples if e.key not in done]
    log.info("features: %d examples, %d cached in %s, %d to extract", len(examples), len(examples) - len(todo), folder, len(todo))
    if not todo:
        return folder
    # One Parquet file per block of EXAMPLES_PER_FILE examples, written as each block is done: a stopped job
    # leaves its finished files behind and the next run extracts only what is missing.
    blocks = max(1, -(-len(todo) // EXAMPLES_PER_FILE))
    dataset = ray.data.from_items([{"example": example_to_json(e)} for e in todo], override_num_blocks=blocks)
    dataset.map_batches(
        FeatureExtractor,
        fn_constructor_kwargs={"settings_json": settings.model_dump_json(), "augment": augment},
        batch_size=batch_size,
        concurrency=workers,
        # Slightly under a CPU each, so the write tasks find room beside the actors and results land on
        # disk as they come (ARCHITECTURE.md §7: whole-CPU actors starve the other stages).
        num_cpus=0.9,
    ).write_parquet(str(folder), ray_remote_args={"num_cpus": 0.1})
    return folder


def read_features(folder: Path) -> list[dict[str, Any]]:
    """All feature rows of a cache folder as dicts (not lost_row's markers), sorted by example key and variant.

    The job writes rows in whatever order its actors finish; sorting makes training and the live-order
    evaluation the same on every machine.
    """
    import pyarrow.parquet as pq  # noqa: PLC0415

    rows: list[dict[str, Any]] = []
    for file in cache_files(folder):
        rows += [row for row in pq.read_table(file).to_pylist() if row.get("pieces") != 0]  # not lost_row's markers
    return sorted(rows, key=lambda row: (row["key"], row["variant"], row.get("piece") or 0))
