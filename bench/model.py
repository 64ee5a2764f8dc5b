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

Describer (`--describer mllm` or a checkpoint folder with a language model, e.g. a fine-tuned mllm export): the LLM
writing each utterance's answer (models/instructions.py) after the forward pass, greedy, at most
--max-new-tokens tokens, audio+text utterances at batch 1 and 8; utterances/s per core (CPU time) and wall, and
the tokens written per utterance (an untrained model's answers have no set length: measure a trained export).
"""

from __future__ import annotations

import argparse
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
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for tests.model_helpers

from emostream.models.fusion import face_log_likelihood, face_map, fuse  # noqa: E402
from emostream.models.inputs import collate  # noqa: E402
from emostream.models.llm import generate, tokenizer_for  # noqa: E402
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


def describe(model: EmotionModel, batches: list[list[UtteranceBundle]], max_new_tokens: int) -> tuple[float, float, float]:
    """CPU and wall seconds for the forward pass and the LLM's answer of every utterance, and tokens written per utterance."""
    tokenizer = tokenizer_for(model)

    @torch.inference_mode()
    def run(batch: list[UtteranceBundle]) -> list[str]:
        return generate(model, model(collate(batch, model.config)), tokenizer, [b.transcript for b in batch], max_new_tokens)

    run(batches[0])  # warm up
    written: list[str] = []
    cpu, wall = time_pass(lambda: [written.extend(run(batch)) for batch in batches])
    tokens = sum(len(tokenizer.encode(text, add_special_tokens=False)) for text in written) / len(written)
    return cpu, wall, tokens


def report_describer(model: EmotionModel, count: int, max_new_tokens: int, analysis_fps: float, seed: int) -> None:
    print(f"describer: utterances/s per core (CPU time) and wall, forward + greedy answer (<= {max_new_tokens} tokens), "
          f"{count} audio+text utterances")
    header = f"{'batch':>6}{'utt/s (CPU)':>14}{'utt/s (wall)':>14}{'tokens/utt':>12}{'tokens/s':>10}"
    print(header)
    print("-" * len(header))
    for batch in DESCRIBER_BATCHES:
        batches = utterances(count, batch, MIXES["audio+text"], analysis_fps, seed, model.config.audio_embedding)
        cpu, wall, tokens = describe(model, batches, max_new_tokens)
        print(f"{batch:>6}{count / cpu:>14.3f}{count / wall:>14.3f}{tokens:>12.1f}{count * tokens / cpu:>10.1f}", flush=True)


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
    parser.add_argument("--describer", help="also measure the LLM answer: 'mllm' (fresh adapters) or a checkpoint folder with an LLM")
    parser.add_argument("--describer-utterances", type=int, default=16, help="utterances per describer measurement (a multiple of 8)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the describer's longest answer, in tokens")
    args = parser.parse_args()
    if args.runs < 1 or args.utterances < max(BATCHES) or args.utterances % max(BATCHES):
        parser.error(f"--runs must be at least 1 and --utterances a positive multiple of {max(BATCHES)}")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    cv2.setNumThreads(1)
    hf_logging.disable_progress_bar()
    pools = one_thread()
    torch.manual_seed(args.seed)
    models = {name: (load_model(None) if name == "default" else build_preset(name)).eval() for name in args.presets}
    print(f"# model bench: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread "
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

    if args.describer:
        describer = load_model(args.describer).eval()
        if not isinstance(describer, EmotionModel) or describer.language_model is None:
            parser.error(f"--describer {args.describer}: not a model with a language model (try mllm)")
        print()
        report_describer(describer, args.describer_utterances, args.max_new_tokens, args.analysis_fps, args.seed)

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
