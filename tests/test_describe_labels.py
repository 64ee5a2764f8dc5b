"""The describer's label: the classifier's, written into the answer's start (the LM writes the rest); and, for the
evaluation, the LM's own likelihood of each label word after "emotion:", computed once per prompt and continued from
its cache, which equals scoring each whole answer start on its own."""

from __future__ import annotations

from pathlib import Path

import torch

from emostream.models.inputs import collate
from emostream.models.llm import IGNORE, label_log_likelihoods, splice, tokenizer_for
from emostream.models.model import EmotionModel
from emostream.models.presets import tiny_llm
from tests.model_helpers import random_bundle


def test_label_likelihoods_from_the_cache_equal_each_label_scored_in_full() -> None:
    torch.manual_seed(0)
    model = tiny_llm().eval()
    assert model.language_model is not None
    tokenizer = tokenizer_for(model)
    bundles = [random_bundle(seed=1), random_bundle(seed=2, face=False, frames=False)]
    transcripts = ["I waited an hour", None]
    with torch.no_grad():
        output = model(collate(bundles, model.config))
        fast = label_log_likelihoods(model, output, tokenizer, transcripts)
        assert fast.shape == (2, len(model.config.labels))
        for j, label in enumerate(model.config.labels):
            inputs, attention, labels = splice(model, output, tokenizer, transcripts, [f"emotion: {label};"] * 2)
            logits = model.language_model(inputs_embeds=inputs, attention_mask=attention).logits
            log_p = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = labels[:, 1:]
            # the label's own tokens: the target's, less "emotion:" before them and the end-of-text token after
            ending = len(tokenizer.encode(f" {label};", add_special_tokens=False))
            for i in range(2):
                positions = (targets[i] != IGNORE).nonzero().squeeze(1)[-ending - 1 : -1]
                full = log_p[i, positions, targets[i, positions]].sum()
                torch.testing.assert_close(fast[i, j], full, rtol=1e-4, atol=1e-4)
    assert not torch.equal(fast[0], fast[1])  # the utterances' own signals and words move the label


def test_describe_answers_with_the_classifiers_label_and_the_lm_writes_the_rest(tmp_path: Path) -> None:
    from emostream.models.llm import describe
    from emostream.models.presets import load_model
    from tests.test_describe_jobs import SERVED_WIDTH, WORDS, fixed_answer_describer

    bundle = random_bundle(seed=3, face=False, frames=False, audio_width=SERVED_WIDTH)  # the describer's width
    model = load_model(fixed_answer_describer(tmp_path, [bundle]))  # taught "emotion: sad; …; words: sadness; …"
    assert isinstance(model, EmotionModel)
    with torch.no_grad():
        label = model.config.labels[int(model(collate([bundle], model.config)).probabilities.argmax())]
    assert label != "sad"  # the classifier's label differs from the one the LM was taught to write
    answer = describe(model, tokenizer_for(model), [bundle])[0]
    assert answer is not None and answer.emotion == label and list(answer.words) == WORDS
