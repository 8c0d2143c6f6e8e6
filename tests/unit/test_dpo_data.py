"""DPO's data path: pairs encoded after the chat-rendered prompt, reference log-probs from a cache, IPO's
per-token means, pair weights, identical pairs refused, and batches that cover every pair once."""
from __future__ import annotations

import pytest

from synthpref.training import dpo_data
from synthpref.training.losses import IGNORE


@pytest.fixture(scope="module")
def tokenizer():
    from synthpref.models.tiny import train_tokenizer
    return train_tokenizer(512)


def test_pairs_ref_cache_ipo_means_and_weights(tokenizer):
    msgs = [{"role": "user", "content": "How do I bake bread?"}]
    pair = dpo_data.encode_pair(tokenizer, msgs, "Mix flour and water.", "No.", 128, weight=0.75)
    nc, nr = pair.tokens
    assert nc == sum(x != IGNORE for x in pair.chosen.labels) and nc > nr >= 2       # response + EOS
    assert pair.chosen.input_ids[-1] == tokenizer.eos_token_id
    dpo_data.fill_reference(None, [pair], 1, 0, {pair.key: (-20.0, -6.0)})          # from the cache: no model
    sums = dpo_data.pair_tensors([pair], [0], 0)
    means = dpo_data.pair_tensors([pair], [0], 0, loss="ipo", weighted=True)
    assert sums["ref_chosen"].item() == -20.0 and sums["ref_rejected"].item() == -6.0 and "pair_weight" not in sums
    assert means["ref_chosen"].item() == pytest.approx(-20.0 / nc) and means["ref_rejected"].item() == pytest.approx(-6.0 / nr)
    assert means["pair_weight"].tolist() == [0.75]
    assert dpo_data.implicit_margins([(-19.0, -7.0)], [pair], 0.1) == [pytest.approx(0.1 * (1.0 - (-1.0)))]
    with pytest.raises(ValueError, match="identical"):
        dpo_data.encode_pair(tokenizer, msgs, "Same.", "Same.", 128)


def test_batches_cover_every_pair_once_in_a_seeded_order(tokenizer):
    msgs = [{"role": "user", "content": "Hi"}]
    pairs = [dpo_data.encode_pair(tokenizer, msgs, "a " * (i + 1), "b", 256) for i in range(10)]
    batches = dpo_data.batches(pairs, 3, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(10)) and len(batches) == 4
    assert batches == dpo_data.batches(pairs, 3, seed=1) and batches != dpo_data.batches(pairs, 3, seed=2)
