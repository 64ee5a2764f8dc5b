"""Emotion model cost on CPU: parameters, checkpoint size, and utterances per second per core.

Perception is left out: the inputs are utterance bundles with random features of the right shapes
(tests/model_helpers.py random_bundle: Whisper and MiniLM embeddings, prosody, FER features and
probabilities, face geometry, 128x72 thumbnails), as if perception had already run. Utterances last
1.5-5 s, their face analysed at faces.analysis_fps (15/s; each preset keeps at most max_face_frames),
with 3 thumbnails. Two modality mixes:
  all          voice, face, thumbnails and transcript (a video call)
  audio+text   voice and transcript only (a phone call: no face, no thumbnails)
A batch holds one utterance from each of `batch` streams, each stream's memory full (streams in steady
state); weights are a preset's fresh random ones (the cost does not depend on their values), the default's its own.

Measured per preset (tiny, lite, and "default": the embedded trained checkpoint, whatever it holds, e.g. an
ensemble of lite models), mix and batch size (1, 16), in eval mode under torch.inference_mode():
  forward          EmotionModel.forward on batches collated beforehand
  collate+fwd      collate() + EmotionModel.forward
  score            EmotionScorer.score, the one scoring entry point: collate, the forward pass, the occlusion
                   passes (each modality that counts hidden in turn) for the explanation, the face expert's fusion
                   (models/fusion.py), cues, event building
Faces: for each preset, scoring's cost per utterance with faces (mix "all", batch 1 and 16) and, inside it, the face
expert's own part: the per-utterance face evidence (perception/utterance.py face_evidence) and the fusion (fuse).
Everything runs on one thread (torch, OpenCV, and every BLAS/OpenMP pool through threadpoolctl), so
utterances/s are per core; they are CPU-time figures (the wall clock is checked against them). Every
measurement is warmed up first; the median over runs is printed. Target: lite >= 200 utterances/s per
core at batch 16 (model forward). Also printed: parameters per top-level block and the size of a
save_pretrained checkpoint. Timings are printed, never asserted. Run: .venv/bin/python bench/model.py [--runs 5]

Before/after (issue 19): --compare-checkpoint PATH also measures the emotion model at PATH as preset "before" (e.g.
the previous default, exported from git into a temporary folder) and prints scoring per utterance of "default"
against it, as after/before ratios.

Describer (`--describer mllm` or a checkpoint folder with a language model, e.g. a fine-tuned mllm export): the
served call, models/llm.py describe() as the Serve app's Describer makes it: the forward pass, the classification
head's label written as the answer's start ("emotion: <label>;"), the LM writing the rest greedily (at most
--max-new-tokens tokens), the answer parsed and grounded; audio+text utterances at batch 1 and 8; utterances/s per
core (CPU time) and wall, the tokens the LM wrote per utterance and the answers that parsed (an untrained model's
answers have no set length: measure a trained export). Then the live default's cost with describe off: the default's
EmotionScorer.score per utterance just before the describer is loaded into the process and just after, in the same
run (describe off, the Serve app makes exactly this call whether or not serve.describer is set; in the app the
describer is its own deployment, so sharing this process with it is the harder case).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for tests.model_helpers

from emostream.models.fusion import face_log_likelihood, face_map, fuse  # noqa: E402
from emostream.models.inputs import collate  # noqa: E402
from emostream.models.llm import describe, load_describer  # noqa: E402
from emostream.models.model import EmotionModel, ScoringModel  # noqa: E402
from emostream.models.presets import build_preset, load_model, preset_names  # noqa: E402
from emostream.models.score import EmotionScorer, StreamContexts  # noqa: E402
from emostream.perception.utterance import UtteranceBundle  # noqa: E402
from emostream.settings import FaceSettings  # noqa: E402
from tests.model_helpers import random_bundle  # noqa: E402

TARGET = 200.0  # utterances/s per core for lite's forward pass at batch 16
TARGET_PRESET, TARGET_BATCH = "lite", 16
BATCHES = (1, 16)
DESCRIBER_BATCHES = (1, 8)
MIXES = {"all": {}, "audio+text": {"face": False, "frames": False}}  # random_bundle keyword arguments
MODES = ("forward", "collate+fwd", "score")
BLOCKS = {  # top-level blocks whose parameters are counted; the rest goes to "other"
    "visual_encoder": ("visual_encoder",),
    "qformer": ("qformer",),
    "audio_adapter": ("audio_adapter",),
    "text_adapter": ("text_adapter",),
    "fusion": ("fusion",),
    "heads": ("emotion_head", "valence_arousal_head"),
}


# -- size -----------------------------------------------------------------------------------------


def parameter_counts(model: ScoringModel) -> dict[str, int]:
    """Parameters per block (BLOCKS), "other" (cls token, modality embedding, final norm) and "total";
    an ensemble's are summed over its members."""
    counts = {block: 0 for block in BLOCKS} | {"other": 0}
    owner = {child: block for block, children in BLOCKS.items() for child in children}
    for name, parameter in model.named_parameters():
        block = name.split(".")[2] if name.startswith("members.") else name.split(".")[0]
        counts[owner.get(block, "other")] += parameter.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def checkpoint_megabytes(model: ScoringModel) -> tuple[float, str]:
    """Size of save_pretrained's folder in MB (10^6 bytes), and its files."""
    with tempfile.TemporaryDirectory(prefix="emostream-bench-") as tmp:
        model.save_pretrained(tmp)
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        return sum(p.stat().st_size for p in files) / 1e6, ", ".join(p.name for p in files)


# -- inputs ---------------------------------------------------------------------------------------


def utterances(count: int, batch: int, mix: dict[str, bool], analysis_fps: float, seed: int,
               audio_values: int = 768) -> list[list[UtteranceBundle]]:
    """`count` utterances in batches of `batch`, one utterance per stream in each batch, streams advancing in time;
    `audio_values` Whisper values each (the model's config.audio_embedding: 3,840 for the every-layer default)."""
    rng = np.random.default_rng(seed)
    bundles = []
    for i in range(count):
        seconds = float(rng.uniform(1.5, 5.0))
        bundle = random_bundle(stream=f"stream-{i % batch}", start=(i // batch) * 6.0, seconds=seconds, seed=seed + i,
                               face_frames=max(1, round(seconds * analysis_fps)), **mix)
        if bundle.audio_embedding is not None and audio_values != bundle.audio_embedding.size:
            bundle = replace(bundle, audio_embedding=rng.normal(0, 1, audio_values).astype(np.float32))
        bundles.append(bundle)
    return [bundles[i : i + batch] for i in range(0, count, batch)]


def full_memory(model: ScoringModel, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A memory of earlier utterances in every slot, as a stream in steady state has."""
    generator = torch.Generator().manual_seed(seed)
    empty, mask = model.empty_memory(batch)  # an ensemble's has a member axis
    return torch.randn(empty.shape, generator=generator) * 0.1, torch.ones_like(mask)


def filled_contexts(model: ScoringModel, batches: list[list[UtteranceBundle]], seed: int) -> StreamContexts:
    contexts = StreamContexts()
    memory, mask = full_memory(model, 1, seed)
    for bundle in (b for batch in batches for b in batch):
        contexts.put(bundle.stream_id, memory[0], mask[0])
    return contexts


# -- timing ---------------------------------------------------------------------------------------


def time_pass(work: Callable[[], object]) -> tuple[float, float]:
    """CPU and wall seconds of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(work: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median CPU and wall seconds of `work` over `runs` timed calls, after one untimed call."""
    work()  # warm up
    timings = [time_pass(work) for _ in range(runs)]
    return statistics.median(t[0] for t in timings), statistics.median(t[1] for t in timings)


def passes(model: ScoringModel, batches: list[list[UtteranceBundle]], seed: int) -> dict[str, Callable[[], object]]:
    """One call of each mode over every batch."""
    config = model.config
    memories = [full_memory(model, len(batch), seed + k) for k, batch in enumerate(batches)]
    collated = [collate(batch, config) for batch in batches]
    scorer = EmotionScorer(model, "bench", "bench")
    contexts = filled_contexts(model, batches, seed)

    @torch.inference_mode()
    def forward() -> None:
        for inputs, (memory, mask) in zip(collated, memories, strict=True):
            model(inputs, memory, mask)

    @torch.inference_mode()
    def collate_forward() -> None:
        for batch, (memory, mask) in zip(batches, memories, strict=True):
            model(collate(batch, config), memory, mask)

    def score() -> None:
        for batch in batches:
            scorer.score(batch, contexts)

    return {"forward": forward, "collate+fwd": collate_forward, "score": score}


def face_expert_pass(model: ScoringModel, batches: list[list[UtteranceBundle]]) -> Callable[[], object] | None:
    """The face expert's part of scoring: each utterance's face evidence, and the fusion with the model's answer
    (None when the model reads faces itself and no face expert joins)."""
    matrix = face_map(model.config)
    if matrix is None:
        return None
    labels = len(model.config.labels)
    answers = [torch.softmax(torch.randn(len(batch), labels), dim=-1) for batch in batches]

    @torch.inference_mode()
    def work() -> None:
        for batch, answer in zip(batches, answers, strict=True):
            evidence = [b.face_evidence for b in batch]
            expression = torch.tensor(np.stack([e.probabilities if e is not None else np.zeros(7, np.float32) for e in evidence]))
            present = torch.tensor([e is not None for e in evidence])
            fuse(answer, torch.ones(len(batch), dtype=torch.bool), face_log_likelihood(expression, matrix), present)

    return work


def report_faces(models: dict[str, ScoringModel], results: dict[tuple[str, str, int], dict[str, float]], count: int,
                 analysis_fps: float, seed: int, runs: int) -> None:
    print("faces: scoring's cost per utterance with faces (mix all), and the face expert's part of it (evidence + fusion)")
    header = f"{'preset':<8}{'batch':>6}{'score ms/utt':>14}{'face expert ms/utt':>20}{'no faces ms/utt':>17}"
    print(header)
    print("-" * len(header))
    for name, model in models.items():
        for batch in BATCHES:
            work = face_expert_pass(model, utterances(count, batch, MIXES["all"], analysis_fps, seed))
            expert = f"{1000 * measure(work, runs)[0] / count:>20.3f}" if work is not None else f"{'(reads faces)':>20}"
            print(f"{name:<8}{batch:>6}{1000 / results[name, 'all', batch]['score']:>14.2f}{expert}"
                  f"{1000 / results[name, 'audio+text', batch]['score']:>17.2f}", flush=True)


def one_thread() -> str:
    """Limit every loaded BLAS and OpenMP pool to one thread; returns what they had before."""
    before = ", ".join(sorted({f"{p['prefix']} {p['num_threads']}" for p in threadpool_info()}))
    threadpool_limits(1)
    return before


def served_answers(model: EmotionModel, tokenizer: PreTrainedTokenizerBase, batches: list[list[UtteranceBundle]],
                   max_new_tokens: int) -> tuple[float, float, float, int]:
    """CPU and wall seconds of the served call (llm.describe) over every batch, after one untimed batch; the tokens
    the LM wrote per utterance (counted on what its generate returns) and how many answers parsed."""
    assert model.language_model is not None
    language_model, written = model.language_model, []
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    generate = language_model.generate

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        rows = generate(*args, **kwargs)
        written.extend(next((i + 1 for i, t in enumerate(row) if t in stops), len(row)) for row in rows.tolist())
        return rows

    language_model.generate = counting  # the bench's own instance: counts, changes nothing
    try:
        describe(model, tokenizer, batches[0], max_new_tokens)  # warm up
        written.clear()
        answers: list[object] = []
        cpu, wall = time_pass(lambda: [answers.extend(describe(model, tokenizer, batch, max_new_tokens)) for batch in batches])
    finally:
        language_model.generate = generate
    return cpu, wall, sum(written) / len(written), sum(a is not None for a in answers)


def report_describer(model: EmotionModel, tokenizer: PreTrainedTokenizerBase, count: int, max_new_tokens: int,
                     analysis_fps: float, seed: int) -> None:
    print(f"describer: utterances/s per core (CPU time) and wall, the served call (llm.describe: forward, the classifier's "
          f"label as the answer's start, the LM writes the rest, <= {max_new_tokens} tokens), {count} audio+text utterances")
    header = f"{'batch':>6}{'utt/s (CPU)':>14}{'utt/s (wall)':>14}{'s/utt (CPU)':>13}{'tokens/utt':>12}{'tokens/s':>10}{'parsed':>9}"
    print(header)
    print("-" * len(header))
    for batch in DESCRIBER_BATCHES:
        batches = utterances(count, batch, MIXES["audio+text"], analysis_fps, seed, model.config.audio_embedding)
        cpu, wall, tokens, parsed = served_answers(model, tokenizer, batches, max_new_tokens)
        print(f"{batch:>6}{count / cpu:>14.3f}{count / wall:>14.3f}{cpu / count:>13.2f}{tokens:>12.1f}{count * tokens / cpu:>10.1f}"
              f"{f'{parsed}/{count}':>9}", flush=True)


def scoring_ms(model: ScoringModel, count: int, analysis_fps: float, seed: int, runs: int) -> dict[tuple[str, int], float]:
    """EmotionScorer.score's CPU ms per utterance, per mix and batch (median over runs)."""
    return {(mix, batch): 1000 * measure(passes(model, utterances(count, batch, options, analysis_fps, seed,
                                                                    model.config.audio_embedding), seed)["score"], runs)[0] / count
            for mix, options in MIXES.items() for batch in BATCHES}


def report_ratios(title: str, names: tuple[str, str], before: dict[tuple[str, int], float],
                  after: dict[tuple[str, int], float]) -> None:
    print(title)
    header = f"{'mix':<12}{'batch':>6}{names[0] + ' ms/utt':>22}{names[1] + ' ms/utt':>22}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for mix, batch in before:
        print(f"{mix:<12}{batch:>6}{before[mix, batch]:>22.2f}{after[mix, batch]:>22.2f}{after[mix, batch] / before[mix, batch]:>8.2f}")


# -- output ---------------------------------------------------------------------------------------


def report_sizes(models: dict[str, ScoringModel]) -> None:
    columns = (*BLOCKS, "other", "total")
    sizes = {name: (parameter_counts(model), *checkpoint_megabytes(model)) for name, model in models.items()}  # before printing:
    # the first save_pretrained imports DeepSpeed (when installed), which logs a line to stdout
    print("parameters per top-level block (other = cls token, modality embedding, final norm); checkpoint = save_pretrained folder")
    header = f"{'preset':<8}" + "".join(f"{c:>16}" for c in columns) + f"{'checkpoint MB':>15}  files"
    print(header)
    print("-" * len(header))
    for name, (counts, megabytes, files) in sizes.items():
        print(f"{name:<8}" + "".join(f"{counts[c]:>16,}" for c in columns) + f"{megabytes:>15.2f}  {files}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed passes per measurement; the median is printed")
    parser.add_argument("--utterances", type=int, default=64, help="utterances per pass (a multiple of 16)")
    parser.add_argument("--analysis-fps", type=float, default=FaceSettings().analysis_fps, help="analysed face frames per second")
    parser.add_argument("--presets", nargs="+", default=["tiny", "lite", "default"], choices=[*preset_names(), "default"],
                        help="presets to measure (default: the embedded trained checkpoint)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and features")
    parser.add_argument("--compare-checkpoint", type=Path, metavar="PATH",
                        help="also measure the emotion model at PATH as 'before' (e.g. the previous default, exported from "
                             "git into a temporary folder) and print default/before scoring ratios (needs 'default' in --presets)")
    parser.add_argument("--describer", help="also measure the LLM answer: 'mllm' (fresh adapters) or a checkpoint folder with an LLM")
    parser.add_argument("--describer-utterances", type=int, default=16, help="utterances per describer measurement (a multiple of 8)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the describer's longest answer, in tokens")
    args = parser.parse_args()
    if args.runs < 1 or args.utterances < max(BATCHES) or args.utterances % max(BATCHES):
        parser.error(f"--runs must be at least 1 and --utterances a positive multiple of {max(BATCHES)}")
    if args.compare_checkpoint and "default" not in args.presets:
        parser.error("--compare-checkpoint compares against the default: keep 'default' in --presets")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    cv2.setNumThreads(1)
    hf_logging.disable_progress_bar()
    pools = one_thread()
    torch.manual_seed(args.seed)
    models = {name: (load_model(None) if name == "default" else build_preset(name)).eval() for name in args.presets}
    if args.compare_checkpoint:
        models["before"] = load_model(args.compare_checkpoint).eval()
    print(f"# model bench: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}, load average at start {os.getloadavg()[0]:.1f} "
          f"(thread pools by default: {pools}), median of {args.runs} runs of {args.utterances} utterances, "
          f"faces at {args.analysis_fps:g} analysed frames/s, random weights and features")
    print()
    report_sizes(models)
    print()

    results: dict[tuple[str, str, int], dict[str, float]] = {}
    cpu_total = wall_total = 0.0
    print("utterances/s per core (CPU time), median over runs")
    header = f"{'preset':<8}{'mix':<12}{'batch':>6}" + "".join(f"{m:>14}" for m in MODES) + f"{'score ms/utt':>14}"
    print(header)
    print("-" * len(header))
    for name, model in models.items():
        for mix, options in MIXES.items():
            for batch in BATCHES:
                batches = utterances(args.utterances, batch, options, args.analysis_fps, args.seed, model.config.audio_embedding)
                rates = {}
                for mode, work in passes(model, batches, args.seed).items():
                    cpu, wall = measure(work, args.runs)
                    cpu_total, wall_total = cpu_total + cpu, wall_total + wall
                    rates[mode] = args.utterances / cpu
                results[name, mix, batch] = rates
                print(f"{name:<8}{mix:<12}{batch:>6}" + "".join(f"{rates[m]:>14.0f}" for m in MODES)
                      + f"{1000 / rates['score']:>14.2f}", flush=True)
    print(f"(wall/CPU over all timings: {wall_total / cpu_total:.2f}; 1.00 = one core, no waiting)")
    print()
    report_faces(models, results, args.utterances, args.analysis_fps, args.seed, args.runs)

    if args.compare_checkpoint:
        print()
        before = {(mix, batch): 1000 / results["before", mix, batch]["score"] for mix in MIXES for batch in BATCHES}
        after = {(mix, batch): 1000 / results["default", mix, batch]["score"] for mix in MIXES for batch in BATCHES}
        report_ratios(f"before/after: EmotionScorer.score CPU ms per utterance, before = {args.compare_checkpoint}, "
                      "after = the default (ratio = after/before)", ("before", "after"), before, after)

    if args.describer:
        live_default = load_model(None).eval()
        without = scoring_ms(live_default, args.utterances, args.analysis_fps, args.seed, args.runs)
        describer, tokenizer = load_describer(args.describer)  # as the Serve app's Describer loads it
        with_describer = scoring_ms(live_default, args.utterances, args.analysis_fps, args.seed, args.runs)
        print()
        report_describer(describer, tokenizer, args.describer_utterances, args.max_new_tokens, args.analysis_fps, args.seed)
        print()
        report_ratios("describe off: the default's EmotionScorer.score CPU ms per utterance before and after the describer "
                      f"was loaded into this process (load average now {os.getloadavg()[0]:.1f})",
                      ("without", "with describer"), without, with_describer)
        print()

    if TARGET_PRESET in models:
        print()
        for mix in MIXES:
            rates = results[TARGET_PRESET, mix, TARGET_BATCH]
            verdict = "meets" if rates["forward"] >= TARGET else "MISSES"
            print(f"{TARGET_PRESET}, {mix}, batch {TARGET_BATCH}: forward {rates['forward']:.0f} utterances/s per core -> {verdict} "
                  f"the target of >= {TARGET:g}; collate+forward {rates['collate+fwd']:.0f} "
                  f"({'meets' if rates['collate+fwd'] >= TARGET else 'misses'}); "
                  f"EmotionScorer.score {rates['score']:.0f} ({'meets' if rates['score'] >= TARGET else 'misses'})")


if __name__ == "__main__":
    main()
