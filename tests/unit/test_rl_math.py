"""PPO, GAE, KL, group baselines and the direct-RLAIF reward against values computed by hand
(shared/RESEARCH.md's known answers, float32)."""
from __future__ import annotations

import math

import pytest
import torch

from synthpref.judging.expected_score import is_rating_scale, rating_reward, rescale
from synthpref.training.advantages import (explained_variance, gae, group_normalise, last_token_rewards, rloo,
                                           sequence_to_tokens, whiten)
from synthpref.training.kl import AdaptiveKL, FixedKL, kl_per_token
from synthpref.training.policy_losses import (aggregate, clipped_surrogate, clipped_value_loss, entropy_from_logits,
                                              truncated_is_weights)

T = torch.tensor


@pytest.mark.parametrize("lam, expected", [(1.0, [.5, .8, .6]), (.95, [.4315, .7700, .6000]), (0.0, [-.3, .2, .6])])
def test_gae_known_answers(lam, expected):
    adv, ret = gae(T([[0., 0., 1.]]), T([[.5, .2, .4]]), T([[1., 1., 1.]]), gamma=1.0, lam=lam)
    assert adv[0].tolist() == pytest.approx(expected, abs=1e-4)
    assert ret[0].tolist() == pytest.approx([a + v for a, v in zip(expected, [.5, .2, .4])], abs=1e-4)
    if lam == 1.0:
        assert ret[0].tolist() == pytest.approx([1., 1., 1.])


def test_gae_masked_positions_change_nothing():
    """Padding after the response, and a masked token inside it, with wild values and rewards there."""
    mask = T([[1., 0., 1., 1., 0., 0.]])
    rewards = T([[0., 9., 0., 1., 7., -3.]])
    values = T([[.5, 100., .2, .4, -50., 8.]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=.95)
    assert adv[0, [0, 2, 3]].tolist() == pytest.approx([.4315, .77, .6], abs=1e-4)
    assert adv[0, [1, 4, 5]].tolist() == [0.0, 0.0, 0.0]
    assert ret[0, [1, 4, 5]].tolist() == [0.0, 0.0, 0.0]


def test_gae_gamma_discounts():
    adv, _ = gae(T([[0., 1.]]), T([[0., 0.]]), T([[1., 1.]]), gamma=.5, lam=1.0)
    assert adv[0].tolist() == pytest.approx([.5, 1.0])


def test_whiten_uses_real_tokens_only():
    x = T([[1., 2., 3., 99.]])
    mask = T([[1., 1., 1., 0.]])
    w = whiten(x, mask)
    std = math.sqrt(2 / 3)
    assert w[0].tolist() == pytest.approx([-1 / std, 0.0, 1 / std, 0.0], abs=1e-4)
    assert whiten(x, mask, shift_mean=False)[0, :3].tolist() == pytest.approx([2 - 1 / std, 2, 2 + 1 / std], abs=1e-4)


@pytest.mark.parametrize("ratio, adv, loss, grad", [(1.0, 1.0, -1.0, -1.0), (1.5, 1.0, -1.2, 0.0), (.5, -1.0, .8, 0.0),
                                                   (1.5, -1.0, 1.5, 1.5)])
def test_clipped_surrogate_loss_and_gradient(ratio, adv, loss, grad):
    logp = T([[math.log(ratio)]], requires_grad=True)
    value, stats = clipped_surrogate(logp, T([[0.0]]), T([[adv]]), T([[1.0]]), clip_eps=.2)
    value.backward()
    assert value.item() == pytest.approx(loss, abs=1e-5)
    assert logp.grad.item() == pytest.approx(grad, abs=1e-5)
    assert stats["clip_fraction"] == (1.0 if grad == 0.0 else 0.0)


def test_dual_clip_caps_negative_advantage():
    logp = T([[math.log(5.0)]], requires_grad=True)
    value, _ = clipped_surrogate(logp, T([[0.0]]), T([[-1.0]]), T([[1.0]]), clip_eps=.2, dual_clip=3.0)
    value.backward()
    assert value.item() == pytest.approx(3.0, abs=1e-5)
    assert logp.grad.item() == 0.0
    plain, _ = clipped_surrogate(T([[math.log(5.0)]]), T([[0.0]]), T([[-1.0]]), T([[1.0]]), clip_eps=.2)
    assert plain.item() == pytest.approx(5.0, abs=1e-5)


def test_ratio_one_when_old_equals_new():
    logp = torch.randn(3, 5)
    mask = T([[1.] * 5, [1., 1., 0., 0., 0.], [1.] * 3 + [0.] * 2])
    _, stats = clipped_surrogate(logp, logp.clone(), torch.randn(3, 5), mask)
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-6) and stats["clip_fraction"] == 0.0
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-7)


def test_value_loss_clipped_and_not():
    # V = 1.0, V_old = 0.5, R = 1.0, clip .2: unclipped 0, clipped (0.7 - 1)^2 = .09 -> 0.5 * .09
    loss, stats = clipped_value_loss(T([[1.0]]), T([[.5]]), T([[1.0]]), T([[1.0]]), clip=.2)
    assert loss.item() == pytest.approx(.045, abs=1e-6) and stats["value_clip_fraction"] == 1.0
    loss, _ = clipped_value_loss(T([[1.0]]), T([[.5]]), T([[2.0]]), T([[1.0]]), clip=None)
    assert loss.item() == pytest.approx(.5, abs=1e-6)


def test_aggregation_modes():
    loss = T([[1., 2., 3.], [4., 0., 0.]])
    mask = T([[1., 1., 1.], [1., 0., 0.]])
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(loss, mask, "sum")


def test_kl_estimators_against_exact_kl():
    p, q = T([.7, .2, .1]), T([.4, .4, .2])
    logp, logq = p.log().unsqueeze(0), q.log().unsqueeze(0)
    exact = float((p * (p / q).log()).sum())
    assert exact == pytest.approx(.183787, abs=1e-5)
    for est, expected in (("k1", .183787), ("k3", .183787), ("k2", .181677)):
        got = float((p * kl_per_token(logp, logq, est)[0]).sum())
        assert got == pytest.approx(expected, abs=1e-5), est
    with pytest.raises(ValueError, match="estimator"):
        kl_per_token(logp, logq, "k4")
    assert kl_per_token(T([[30.0]]), T([[0.0]]), "k2").item() == 10.0      # clamped


def test_kl_controllers():
    assert AdaptiveKL(.1, 6.0, 10000).update(12.0, 10000) == pytest.approx(.12)
    assert AdaptiveKL(.1, 6.0, 10000).update(0.0, 10000) == pytest.approx(.08)
    assert AdaptiveKL(.1, 6.0, 10000).update(6.0, 10000) == pytest.approx(.1)
    assert FixedKL(.05).update(100.0, 10) == .05


def test_group_baselines():
    r = T([1., 0., 0., 1.])
    assert rloo(r, ["g"] * 4).tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3], abs=1e-6)
    assert group_normalise(r, ["g"] * 4).tolist() == pytest.approx([.8660, -.8660, -.8660, .8660], abs=1e-3)
    assert group_normalise(r, ["g"] * 4, divide_by_std=False).tolist() == pytest.approx([.5, -.5, -.5, .5])
    const = group_normalise(T([2., 2., 2.]), ["g"] * 3)
    assert const.tolist() == [0.0, 0.0, 0.0] and not torch.isnan(const).any()
    # two groups, and a group of one that has no baseline
    mixed = rloo(T([1., 3., 5., 7.]), ["a", "a", "b", "c"])
    assert mixed.tolist() == pytest.approx([-2., 2., 0., 0.])


def test_token_layouts_and_explained_variance():
    mask = T([[1., 1., 0.], [1., 0., 0.], [0., 0., 0.]])
    assert last_token_rewards(T([2., 3., 4.]), mask).tolist() == [[0., 2., 0.], [3., 0., 0.], [0., 0., 0.]]
    assert sequence_to_tokens(T([.5, -1., 2.]), mask).tolist() == [[.5, .5, 0.], [-1., 0., 0.], [0., 0., 0.]]
    ret = T([[1., 2.], [3., 0.]])
    m = T([[1., 1.], [1., 0.]])
    assert explained_variance(ret.clone(), ret, m) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(2, 2) + 2.0, ret, m) == pytest.approx(0.0)


def test_entropy_and_truncated_is():
    uniform = torch.zeros(1, 1, 4)
    assert entropy_from_logits(uniform).item() == pytest.approx(math.log(4))
    w = truncated_is_weights(T([[0.0, math.log(5.0)]]), T([[math.log(2.0), 0.0]]), T([[1., 1.]]), cap=2.0)
    assert w.tolist()[0] == pytest.approx([.5, 2.0])


def test_expected_rating_reward_known_answers():
    digits = [str(i) for i in range(10)]
    top = {d: [0.0 if d == "9" else -math.inf] for d in digits}
    bottom = {d: [0.0 if d == "0" else -math.inf] for d in digits}
    uniform = {d: [math.log(.1)] for d in digits}
    assert rating_reward(top)[0] == pytest.approx(1.0)
    assert rating_reward(bottom)[0] == pytest.approx(-1.0)
    assert rating_reward(uniform)[0] == pytest.approx(0.0, abs=1e-9)
    # mass split over two spellings of a label adds up; a label with no returned token counts as 0
    split = {"0": [], "1": [math.log(.25), math.log(.25)], "2": [math.log(.5)]}
    reward, probs = rating_reward(split)
    assert probs == pytest.approx({"0": 0.0, "1": .5, "2": .5})
    assert reward == pytest.approx(rescale(1.5, 0, 2)) and reward == pytest.approx(.5)
    with pytest.raises(ValueError):
        rating_reward({d: [] for d in digits})
    assert rescale(10, 1, 10) == 1.0 and rescale(5.5, 1, 10) == 0.0
    assert is_rating_scale(digits) and not is_rating_scale(("Yes", "No")) and not is_rating_scale(("1", "2"))
