"""The one scoring entry point: utterance bundles (+ each stream's context) in, emotion events out.

Serving, the live job and backfill all call `EmotionScorer.score`. A stream's
context is the model's rolling memory of its earlier utterances; it is explicit
state (`StreamContexts`) that the caller keeps, e.g. one per session actor.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from emostream.contracts import ListenerEmotion, ModelInfo, Speaker, Timings, UtteranceEmotionEvent, now_utc
from emostream.labels import FER7
from emostream.models.config import EmotionConfig
from emostream.models.explain import explain
from emostream.models.fusion import face_log_likelihood, face_map, fuse, fused_valence_arousal
from emostream.models.inputs import ModelInputs, check_audio_width, collate, voice_vector
from emostream.models.instructions import NO_CUE, read_answers
from emostream.models.model import EmotionOutput, ScoringModel
from emostream.perception.running_stats import RunningStats
from emostream.perception.utterance import UtteranceBundle
from emostream.settings import SITE_MIN_UTTERANCES, ServeSettings

MAX_STREAMS = 10_000  # contexts kept; the least recently used stream is forgotten first
VOICE_STD_FLOOR = 1e-3  # smallest per-speaker standard deviation of a voice feature, when nothing better is known
SPEAKER_STD_FLOOR = 0.25  # the model's floor: this fraction of the feature's spread over all training speakers
# The answer leans on the speaker-normalised view of the voice by count / (count + SPEAKER_VIEW_PRIOR) after `count`
# earlier utterances of the speaker, on the training-set-standardised view for the rest (speaker_view_weight). Chosen
# by the default recipe's speaker-grouped fold models on held-out speakers in calls of 12 clips (bench/speaker_view.py).
SPEAKER_VIEW_PRIOR = 3.0


def speaker_floor(model: ScoringModel) -> np.ndarray:
    """The smallest per-speaker standard deviation of each voice feature, for StreamContexts.speaker_z."""
    return np.maximum(SPEAKER_STD_FLOOR * model.audio_adapter.voice_std.cpu().numpy(), VOICE_STD_FLOOR)


class SiteStatistics:
    """The voice features' running mean and spread over every utterance a scorer has scored; from `after` utterances
    on (`serve.site_after_utterances`), they replace the training set's in the view of the voice without speaker
    statistics. A new microphone, line or corpus moves every voice feature, and the training set's spread then reads
    as emotion: in the default recipe's fold models' calls, a corpus never trained on went from 45.2% to 53.3% of
    utterances right, held-out speakers of the training corpora from 79.5% to 79.1% (model card, "The site's
    statistics").
    Per scorer (a Serve replica, a backfill or analyze run), not persisted: a restarted scorer starts from the
    training set again."""

    def __init__(self, model: ScoringModel, after: int = SITE_MIN_UTTERANCES) -> None:
        self.after = after
        self._model_mean = model.audio_adapter.voice_mean.detach().cpu()
        self._model_std = model.audio_adapter.voice_std.detach().cpu()
        self._stats = RunningStats(len(self._model_mean), speaker_floor(model))

    @property
    def known(self) -> bool:
        """Whether the view without speaker statistics is standardised over the site (`standardise`)."""
        return 0 < self.after <= self._stats.count

    def add(self, bundles: list[UtteranceBundle]) -> None:
        for bundle in bundles:
            if (vector := voice_vector(bundle)) is not None:
                self._stats.add(vector)

    def score(self, inputs: ModelInputs, bundles: list[UtteranceBundle]) -> ModelInputs:
        """The inputs of these utterances standardised over the site's earlier ones, which these then join (as a
        speaker's statistics count an utterance after it is scored)."""
        standardised = self.standardise(inputs)
        self.add(bundles)
        return standardised

    def standardise(self, inputs: ModelInputs) -> ModelInputs:
        """The inputs with the voice moved so that the model's training-set standardisation of it gives its
        standardisation over the site: voice_mean + (voice - site mean) / site std * voice_std. Only the view
        without speaker statistics reads the raw voice (`AudioAdapter.voice_features`). Unchanged until `after`."""
        if not self.known:
            return inputs
        mean, std = (torch.as_tensor(a, dtype=inputs.voice.dtype, device=inputs.voice.device)
                     for a in (self._stats.mean, self._stats.std))
        model_mean, model_std = self._model_mean.to(inputs.voice), self._model_std.to(inputs.voice)
        moved = model_mean + (inputs.voice - mean) / std * model_std
        return replace(inputs, voice=torch.where(inputs.has_audio.unsqueeze(1), moved, inputs.voice))


def speaker_view_weight(count: int, prior: float = SPEAKER_VIEW_PRIOR) -> float:
    """The share of the speaker-normalised view of the voice in an answer, after `count` earlier utterances of the
    speaker (the rest: the training-set-standardised view, the only one before statistics exist).

    A speaker's first statistics are few utterances of whatever they felt then: z-scores against them misled the model
    more than no statistics did, and statistics over a call's dozen utterances still fell short of a whole corpus's
    (bench/speaker_view.py). The two views are two answers of one model; mixing them (`views_forward`) trusts the
    speaker's statistics as they grow. A prior of 0 trusts them from the first (as before this mix)."""
    return count / (count + prior) if prior > 0 else 1.0


def standardised_view(inputs: ModelInputs) -> ModelInputs:
    """The inputs with their speaker statistics left out: the voice standardised over the training set only."""
    return replace(inputs, voice_z=torch.zeros_like(inputs.voice_z), voice_z_known=torch.zeros_like(inputs.voice_z_known))


def views_forward(model: ScoringModel, inputs: ModelInputs, weight: torch.Tensor, memory: torch.Tensor | None = None,
                  memory_mask: torch.Tensor | None = None) -> EmotionOutput:
    """The model's answer on both views of the voice, mixed: probabilities p_z^w p_s^(1-w) renormalised (the
    logits, valence and arousal mixed linearly by w), where p_z is its answer with the speaker statistics and p_s
    without them. The stream memory and the tokens are the speaker-normalised view's.

    weight : shape = (B,), w per utterance (`speaker_view_weight`); rows without speaker statistics have one view.
    """
    mixed = inputs.voice_z_known & (weight < 1)
    if not bool(mixed.any()):
        return model(inputs, memory, memory_mask)
    count = len(inputs)

    def twice(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else torch.cat([x, x])

    both = model(ModelInputs.concat([inputs, standardised_view(inputs)]), twice(memory), twice(memory_mask))
    normalised, standard = both.select(slice(0, count)), both.select(slice(count, 2 * count))
    w = torch.where(mixed, weight.to(normalised.logits.device), 1.0).to(normalised.logits.dtype)

    def mix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        share = w.view(-1, *[1] * (a.dim() - 1))
        return share * a + (1 - share) * b

    log_p = mix(normalised.probabilities.clamp_min(1e-12).log(), standard.probabilities.clamp_min(1e-12).log())
    return replace(normalised, logits=mix(normalised.logits, standard.logits), probabilities=log_p.softmax(-1),
                   valence=mix(normalised.valence, standard.valence), arousal=mix(normalised.arousal, standard.arousal),
                   voice_logits=mix(normalised.voice_logits, standard.voice_logits))


class StreamContexts:
    """Each stream's model memory and its speakers' voice statistics, bounded (least recently used streams go first)."""

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self._memory: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._voices: dict[str, dict[str, RunningStats]] = {}

    def speaker_z(self, bundle: UtteranceBundle, floor: np.ndarray | float = VOICE_STD_FLOOR) -> tuple[np.ndarray | None, int]:
        """The bundle's voice features in its speaker's standard deviations so far (None until two utterances
        were seen) and how many earlier utterances those are (what `speaker_view_weight` reads; 0 for a bundle
        without a voice), then counts this utterance in.

        floor : the smallest standard deviation per feature. With a speaker's first few utterances some
        features barely vary yet; dividing by that turns last-bit noise into z-scores of ±5.
        """
        vector = voice_vector(bundle)
        if vector is None:
            return None, 0
        stats = self._voices.setdefault(bundle.stream_id, {}).setdefault(bundle.speaker_id, RunningStats(len(vector), floor))
        earlier = stats.count
        z = stats.z(vector) if earlier >= 2 else None
        stats.add(vector)
        return z, earlier

    def get(self, stream_id: str, model: ScoringModel) -> tuple[torch.Tensor, torch.Tensor]:
        if stream_id in self._memory:
            self._memory.move_to_end(stream_id)
            return self._memory[stream_id]
        memory, mask = model.empty_memory(1)
        return memory[0], mask[0]

    def put(self, stream_id: str, memory: torch.Tensor, mask: torch.Tensor) -> None:
        self._memory[stream_id] = (memory, mask)
        self._memory.move_to_end(stream_id)
        while len(self._memory) > self.max_streams:
            stream, _ = self._memory.popitem(last=False)
            self._voices.pop(stream, None)

    def forget(self, stream_id: str) -> None:
        self._memory.pop(stream_id, None)
        self._voices.pop(stream_id, None)

    def take(self, stream_id: str, new_id: str | None = None) -> StreamContexts:
        """Move one stream's context out into a StreamContexts of its own (under `new_id` if given):
        how a caller that keeps contexts hands one stream's to a shared scorer and gets it back."""
        taken = StreamContexts(self.max_streams)
        key = new_id or stream_id
        if stream_id in self._memory:
            taken._memory[key] = self._memory.pop(stream_id)
        if stream_id in self._voices:
            taken._voices[key] = self._voices.pop(stream_id)
        return taken

    def absorb(self, other: StreamContexts) -> None:
        """Add the contexts of `other` (streams it holds replace ours)."""
        for stream, value in other._memory.items():
            self.put(stream, *value)
        self._voices.update(other._voices)

    def __len__(self) -> int:
        return len(self._memory)


OCCLUDED = ("voice", "face", "words")  # modalities hidden in turn to see what each contributed (those that count)


def _hidden(inputs: ModelInputs, modality: str) -> ModelInputs:
    if modality == "voice":
        return replace(inputs, has_audio=torch.zeros_like(inputs.has_audio))
    if modality == "face":
        return replace(inputs, face_mask=torch.zeros_like(inputs.face_mask), frame_mask=torch.zeros_like(inputs.frame_mask))
    return replace(inputs, has_text=torch.zeros_like(inputs.has_text))


def as_scored(inputs: ModelInputs, config: EmotionConfig) -> ModelInputs:
    """What the model reads when it scores: words it was not trained to read as emotion never reach it
    (`EmotionConfig.words_carry_emotion`). Evaluation reads the same, so its figures are the served model's."""
    return inputs if config.words_carry_emotion else _hidden(inputs, "words")


class EmotionScorer:
    """Scores utterance bundles with an emotion model; one instance per worker."""

    def __init__(self, model: ScoringModel, name: str, version: str, tokenizer=None, max_new_tokens: int = 40,  # type: ignore[no-untyped-def]
                 site_after: int = SITE_MIN_UTTERANCES) -> None:
        self.model = model.eval()
        self.site = SiteStatistics(model, site_after)  # the voices this scorer has scored (`SiteStatistics`)
        self.info = ModelInfo(name=name, version=version)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        # The face expert joins the model's answer unless the model reads faces itself (models/fusion.py).
        self.face_map = face_map(model.config)
        self.counted = tuple(m for m in OCCLUDED if m != "words" or model.config.words_carry_emotion)
        if model.language_model is not None and tokenizer is None:
            raise ValueError("a model with a language model needs its tokenizer to score")

    @torch.inference_mode()
    def score(self, bundles: list[UtteranceBundle], contexts: StreamContexts) -> list[UtteranceEmotionEvent]:
        """Events in the order of `bundles`. Utterances of one stream are scored in time order, so each
        sees the memory of those before it."""
        events: dict[int, UtteranceEmotionEvent] = {}
        order = sorted(range(len(bundles)), key=lambda i: (bundles[i].stream_id, bundles[i].start))
        rounds: list[list[int]] = []  # round k holds the k-th pending utterance of each stream
        seen: dict[str, int] = {}
        for i in order:
            k = seen.get(bundles[i].stream_id, 0)
            seen[bundles[i].stream_id] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
        for members in rounds:
            for i, event in zip(members, self._score_round([bundles[i] for i in members], contexts), strict=True):
                events[i] = event
        return [events[i] for i in range(len(bundles))]

    def _score_round(self, bundles: list[UtteranceBundle], contexts: StreamContexts) -> list[UtteranceEmotionEvent]:
        started = time.perf_counter()
        model, config = self.model, self.model.config
        floor = speaker_floor(model)
        for bundle in bundles:  # before the speaker statistics, whose width is the model's too
            check_audio_width(bundle, config)
        statistics = [contexts.speaker_z(b, floor) for b in bundles]  # (z, earlier utterances) per bundle
        speaker_z = [z for z, _ in statistics]
        weight = torch.tensor([speaker_view_weight(earlier) for _, earlier in statistics])
        inputs = collate(bundles, config, model.audio_adapter.encoder is not None, speaker_z).to(model.device)
        inputs = self.site.score(as_scored(inputs, config), bundles)
        fusing = self.face_map is not None
        has_face = inputs.face_mask.any(1) | inputs.frame_mask.any(1)
        if fusing:  # the face goes to its own expert, not to model weights never fitted to faces
            has_face = inputs.expression.sum(1) > 0
            inputs = _hidden(inputs, "face")
        memories = [contexts.get(b.stream_id, model) for b in bundles]
        memory = torch.stack([m for m, _ in memories])
        memory_mask = torch.stack([m for _, m in memories])
        # The explanation's occlusions (each modality the model reads hidden in turn) go through the model in the same pass.
        hidden = [m for m in self.counted if not (fusing and m == "face")]
        variants = [inputs, *(_hidden(inputs, m) for m in hidden)]
        count = len(bundles)
        everything = views_forward(model, ModelInputs.concat(variants), weight.repeat(len(variants)),
                                   torch.cat([memory] * len(variants)), torch.cat([memory_mask] * len(variants)))
        output = everything.select(slice(0, count))
        answers_of = {m: everything.probabilities[(k + 1) * count : (k + 2) * count] for k, m in enumerate(hidden)}
        if fusing:
            assert self.face_map is not None
            face = face_log_likelihood(inputs.expression, self.face_map.to(inputs.expression.device))

            def fused(k: int, probabilities: torch.Tensor) -> torch.Tensor:
                return fuse(probabilities, variants[k].has_audio | variants[k].has_text, face, has_face)

            probabilities_all = fused(0, output.probabilities)
            without = {m: fused(k + 1, answer) for k, (m, answer) in enumerate(answers_of.items())}
            without["face"] = output.probabilities  # the model's answer alone: exactly the voice expert's
        else:
            probabilities_all, without = output.probabilities, answers_of
        generated = self._generate(output, bundles)
        answers = read_answers(generated, bundles) if generated is not None else None
        model_seconds = (time.perf_counter() - started) / len(bundles)
        events = []
        for i, bundle in enumerate(bundles):
            contexts.put(bundle.stream_id, output.memory[i], output.memory_mask[i])
            probabilities = probabilities_all[i].float().cpu().numpy()
            best = int(probabilities.argmax())
            present = {"voice": bool(inputs.has_audio[i]), "face": bool(has_face[i]), "words": bool(inputs.has_text[i])}
            counted = {m for m, there in present.items() if there and m in self.counted}
            drops = {m: float(without[m][i, best]) for m in counted}
            explanation, cues = explain(config.labels[best], float(probabilities[best]), bundle, drops, config.label_set, counted)
            words: list[str] = []
            if answers is not None and (answer := answers[i]) is not None:  # grounded: cites only measured cues
                words = list(answer.words)
                explanation = answer.because if answer.because != NO_CUE else explanation
            valence, arousal = float(output.valence[i]), float(output.arousal[i])
            if fusing and has_face[i]:
                voice = output.probabilities[i].float().cpu().numpy()
                valence, arousal = fused_valence_arousal(valence, arousal, voice, probabilities, config.label_set)
            events.append(self._event(bundle, probabilities, (valence, arousal), explanation, cues, words, model_seconds))
        return events

    def _generate(self, output: EmotionOutput, bundles: list[UtteranceBundle]) -> list[str] | None:
        if self.model.language_model is None:
            return None
        from emostream.models.llm import generate  # noqa: PLC0415

        return generate(self.model, output, self.tokenizer, [b.transcript for b in bundles], self.max_new_tokens)

    def _event(self, bundle: UtteranceBundle, probabilities: np.ndarray, valence_arousal: tuple[float, float], explanation: str,
               cues: list, words: list[str], model_seconds: float) -> UtteranceEmotionEvent:
        labels = self.model.config.labels
        total = float(probabilities.sum()) or 1.0
        listeners = []
        for face in bundle.listeners:
            mean = face.expression.mean(axis=0)
            listeners.append(ListenerEmotion(face_track=face.track_id, label=FER7[int(mean.argmax())],
                                             probabilities={n: round(float(p), 4) for n, p in zip(FER7, mean, strict=True)}))
        return UtteranceEmotionEvent(
            stream_id=bundle.stream_id,
            utterance_id=bundle.utterance_id,
            speaker=Speaker(id=bundle.speaker_id, role=bundle.role, channel=bundle.channel,
                            face_track=bundle.face.track_id if bundle.face is not None else None),
            start=max(bundle.start, 0.0),
            end=max(bundle.end, 0.0),
            transcript=bundle.transcript or None,
            label=labels[int(probabilities.argmax())],
            probabilities={n: float(p) / total for n, p in zip(labels, probabilities, strict=True)},
            valence=float(np.clip(valence_arousal[0], -1, 1)),
            arousal=float(np.clip(valence_arousal[1], -1, 1)),
            open_vocabulary=words,
            explanation=explanation,
            cues=cues,
            listeners=listeners,
            model=self.info,
            timings=Timings(processing_seconds=sum(bundle.timings.values()) + model_seconds,
                            stages={**bundle.timings, "model": model_seconds}),
            produced_at=now_utc(),
        )


def default_scorer() -> EmotionScorer:
    """The embedded default model, ready to score."""
    return load_scorer(None)


def serve_scorer(serve: ServeSettings) -> EmotionScorer:
    """The scorer `serve` settings describe: its model, the name events report, when the site's statistics count."""
    return load_scorer(serve.model, serve.model_name, serve.site_after_utterances)


def load_scorer(model: str | Path | None, model_name: str | None = None, site_after: int = SITE_MIN_UTTERANCES) -> EmotionScorer:
    """A scorer for a model folder or preset name (None: the embedded default), named as events will report it;
    `site_after`: `serve.site_after_utterances`."""
    from emostream.models.llm import tokenizer_for  # noqa: PLC0415
    from emostream.models.presets import DEFAULT_CHECKPOINT, DEFAULT_NAME, checkpoint_version, load_model  # noqa: PLC0415

    loaded = load_model(model)
    version = checkpoint_version(model or DEFAULT_CHECKPOINT)
    name = model_name or (DEFAULT_NAME if model is None else f"emostream-{loaded.config.label_set}")
    tokenizer = tokenizer_for(loaded) if loaded.language_model is not None else None
    return EmotionScorer(loaded, name, version, tokenizer, site_after=site_after)
