"""Each loss against values computed by hand (the arithmetic is in the comments)."""
import math

import pytest
import torch

from synthpref.training.losses import (IGNORE, bradley_terry_loss, dpo_loss, ipo_loss, sequence_logprob, sft_loss,
                                       token_logprobs)


def two_step_logits():
    """Vocabulary of 2. Position 0 predicts token 1 with p = 3/4 (logits 0, ln 3); position 1 predicts
    token 0 with p = 4/5 (logits ln 4, 0); position 2's logits predict nothing (no next token)."""
    return torch.tensor([[[0.0, math.log(3)], [math.log(4), 0.0], [7.0, -7.0]]])


def test_sft_loss_is_the_mean_over_counted_tokens_with_the_causal_shift():
    logits = two_step_logits()
    # tokens 1 and 2 are trained on: -(ln 3/4 + ln 4/5) / 2 = 0.2554128119
    assert sft_loss(*token_logprobs(logits, torch.tensor([[IGNORE, 1, 0]]))).item() == pytest.approx(0.2554128119, abs=1e-7)
    # only token 2: -ln 4/5 = 0.2231435513
    assert sft_loss(*token_logprobs(logits, torch.tensor([[IGNORE, IGNORE, 0]]))).item() == pytest.approx(0.2231435513, abs=1e-7)


def test_sequence_logprob_sums_or_averages_the_response_tokens():
    logits, labels = two_step_logits(), torch.tensor([[IGNORE, 1, 0]])
    assert sequence_logprob(logits, labels).item() == pytest.approx(math.log(0.6), abs=1e-6)   # ln 3/4 + ln 4/5
    assert sequence_logprob(logits, labels, average=True).item() == pytest.approx(math.log(0.6) / 2, abs=1e-6)
    logps, mask = token_logprobs(logits, torch.tensor([[IGNORE, IGNORE, 0]]))
    assert mask.tolist() == [[False, True]] and logps[0, 0].item() == 0.0    # an ignored token adds nothing


def test_bradley_terry_with_margin_and_centring():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    # (ln(1 + e^-1) + ln 2) / 2 = (0.3132616875 + 0.6931471806) / 2
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(0.5032044341, abs=1e-7)
    # margin 0.5: (ln(1 + e^-0.5) + ln(1 + e^0.5)) / 2 = (0.4740769842 + 0.9740769842) / 2
    assert bradley_terry_loss(chosen, rejected, margin=0.5).item() == pytest.approx(0.7240769842, abs=1e-7)
    # centring 0.1 * mean((1 + 0)^2, (0 + 0)^2) = 0.05 on top
    assert bradley_terry_loss(chosen, rejected, center_coef=0.1).item() == pytest.approx(0.5532044341, abs=1e-7)


def test_dpo_loss_and_implicit_rewards():
    pc, pr = torch.tensor([-1.0], requires_grad=True), torch.tensor([-2.0])
    rc, rr = torch.tensor([-1.5]), torch.tensor([-1.5])
    # h = (-1 + 1.5) - (-2 + 1.5) = 1; loss = ln(1 + e^-0.1) = 0.6443966600
    loss, reward_chosen, reward_rejected = dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert loss.item() == pytest.approx(0.6443966600, abs=1e-7)
    assert reward_chosen.item() == pytest.approx(0.05) and reward_rejected.item() == pytest.approx(-0.05)
    loss.backward()
    assert pc.grad.item() < 0                       # descending the loss raises the chosen response


def test_ipo_loss_regresses_the_margin_to_one_over_two_beta():
    pc, pr = torch.tensor([-1.0, 3.0]), torch.tensor([-2.0, -2.0])
    rc, rr = torch.tensor([-1.5, -1.5]), torch.tensor([-1.5, -1.5])
    # h = 1 and h = (3 + 1.5) - (-0.5) = 5; 1/(2 * 0.1) = 5: ((1 - 5)^2 + 0) / 2 = 8
    assert ipo_loss(pc, pr, rc, rr, beta=0.1).item() == pytest.approx(8.0)


def test_soft_label_bradley_terry_matches_hand_computed_cross_entropy():
    # p = 0.7, d = 1: -(0.7 log s(1) + 0.3 log s(-1)) = 0.6132617; p = 0.25, d = -2: 0.6269280; mean 0.6200948
    chosen, rejected = torch.tensor([1.0, -1.0], dtype=torch.float32), torch.tensor([0.0, 1.0], dtype=torch.float32)
    loss = bradley_terry_loss(chosen, rejected, target=torch.tensor([0.7, 0.25]))
    assert loss.item() == pytest.approx((0.6132616875 + 0.6269280110) / 2, abs=1e-6)
    # a target of 1 is the hard loss; at d = 0 every target gives log 2
    hard = bradley_terry_loss(chosen, rejected)
    assert bradley_terry_loss(chosen, rejected, target=torch.ones(2)).item() == pytest.approx(hard.item(), abs=1e-7)
    assert bradley_terry_loss(torch.zeros(3), torch.zeros(3), target=torch.tensor([0.1, 0.5, 0.9])).item() == \
        pytest.approx(0.6931472, abs=1e-6)
