"""A pair scored as one row with its prompt once gives the two-row log-probabilities and gradients (fp32),
and pairs whose two rows hold different prompts are left to the two-row path."""
from __future__ import annotations

import pytest
import torch

from synthpref.training import dpo_data
from synthpref.training.forward import response_token_logprobs
from synthpref.training.pair_packing import pack, packed_logprobs


@pytest.fixture(scope="module")
def model_and_pairs(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from synthpref.models.loading import load_tokenizer
    from synthpref.models.tiny import build_tiny_model
    path = build_tiny_model(tmp_path_factory.mktemp("pack") / "m", seed=4)
    tok = load_tokenizer(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    convs = [[{"role": "user", "content": "How do I bake bread?"}],
             [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
              {"role": "user", "content": "Name a sea."}],
             [{"role": "user", "content": "Rate the response from 1 to 10 please, and explain it."}]]
    replies = [("Mix flour, water and yeast.", "No."), ("The North Sea.", "Paris is the capital of France, a city."),
               ("7", "Rating: [[7]] because it helps.")]
    pairs = [dpo_data.encode_pair(tok, c, a, b, 256) for c, (a, b) in zip(convs, replies)]
    return model, tok, pairs


def two_rows(model, t):
    out = []
    for side in ("chosen", "rejected"):
        logps, _ = response_token_logprobs(model, t[f"{side}_input_ids"], t[f"{side}_attention_mask"], t[f"{side}_labels"])
        out.append(logps.sum(-1))
    return out


def test_packed_log_probs_and_gradients_equal_the_two_row_ones(model_and_pairs):
    model, tok, pairs = model_and_pairs
    t = dpo_data.pair_tensors(pairs, [0, 1, 2], tok.pad_token_id)
    packed = pack(t, tok.pad_token_id)
    assert packed is not None
    n_prompt = [len([x for x in p.chosen.labels if x == -100]) for p in pairs]
    tokens_two_rows = int(t["chosen_attention_mask"].sum() + t["rejected_attention_mask"].sum())
    assert int((packed["input_ids"] != tok.pad_token_id).sum()) == tokens_two_rows - sum(n_prompt)

    model.zero_grad()
    c, r = two_rows(model, t)
    (c.sum() - 2 * r.sum()).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    lc, mc, lr, mr = packed_logprobs(model, packed, torch.float32)
    assert mc.sum(-1).tolist() == [sum(p.tokens[0] for p in [q]) for q in pairs]
    assert torch.allclose(lc.sum(-1), c, atol=1e-4) and torch.allclose(lr.sum(-1), r, atol=1e-4), (lc.sum(-1), c, lr.sum(-1), r)
    (lc.sum() - 2 * lr.sum()).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[name], atol=1e-5, rtol=1e-4), name


def test_pairs_cut_to_different_prompts_use_two_rows(model_and_pairs):
    model, tok, pairs = model_and_pairs
    conv = [{"role": "user", "content": "word " * 60}]
    cut = dpo_data.encode_pair(tok, conv, "short", "a much longer reply " * 2, 96)      # left-cut differently
    t = dpo_data.pair_tensors(pairs[:1] + [cut], [0, 1], tok.pad_token_id)
    assert pack(t, tok.pad_token_id) is None
