"""The mllm preset: lite's encoders and Q-Former, a projection into SmolLM2's embedding space, SmolLM2 with LoRA.
SmolLM2's weights are referenced by the checkpoint, never copied into it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emostream.models.inputs import collate
from emostream.models.llm import add_lora, generate, language_loss, tokenizer_for
from emostream.models.model import EmotionModel
from emostream.models.presets import build_preset, load_model
from tests.model_helpers import random_bundle
from tests.test_smollm import installed_checkpoint


@pytest.fixture(scope="module")
def mllm() -> EmotionModel:
    installed_checkpoint()
    torch.manual_seed(0)
    return build_preset("mllm").eval()


def test_mllm_feeds_lite_tokens_to_the_pretrained_smollm2_through_its_chat_template(mllm: EmotionModel) -> None:
    assert mllm.config.llm_path == "smollm2-135m-instruct" and mllm.config.hidden_size == 96
    assert mllm.llm_projection is not None and mllm.llm_projection.out_features == 576  # SmolLM2's embedding width
    tokenizer = tokenizer_for(mllm)
    bundles = [random_bundle(seed=1, face=False, frames=False), random_bundle(seed=2)]
    with torch.no_grad():
        output = mllm(collate(bundles, mllm.config))
        loss = language_loss(mllm, output, tokenizer, ["I waited an hour", None], ["emotion: angry", "emotion: calm"])
    # pretrained: far below a uniform guess over 49,152 tokens (ln 49152 = 10.8), even before any tuning
    assert 0 < float(loss) < 8
    texts = generate(mllm, output, tokenizer, ["I waited an hour", None], max_new_tokens=4)
    assert len(texts) == 2 and all(texts)
    assert "<|im_start|>" not in texts[0]


def test_a_checkpoint_holds_the_adapters_not_smollm2_and_reloads_them_merged(mllm: EmotionModel, tmp_path: Path) -> None:
    add_lora(mllm, rank=4, alpha=8)
    try:
        with torch.no_grad():
            for name, parameter in mllm.named_parameters():
                if "lora_B" in name:  # as after training: the adapters change the LM's output
                    parameter.normal_(0, 0.02)
        bundles = [random_bundle(seed=3, face=False, frames=False)]
        tokenizer = tokenizer_for(mllm)
        with torch.no_grad():
            before = mllm.language_model(inputs_embeds=torch.randn(1, 5, 576, generator=torch.Generator().manual_seed(0))).logits
        mllm.save_pretrained(tmp_path)
        saved = load_file(str(tmp_path / "model.safetensors"))
        llm_keys = [k for k in saved if k.startswith("language_model.")]
        assert llm_keys and all("lora_" in k for k in llm_keys)  # adapters only: SmolLM2 stays where it was installed
        assert sum(v.numel() for v in saved.values()) < 5_000_000  # SmolLM2 alone is 135M

        loaded = load_model(tmp_path)
        assert isinstance(loaded, EmotionModel) and not hasattr(loaded.language_model, "peft_config")  # merged at load
        with torch.no_grad():
            after = loaded.language_model(inputs_embeds=torch.randn(1, 5, 576, generator=torch.Generator().manual_seed(0))).logits
            torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
            output = loaded(collate(bundles, loaded.config))
        assert generate(loaded, output, tokenizer, [None], max_new_tokens=3)[0]
        with pytest.raises(ValueError, match="merged into its referenced language model at load"):
            loaded.save_pretrained(tmp_path / "again")
    finally:
        mllm.language_model = mllm.language_model.unload()  # the module's fixture goes back to plain SmolLM2
        mllm.config.llm_lora = None


def test_base_weights_changed_by_training_are_refused_rather_than_lost(mllm: EmotionModel, tmp_path: Path) -> None:
    assert mllm.language_model is not None
    weight = mllm.language_model.get_input_embeddings().weight
    with torch.no_grad():
        weight[0, 0] += 1.0
    try:
        with pytest.raises(ValueError, match=r"base weights of the referenced language model \(smollm2-135m-instruct\) changed"):
            mllm.save_pretrained(tmp_path)
    finally:
        with torch.no_grad():
            weight[0, 0] -= 1.0


def test_the_describer_recipe_starts_from_the_default_classifier_and_freezes_every_part_of_it(mllm: EmotionModel) -> None:
    from emostream.training.train import load_train_config, start_from  # noqa: PLC0415

    recipe = load_train_config(Path(__file__).parent.parent / "deployments" / "train-mllm.yaml")
    assert recipe.preset == "mllm" and recipe.initial_model == Path("emostream/models/checkpoints/lite-ravdess")
    (stage,) = recipe.stages
    parts = {name.split(".")[0] for name, _ in mllm.named_parameters()}
    # what learns is the projector and the adapters (lora) on SmolLM2; everything lite has stays as the classifier trained it
    assert stage.lora and set(stage.freeze) == parts - {"language_model", "llm_projection"}
    # its preset arguments fit the embedded default: the describer starts from its first member, weight for weight
    describer = build_preset(recipe.preset, recipe.label_set, recipe.preset_arguments)
    root = Path(__file__).parent.parent
    start_from(describer, root / recipe.initial_model)
    member = load_model(root / recipe.initial_model).members[0]
    loaded = describer.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in member.state_dict().items())
