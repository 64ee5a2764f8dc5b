"""`emostream evaluate`: a model against labelled examples of speakers it never trained on.

Two normalisation regimes are reported, because they differ: "batch" uses each
speaker's statistics over all their utterances (a finished call, as backfill
sees it); "live" feeds each speaker's utterances one by one in a fixed random
order through the scorer's own running statistics, as the live job does (the
first two utterances of each speaker have none, and the next ones' answers lean
on them only as they grow: `score.speaker_view_weight`; the answer without them
is standardised over every utterance scored so far once there are enough:
`score.SiteStatistics`).

A clip is one answer whatever it was cut into: the live path may cut a clip into
several utterances (`features.Augment.live_cut`), and the clip's answer is the
mean of theirs (`per_clip`), as a listener would judge the whole recording.
"""

from __future__ import annotations

import numpy as np
import torch

from emostream.models.model import ScoringModel
from emostream.models.score import (
    SPEAKER_VIEW_PRIOR,
    SiteStatistics,
    StreamContexts,
    as_scored,
    speaker_floor,
    speaker_view_weight,
    views_forward,
)
from emostream.training.data import Sample, batch
from emostream.training.metrics import Report, evaluate_predictions

BATCH = 64


def site_of(model: ScoringModel, samples: list[Sample]) -> SiteStatistics:
    """The site statistics of a scorer that has scored every one of `samples` (one line, room or corpus), known as
    the scorer would know them (from `SITE_MIN_UTTERANCES` on)."""
    site = SiteStatistics(model)
    site.add([s.bundle for s in samples])
    return site


@torch.inference_mode()
def predict(model: ScoringModel, samples: list[Sample], prior: float = SPEAKER_VIEW_PRIOR,
            site: SiteStatistics | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, valence and arousal for samples, with the speaker statistics they carry (whole-speaker ones
    from `samples_from_rows`, a call's from `call_statistics`), scored as the scorer scores (`views_forward`, with
    `speaker_view_weight(count, prior)`; the view without speaker statistics standardised over `site`, when given,
    as a scorer standardises it once it has scored enough of a site: `SiteStatistics`)."""
    model.eval()
    probabilities, valence, arousal = [], [], []
    for first in range(0, len(samples), BATCH):
        part = samples[first : first + BATCH]
        inputs, _ = batch(part, model.config)
        inputs = as_scored(inputs, model.config)
        weight = torch.tensor([1.0 if s.speaker_count is None else speaker_view_weight(s.speaker_count, prior) for s in part])
        output = views_forward(model, (site.standardise(inputs) if site is not None else inputs).to(model.device), weight)
        probabilities.append(output.probabilities.cpu().numpy())
        valence.append(output.valence.cpu().numpy())
        arousal.append(output.arousal.cpu().numpy())
    if not probabilities:
        return np.zeros((0, len(model.config.labels))), np.zeros(0), np.zeros(0)
    return np.concatenate(probabilities), np.concatenate(valence), np.concatenate(arousal)


@torch.inference_mode()
def predict_live(model: ScoringModel, samples: list[Sample], seed: int = 0) -> np.ndarray:
    """Probabilities when each speaker's utterances arrive one at a time, as one scorer scores them: the running
    speaker statistics, and the site's (`SiteStatistics`, every utterance scored so far) once there are enough."""
    model.eval()
    contexts, site = StreamContexts(), SiteStatistics(model)
    floor = speaker_floor(model)
    order = np.random.default_rng(seed).permutation(len(samples))
    probabilities = np.zeros((len(samples), len(model.config.labels)), np.float32)
    for i in order:
        sample = samples[i]
        z, earlier = contexts.speaker_z(sample.bundle, floor)
        weight = torch.tensor([speaker_view_weight(earlier)])
        inputs, _ = batch([Sample(**{**sample.__dict__, "speaker_z": z})], model.config)
        inputs = site.score(as_scored(inputs, model.config), [sample.bundle])
        probabilities[i] = views_forward(model, inputs.to(model.device), weight).probabilities[0].cpu().numpy()
    return probabilities


def per_clip(samples: list[Sample], *answers: np.ndarray) -> tuple[list[Sample], list[np.ndarray]]:
    """One answer per clip (example key and variant): the mean of its utterances' answers (rows of each array in
    `answers`, aligned with `samples`). Returns each clip's first sample (its labels) and the pooled arrays."""
    clips: dict[tuple[str, int], list[int]] = {}
    for index, sample in enumerate(samples):
        clips.setdefault((sample.key, sample.variant), []).append(index)
    if not clips:
        return [], [answer[:0] for answer in answers]
    firsts = [samples[indices[0]] for indices in clips.values()]
    return firsts, [np.stack([answer[indices].mean(axis=0) for indices in clips.values()]) for answer in answers]


def evaluate_samples(model: ScoringModel, samples: list[Sample], labels: list[str], live: bool = False) -> Report:
    """Recognition metrics over the labelled clips (WAR, UAR, weighted F1, ECE, confusion, valence/arousal MSE), each
    clip's answer the mean of its utterances' (`per_clip`)."""
    labelled = [s for s in samples if s.label >= 0]
    if live:
        clips, (probabilities,) = per_clip(labelled, predict_live(model, labelled))
        valence = arousal = None
    else:
        clips, (probabilities, valence, arousal) = per_clip(labelled, *predict(model, labelled))
    return evaluate_predictions(
        [labels[c.label] for c in clips], [labels[int(i)] for i in probabilities.argmax(axis=1)], tuple(labels),
        valence_truth=[c.valence for c in clips] if valence is not None else None,
        valence_pred=list(valence) if valence is not None else None,
        arousal_truth=[c.arousal for c in clips] if arousal is not None else None,
        arousal_pred=list(arousal) if arousal is not None else None,
        probabilities=probabilities,
    )
