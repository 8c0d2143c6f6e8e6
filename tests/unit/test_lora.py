"""LoRA through peft: only the adapters train, and the merged state dict is peft's own merge, under the
base model's names, loadable into a fresh transformers model."""
import pytest
import torch

from synthpref.config import ConfigError
from synthpref.config.sections import LORA_TARGETS, TrainConfig
from synthpref.models.tiny import build_tiny_model
from synthpref.training import lora

R, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("lm"), seed=0)


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("rm"), seed=0, reward=True)


def load(path, reward=False):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if reward:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def wrapped(path, reward=False, **kw):
    """A peft model with random (non-zero) lora_B, so the merge is not a no-op; in eval mode."""
    net = lora.wrap(load(path, reward), TrainConfig(lora_r=R, lora_alpha=ALPHA, **kw))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_B." in name or ".modules_to_save." in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return net.eval()


IDS = torch.tensor([[1, 5, 9, 42, 7, 3, 100, 11]])


def test_wrap_trains_only_the_adapters(tiny):
    net = load(tiny)
    assert lora.wrap(net, TrainConfig()) is net and not lora.is_lora(net)
    peft_net = lora.wrap(net, TrainConfig(lora_r=R))
    assert lora.is_lora(peft_net)
    trainable = {n: p for n, p in peft_net.named_parameters() if p.requires_grad}
    assert all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    assert len(trainable) == 2 * len(LORA_TARGETS) * 2            # layers x modules x (A, B)
    hidden, inter = 128, 256
    per_layer = 4 * R * (hidden + hidden) + 2 * R * (hidden + inter) + R * (inter + hidden)
    assert sum(p.numel() for p in trainable.values()) == 2 * per_layer
    assert type(lora.base_model(peft_net)).__name__ == "LlamaForCausalLM"


def test_wrap_names_missing_target_modules(tiny):
    with pytest.raises(ValueError, match=r"c_attn.*LlamaForCausalLM"):
        lora.wrap(load(tiny), TrainConfig(lora_r=R, lora_target_modules=["c_attn"]))


def test_merged_state_dict_is_peft_merge_and_loads_into_a_fresh_model(tiny, tmp_path):
    net = wrapped(tiny, lora_dropout=0.1, lora_target_modules=["q_proj", "v_proj", "down_proj"])
    state = {n: p.detach().clone() for n, p in net.named_parameters()}
    before = {n: t.clone() for n, t in state.items()}
    with torch.no_grad():
        logits = net(input_ids=IDS).logits
    merged = lora.merged_state_dict(state, ALPHA / R)
    assert all(torch.equal(state[n], before[n]) for n in state)  # pure
    fresh = load(tiny)
    assert set(merged) == {n for n, _ in fresh.named_parameters()}
    delta = merged["model.layers.0.self_attn.q_proj.weight"] - fresh.model.layers[0].self_attn.q_proj.weight
    assert delta.abs().max() > 1e-3                               # the adapters moved the weight

    reference = net.merge_and_unload().state_dict()
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, reference[name], atol=1e-6, rtol=0)

    fresh.load_state_dict(merged, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(input_ids=IDS).logits, logits, atol=1e-5, rtol=0)

    # the save path: the base model under the wrapper, written with the merged weights
    again = wrapped(tiny, lora_target_modules=["q_proj", "v_proj", "down_proj"])
    lora.base_model(again).save_pretrained(tmp_path / "merged", state_dict=merged, safe_serialization=True)
    with torch.no_grad():
        torch.testing.assert_close(load(tmp_path / "merged").eval()(input_ids=IDS).logits, logits,
                                   atol=1e-5, rtol=0)


def test_sequence_classifier_keeps_its_score_head_trainable_and_merged(tiny_rm):
    net = wrapped(tiny_rm, reward=True)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert "base_model.model.score.modules_to_save.default.weight" in trainable
    assert all(".lora_" in n or ".modules_to_save." in n for n in trainable)
    state = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        scores = net(input_ids=IDS).logits
    merged = lora.merged_state_dict(state, ALPHA / R)
    assert torch.equal(merged["score.weight"], state["base_model.model.score.modules_to_save.default.weight"])
    fresh = load(tiny_rm, reward=True)
    assert not torch.equal(merged["score.weight"], fresh.score.weight)  # the trained copy, not the original

    reference = net.merge_and_unload().state_dict()
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, reference[name], atol=1e-6, rtol=0)
    fresh.load_state_dict(merged, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(input_ids=IDS).logits, scores, atol=1e-5, rtol=0)


def test_adapter_state_dict_is_what_peft_saves(tiny_rm):
    from peft import get_peft_model_state_dict

    net = wrapped(tiny_rm, reward=True, lora_target_modules=["q_proj"])
    ours = lora.adapter_state_dict(dict(net.named_parameters()))
    theirs = get_peft_model_state_dict(net)
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)


def test_scaling_and_default_targets_are_fresh_lists():
    a, b = TrainConfig(lora_r=8, lora_alpha=32), TrainConfig()
    assert lora.scaling(a) == 4.0
    a.lora_target_modules.append("lm_head")
    assert b.lora_target_modules == list(LORA_TARGETS)


@pytest.mark.parametrize("kw, message", [
    ({"lora_r": -1}, r"train\.lora_r"),
    ({"lora_r": 8, "lora_alpha": 0}, r"train\.lora_alpha"),
    ({"lora_dropout": 1.0}, r"train\.lora_dropout"),
    ({"lora_dropout": -0.1}, r"train\.lora_dropout"),
    ({"lora_r": 8, "lora_target_modules": []}, r"train\.lora_target_modules"),
])
def test_train_config_rejects_bad_lora_settings(kw, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kw).check("train")


def test_train_config_accepts_lora_settings():
    TrainConfig(lora_r=16, lora_alpha=32, lora_dropout=0.05, lora_target_modules=["q_proj"]).check("train")
    TrainConfig(lora_target_modules=[]).check("train")           # no LoRA: targets unused
