"""Calls assembled from labelled clips, through the backfill path: how many utterances come out right.

Each call is a two-channel recording: an agent and a customer (two speakers of a labelled corpus) take turns,
`--turns` clips each, `--gap` seconds of silence between turns, each speaker silent on the other's channel.
With `--telephone` the whole call is also band-limited as a phone line carries it (resampled to 8 kHz and back,
through a G.711 mu-law round trip). The calls run through `emostream backfill DIR --channels agent,customer`'s
pipeline (real Ray: Ray Data perception, stream actors, the scorer), and each turn is matched to the events on its
channel that overlap it:
* right: the turn's longest-overlapping event has the turn's label;
* lost: no event overlaps the turn; split: more than one does;
* mean confidence (the matched events' top probability) against accuracy, and ECE over the matched events.

The speakers must be ones the evaluated model never trained on (`--speakers`). The embedded default trained on
every speaker of RAVDESS, TESS and EmoDB here, so it has none. Either evaluate a model exported by a run with
`data.validation_speakers` on those speakers, or give a recipe with `--folds`: its `calibration_folds` fold models
(`train.cross_validate`: the runs `emostream train` trains for the recipe's cv.json, trained here when missing,
reused when finished under the recipe's run_dir or `--runs`), each exported as `emostream train` exports (its
Whisper features, the temperature fitted on the folds' held-out predictions) and scored on calls of the speakers
of `--corpus` its fold held out; the folds' turns are pooled.
Figures are printed, never asserted. Run inside a loopback-only namespace:
    RAY_AUTH_MODE=disabled unshare -n sh -c 'ip link set lo up && exec nice -n 10 .venv/bin/python bench/calls.py \\
        --model DIR --speakers ravdess-15 ravdess-16 ravdess-17 ravdess-18 [--telephone]'
    RAY_AUTH_MODE=disabled unshare -n sh -c 'ip link set lo up && exec nice -n 10 .venv/bin/python bench/calls.py \\
        --folds deployments/train-lite.yaml --telephone'
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from emostream.contracts import UtteranceEmotionEvent
from emostream.labels import LABEL_SETS
from emostream.media.telephone import telephone_band
from emostream.training.datasets import Example
from emostream.training.metrics import expected_calibration_error
from emostream.training.train import CorpusConfig, read_corpus

RATE = 16000
ROLES = ("agent", "customer")
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
CORPORA = {"ravdess": "ravdess-speech-16k", "tess": "tess-16k", "emodb": "emodb-16k"}


@dataclass(frozen=True)
class Turn:
    """One clip placed in a call: on `role`'s channel from `start` to `end` (call time, s)."""

    role: str
    start: float
    end: float
    label: str
    key: str


@dataclass(frozen=True)
class TurnResult:
    turn: Turn
    events: int  # events on the turn's channel that overlap it
    label: str | None  # the longest-overlapping event's label (None: lost)
    confidence: float  # that event's top probability (NaN: lost)
    probabilities: tuple[float, ...] | None  # that event's, in the label set's order


def assemble_call(agent: Sequence[Example], customer: Sequence[Example], path: Path, gap: float = 0.8,
                  telephone: bool = False) -> list[Turn]:
    """Write a two-channel 16 kHz WAV of the two speakers' clips in alternation (agent first); its turns."""
    pieces: list[tuple[int, np.ndarray]] = []
    turns: list[Turn] = []
    cursor = gap
    for k in range(max(len(agent), len(customer))):
        for channel, clips in enumerate((agent, customer)):
            if k >= len(clips):
                continue
            audio, rate = sf.read(clips[k].media, dtype="float32", always_2d=True)
            if rate != RATE:
                raise ValueError(f"{clips[k].media}: {rate} Hz, the calls are assembled at {RATE} Hz")
            mono = audio.mean(axis=1)
            start = int(round(cursor * RATE))
            pieces.append((channel, np.pad(mono, (start, 0))))
            turns.append(Turn(ROLES[channel], start / RATE, (start + len(mono)) / RATE, str(clips[k].label), clips[k].key))
            cursor = (start + len(mono)) / RATE + gap
    call = np.zeros((2, int(round(cursor * RATE))), np.float32)
    for channel, placed in pieces:
        call[channel, : len(placed)] += placed
    if telephone:
        call = telephone_band(call)
    sf.write(path, np.clip(call, -1, 1).T, RATE, subtype="PCM_16")
    return turns


def match_turns(turns: Iterable[Turn], events: Iterable[UtteranceEmotionEvent], labels: Sequence[str]) -> list[TurnResult]:
    """Each turn with the events of its channel that overlap it, judged by the longest-overlapping one."""
    events = list(events)
    results = []
    for turn in turns:
        overlapping = [(min(e.end, turn.end) - max(e.start, turn.start), e) for e in events
                       if e.speaker.id == turn.role and min(e.end, turn.end) > max(e.start, turn.start)]
        if not overlapping:
            results.append(TurnResult(turn, 0, None, float("nan"), None))
            continue
        _, best = max(overlapping, key=lambda pair: pair[0])
        probabilities = tuple(best.probabilities.get(label, 0.0) for label in labels)
        results.append(TurnResult(turn, len(overlapping), best.label, max(probabilities), probabilities))
    return results


@dataclass(frozen=True)
class CallFigures:
    turns: int
    right: float  # share of all turns (lost ones count as wrong)
    lost: int
    split: int
    confidence: float  # mean top probability of the matched events
    accuracy_matched: float  # share right among the matched turns
    ece: float  # over the matched turns (NaN: none)


def call_figures(results: Sequence[TurnResult], labels: Sequence[str]) -> CallFigures:
    matched = [r for r in results if r.probabilities is not None]
    right = [r.label == r.turn.label for r in matched]
    ece = float("nan")
    truths = [labels.index(r.turn.label) if r.turn.label in labels else -1 for r in matched]
    if matched and min(truths) >= 0:
        ece = expected_calibration_error(np.array([r.probabilities for r in matched]), np.array(truths))
    return CallFigures(
        turns=len(results), right=sum(right) / len(results) if results else float("nan"),
        lost=len(results) - len(matched), split=sum(r.events > 1 for r in results),
        confidence=float(np.mean([r.confidence for r in matched])) if matched else float("nan"),
        accuracy_matched=float(np.mean(right)) if matched else float("nan"), ece=ece,
    )


Call = tuple[list[Example], list[Example]]  # the agent's clips, the customer's


def plan_calls(examples: Sequence[Example], speakers: Sequence[str], turns: int, seed: int = 0) -> list[Call]:
    """Speakers paired in the order given (agent, customer), each pair one call of `turns` random clips each."""
    rng = np.random.default_rng(seed)
    by_speaker = {s: [e for e in examples if e.speaker == s] for s in speakers}
    if missing := [s for s, clips in by_speaker.items() if len(clips) < turns]:
        raise ValueError(f"speakers with fewer than {turns} labelled clips: {', '.join(missing)}")
    if len(speakers) < 2 or len(speakers) % 2:
        raise ValueError(f"calls pair speakers: give an even number of them (at least 2), not {len(speakers)}")
    pick = {s: [clips[i] for i in rng.choice(len(clips), turns, replace=False)] for s, clips in by_speaker.items()}
    return [(pick[speakers[i]], pick[speakers[i + 1]]) for i in range(0, len(speakers), 2)]


def run_calls(calls: Sequence[Call], folder: Path, model: str | None, gap: float,
              telephone: bool) -> tuple[list[TurnResult], list[str]]:
    """Assemble the calls in `folder`, run them through backfill (inside an initialised Ray), match the turns."""
    from emostream.live.backfill import backfill, records_from_files
    from emostream.models.presets import load_model
    from emostream.settings import load_settings

    settings = load_settings(serve={"model": model} if model else {})
    labels = list(load_model(model).config.labels)
    paths, turns = [], {}
    for k, (agent, customer) in enumerate(calls):
        path = folder / f"call-{k + 1}.wav"
        turns[path.stem] = assemble_call(agent, customer, path, gap, telephone)
        paths.append(path)
    events: dict[str, list[UtteranceEmotionEvent]] = {stem: [] for stem in turns}
    for output in backfill(records_from_files(paths, settings, ROLES), settings):
        if isinstance(output, UtteranceEmotionEvent):
            events[output.stream_id].append(output)
    results = [r for stem, call in turns.items() for r in match_turns(call, events[stem], labels)]
    return results, labels


def fold_models(recipe: Path, runs: Path | None, cache_root: Path | None, folder: Path, corpus: str) -> list[tuple[str, list[str]]]:
    """Per calibration fold of `recipe`: its fold model, exported into `folder` as `emostream train` exports a model,
    and the speakers of `corpus` the fold held out (inside an initialised Ray)."""
    from emostream.training.train import export_fold_models, load_train_config

    config = load_train_config(recipe)
    config = config.model_copy(update={"run_dir": runs or config.run_dir, "feature_cache": cache_root or config.feature_cache})
    _, _, folds = export_fold_models(config, folder)
    exported = [(str(path), [s for s in fold if s.startswith(f"{corpus}-")]) for path, fold in folds]
    print(f"# {recipe}: {len(exported)} fold models of runs {config.run_dir}/{config.name}-fold-*")
    return exported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the embedded default, which has no held-out speakers here)")
    parser.add_argument("--speakers", nargs="+", help="speakers the model never trained on, paired into calls")
    parser.add_argument("--folds", type=Path, metavar="CONFIG.yaml",
                        help="instead of --model and --speakers: the recipe's fold models, each on its held-out speakers")
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="ravdess", help="with --folds: whose speakers call")
    parser.add_argument("--runs", type=Path, help="with --folds: the fold runs' folder (default: the recipe's run_dir)")
    parser.add_argument("--cache", type=Path, help="with --folds: the feature cache (default: the recipe's feature_cache)")
    parser.add_argument("--turns", type=int, default=12, help="clips per speaker and call")
    parser.add_argument("--gap", type=float, default=0.8, help="seconds of silence between turns")
    parser.add_argument("--telephone", action="store_true", help="also run the calls band-limited to 8 kHz with mu-law")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    if (args.folds is None) == (args.speakers is None):
        parser.error("give --speakers (with --model) or --folds CONFIG.yaml")
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as models:
        plan = (fold_models(args.folds, args.runs, args.cache, Path(models), args.corpus) if args.folds
                else [(args.model, args.speakers)])
        speakers = [s for _, fold in plan for s in fold]
        corpora = sorted({s.split("-")[0] for s in speakers})
        labels = LABEL_SETS["ravdess8"]
        examples = [e for name in corpora
                    for e in read_corpus(CorpusConfig(dataset=name, path=args.data / CORPORA[name]), "ravdess8") if e.label in labels]
        calls = [(model, plan_calls(examples, fold, args.turns)) for model, fold in plan]
        print(f"# calls: {sum(len(c) for _, c in calls)} of {2 * args.turns} turns ({', '.join(speakers)}), {args.gap} s "
              f"gaps, model {args.folds or args.model or 'default'}")
        for telephone in (False, True) if args.telephone else (False,):
            results: list[TurnResult] = []
            for model, fold_calls in calls:
                with tempfile.TemporaryDirectory() as tmp:
                    scored, labels_used = run_calls(fold_calls, Path(tmp), model, args.gap, telephone)
                results += scored
            f = call_figures(results, labels_used)
            print(f"{'8 kHz mu-law' if telephone else '16 kHz':>12}: {f.right:.1%} of {f.turns} turns right, {f.lost} lost, "
                  f"{f.split} split; matched: accuracy {f.accuracy_matched:.1%}, mean confidence {f.confidence:.1%}, ECE {f.ece:.3f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
