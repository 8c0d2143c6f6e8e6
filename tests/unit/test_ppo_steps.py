"""The pure steps of `synthpref ppo`: rollout layout, reward shaping, group dropping, the monitor's rule,
metrics rewind on resume, TRL-signature reward functions and the config's checks."""
from __future__ import annotations

import json

import pytest
import torch

from synthpref.algorithms import ppo_steps as steps
from synthpref.algorithms.ppo_monitor import OverOptimisation
from synthpref.training.batches import mini_batches
from synthpref.config import ConfigError, JudgeConfig, PPOConfig, from_dict, validate
from synthpref.config.ppo import RewardShapingConfig
from tests.unit.test_batches import CharTokenizer


class PadTokenizer(CharTokenizer):
    pad_token_id, eos_token_id = 0, 1


def ppo_config(**over) -> PPOConfig:
    """A checked PPOConfig with a function judge; `over` replaces top-level sections and keys."""
    tree = {"data": {"path": "x"}, "policy": {"model": "m"},
            "judging": {"mode": "pointwise", "judges": [{"id": "f", "type": "function", "function": "a:b"}]}, **over}
    return validate(from_dict(PPOConfig, tree))


def sample(sid, prompt="p", ids=(5, 6), finish="stop"):
    return {"sample_id": sid, "prompt_id": prompt, "token_ids": list(ids), "token_logprobs": [-1.0] * len(ids),
            "n_tokens": len(ids), "finish_reason": finish, "text": "x"}


def test_rollouts_left_pad_prompts_and_right_pad_responses():
    conv = {"p": [{"role": "user", "content": "hi"}], "q": [{"role": "user", "content": "hello"}]}
    dropped = {}
    ro = steps.build_rollouts(PadTokenizer(), conv, [sample("a", "p", (5, 6, 7)), sample("b", "q", (8,)),
                                                     sample("c", "q", ()), sample("d", "q", range(40))], 20, dropped)
    assert [s["sample_id"] for s in ro.samples] == ["a", "b"]
    assert dropped["c"].startswith("empty_response") and dropped["d"].startswith("too_long")
    width_p = len("<u>hello<a>")
    ids, mask, resp = ro.tensors["input_ids"], ro.tensors["attention_mask"], ro.tensors["response_mask"]
    assert ids.shape == (2, width_p + 3) and resp.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids[0, width_p:].tolist() == [5, 6, 7] and ids[1, width_p:].tolist() == [8, 0, 0]
    assert mask[0].tolist() == [0, 0, 0] + [1] * (width_p - 3 + 3)            # "<u>hi<a>" is 3 shorter
    assert ro.tensors["engine_logp"][1].tolist() == [-1.0, 0.0, 0.0]


def test_reward_shaping_order():
    samples = [sample("a", ids=(1,) * 4, finish="length"), sample("b", ids=(1,) * 2)]
    running = steps.RunningStats()
    plain = steps.shape_rewards([1.0, 2.0], samples, RewardShapingConfig(), running)
    assert plain == [1.0, 2.0]
    # the no-EOS penalty replaces the reward as it is (no length terms on it)
    eos = steps.shape_rewards([1.0, 2.0], samples, RewardShapingConfig(no_eos_penalty=-1.0, length_penalty=0.5), running)
    assert eos == [-1.0, 2.0 - 0.5 * 2]
    per_token = steps.shape_rewards([4.0, 3.0], samples, RewardShapingConfig(length_normalise=True), running)
    assert per_token == [1.0, 1.5]
    clipped = steps.shape_rewards([4.0, -3.0], samples, RewardShapingConfig(clip=0.5), running)
    assert clipped == [0.5, -0.5]
    normed = steps.shape_rewards([1.0, 3.0], samples, RewardShapingConfig(normalise=True), running)
    assert normed == pytest.approx([-1.0, 1.0], abs=1e-6) and running.count == 2


def test_mini_batches_are_equal_sized_and_cover_every_row_once():
    batches = mini_batches(list(range(65)), 64, seed=1)
    assert sorted(len(b) for b in batches) == [32, 33] and sorted(r for b in batches for r in b) == list(range(65))
    assert [len(b) for b in mini_batches(list(range(64)), 64, 0)] == [64]


def test_running_stats_match_the_whole_batch():
    r = steps.RunningStats()
    r.update([1.0, 2.0])
    r.update([3.0, 4.0, 5.0])
    assert r.mean == pytest.approx(3.0) and r.std == pytest.approx(torch.tensor([1., 2, 3, 4, 5]).std(unbiased=False).item())


def test_group_estimators_drop_groups_left_with_one_member():
    cfg = ppo_config(estimator="rloo")
    samples = [sample("a", "p"), sample("b", "p"), sample("c", "q")]
    ro = steps.Rollouts(samples, {"response_mask": torch.ones(3, 2)})
    adv = steps.compute_advantages(cfg, ro, [1.0, 0.0, 5.0], torch.zeros(3, 2), 0.0, None)
    assert adv.keep == [0, 1] and adv.dropped_groups == 1
    assert adv.advantages[:2].tolist() == [[1.0, 1.0], [-1.0, -1.0]]
    # KL in the reward lowers the sequence reward by beta * its summed KL
    kl = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    shaped = steps.compute_advantages(cfg, ro, [1.0, 0.0, 5.0], kl, 0.5, None)
    assert shaped.advantages[0, 0].item() == pytest.approx(0.0)


@pytest.mark.parametrize("over, rollouts, fused", [
    ({"kl": {"placement": "loss"}}, 64, True),               # one update per step: its own log-probs are old
    ({"kl": {"placement": "loss"}}, 65, False),              # two mini-batches
    ({"kl": {"placement": "loss"}, "ppo_epochs": 2}, 64, False),
    ({"kl": {"placement": "reward"}}, 64, False),            # the KL-shaped reward needs them before the update
    ({"kl": {"placement": "reward", "coef": 0.0}}, 64, True),
    ({"kl": {"placement": "loss"}, "tis_cap": 2.0}, 64, False),
])
def test_old_logprobs_come_from_the_update_only_when_nothing_needs_them_before(over, rollouts, fused):
    cfg = ppo_config(**{"mini_batch": 64, **over})
    assert steps.old_from_update(cfg, rollouts, cfg.kl.coef) is fused


def test_monitor_needs_patience_evaluations_of_gold_down_and_proxy_up():
    m = OverOptimisation(patience=2)
    assert m.record(1, 1.0, 0.5, 0.1, 10)["new_best"]
    assert not m.record(2, 2.0, 0.4, 0.2, 11)["diverging"]
    assert not m.record(3, 1.5, 0.3, 0.2, 11)["diverging"]          # the proxy fell: the streak restarts
    assert not m.record(4, 2.5, 0.2, 0.3, 12)["diverging"]
    verdict = m.record(5, 3.0, 0.1, 0.4, 13)
    assert verdict["diverging"] and verdict["streak"] == 2 and m.best_step == 1
    again = OverOptimisation.restore(2, json.loads(json.dumps(m.state())))
    assert again.streak == 2 and again.best_gold == 0.5 and len(again.history) == 5
    assert "best gold 0.500 at step 1" in m.message()


def test_metrics_rewind_drops_the_steps_a_resumed_run_redoes(tmp_path):
    from synthpref.monitor.metrics import MetricsLog
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.scalars("ppo", step, {"x": step})
    log.log({"event": "start"})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"event": "ppo", "st')                             # cut short by a kill
    assert log.rewind(2, ("ppo",)) == 2
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(e["event"], e.get("step")) for e in events] == [("ppo", 1), ("ppo", 2), ("start", None)]


def test_trl_signature_reward_functions():
    from synthpref.judging.backends import FunctionJudge, PointRequest
    judge = FunctionJudge(JudgeConfig(id="low", type="function", function="tests.rule_judges:fails_on_some"))
    assert judge.batched
    rows = judge.score([PointRequest("a", [], "x", [4, 1]), PointRequest("b", [], "y", [5, 1])])
    assert [r["verdict"] for r in rows] == ["FAILED", "SCORE"] and "returned None" in rows[0]["error"]
    broken = FunctionJudge(JudgeConfig(id="boom", type="function", function="tests.unit.test_ppo_steps:raising"))
    rows = broken.score([PointRequest("a", [], "x", [1]), PointRequest("b", [], "y", [2])])
    assert [r["verdict"] for r in rows] == ["FAILED", "FAILED"] and rows[1]["error"] == "RuntimeError: boom"
    short = FunctionJudge(JudgeConfig(id="short", type="function", function="tests.unit.test_ppo_steps:one_reward"))
    rows = short.score([PointRequest("a", [], "x", [1]), PointRequest("b", [], "y", [2])])
    assert all("returned 1 rewards for 2 completions" in r["error"] for r in rows)


def raising(prompts, completions, completion_ids, **kwargs):
    raise RuntimeError("boom")


def one_reward(prompts, completions, completion_ids, **kwargs):
    return [1.0]


@pytest.mark.parametrize("over, message", [
    ({"judging": {"mode": "pairwise", "judges": [{"id": "f", "type": "function", "function": "a:b"}]}}, "pointwise"),
    ({"estimator": "grpo", "policy": {"model": "m", "samples_per_prompt": 1}}, "group of >= 2"),
    ({"tis_cap": 2.0, "policy": {"model": "m", "temperature": 0.7}}, "tis_cap"),
    ({"dual_clip": 1.0}, "dual_clip"),
    ({"colocate": True}, "colocate"),
    ({"kl": {"target": -1.0}}, "kl"),
])
def test_config_checks_name_the_key(over, message):
    with pytest.raises(ConfigError, match=message):
        ppo_config(**over)


def test_every_rank_makes_the_same_number_of_forward_calls():
    """ZeRO-3 gathers parameters in every forward: a rank with fewer rows still makes as many calls."""
    from synthpref.training.rl_steps import in_chunks
    calls = []

    def forward(part):
        calls.append(part["response_mask"].shape[0])
        return part["response_mask"] * 2

    t = {"response_mask": torch.arange(6.0).reshape(3, 2), "weight": torch.tensor(1.0)}
    rows = in_chunks(forward, t, rows=2, rows_per_rank=5)
    assert calls == [2, 1, 1] and torch.stack(rows).tolist() == (t["response_mask"] * 2).tolist()
    calls.clear()
    assert len(in_chunks(forward, t, rows=2)) == 3 and calls == [2, 1]
