"""The describer's label over the closed label set: the LM's own likelihood of each label word after "emotion:",
computed once per prompt and continued from its cache, equals scoring each whole answer start on its own."""

from __future__ import annotations

import torch

from emostream.models.inputs import collate
from emostream.models.llm import IGNORE, label_log_likelihoods, splice, tokenizer_for
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
