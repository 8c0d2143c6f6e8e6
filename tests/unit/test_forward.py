"""Response-only log-probabilities equal the full-logits computation."""
import pytest
import torch


def test_response_logprobs_match_full_logits(tiny_model):
    from transformers import AutoModelForCausalLM

    from synthpref.training.forward import predicting_positions, response_token_logprobs
    from synthpref.training.losses import IGNORE, sequence_logprob, sft_loss, token_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    ids = torch.randint(10, 200, (3, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0                                           # a padded row
    labels = ids.clone()
    labels[0, :12], labels[1, :6], labels[2, :9] = IGNORE, IGNORE, IGNORE
    labels[2, 15:] = IGNORE
    assert predicting_positions(labels).tolist() == list(range(5, 19))
    with torch.no_grad():
        logps, counted = response_token_logprobs(model, ids, mask, labels)
        full = model(input_ids=ids, attention_mask=mask).logits
    assert counted.sum() == (labels[:, 1:] != IGNORE).sum()
    assert logps.sum(-1).tolist() == pytest.approx(sequence_logprob(full, labels).tolist(), abs=1e-4)
    assert float(-logps.sum() / counted.sum()) == pytest.approx(float(sft_loss(*token_logprobs(full, labels))), abs=1e-5)
