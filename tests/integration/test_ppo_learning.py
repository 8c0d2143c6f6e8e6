"""PPO learns, fp32 pinned: with a rule reward (the share of low token ids, a TRL-signature function) PPO
with a critic and an RLOO group baseline both raise the mean reward over a fixed number of steps by more
than the step-1 reward varies over seeds, while the KL to the reference stays bounded, and a larger KL
coefficient keeps it smaller. A proxy judge that prefers long responses against a gold judge that prefers
short ones makes the over-optimisation monitor stop the run. The runs share one fp32 sampler, given back
its base weights after each."""
from __future__ import annotations

import json

import pytest

from synthpref.config import EngineConfig, PoolConfig, PPOConfig, from_dict, validate

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

STEPS = 8
KL_BOUND = 5.0            # nats per sequence of 16 tokens; measured up to ~2 at beta 0.05


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    from synthpref.data.demo_prompts import demo_prompts
    path = tmp_path_factory.mktemp("ppo-prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in demo_prompts(24)))
    return path


def greedy_ids(sampler, prompts, model) -> list[list[int]]:
    from synthpref.data.prompts import load_prompts
    cfg = config(prompts.parent / "unused", prompts, model)
    rows, _ = sampler.sample(load_prompts(cfg.data, cfg.policy)[0][:4], 1, 8, 0.0, 1.0, 0)
    return [r["token_ids"] for r in rows]


@pytest.fixture(scope="module")
def fp32_sampler(ray_session, tiny_model, prompts):
    from synthpref.sampling.group import SamplerGroup
    group = SamplerGroup(tiny_model, EngineConfig(max_model_len=512, dtype="float32"), PoolConfig(replicas=1),
                         chunk_size=128)
    group.base_greedy_ids = greedy_ids(group, prompts, tiny_model)     # what the base weights answer
    yield group
    group.shutdown()


def config(out, prompts, model, **over) -> PPOConfig:
    tree = {"output_dir": str(out), "steps": STEPS, "prompts_per_step": 16, "save_every": STEPS, "mini_batch": 64,
            "ppo_epochs": 2, "progress": False, "data": {"path": str(prompts)},
            "policy": {"model": model, "samples_per_prompt": 8, "max_tokens": 16,
                       "engine": {"max_model_len": 512, "dtype": "float32"}},
            "judging": {"mode": "pointwise", "judges": [
                {"id": "low", "type": "function", "function": "tests.rule_judges:low_id_rate"}]},
            "train": {"lr": 1.0e-3, "dtype": "float32", "max_len": 512, "micro_batch": 64},
            "critic": {"lr": 1.0e-3}}
    for key, value in over.items():
        node = tree
        *parents, leaf = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return validate(from_dict(PPOConfig, tree))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fp32_sampler, prompts, tiny_model):
    from synthpref.algorithms.ppo import run_ppo
    tmp = tmp_path_factory.mktemp("ppo-learning")
    out = {}
    for name, over in {"gae-0": {"estimator": "gae", "seed": 0}, "gae-1": {"estimator": "gae", "seed": 1},
                       "rloo-0": {"estimator": "rloo", "seed": 0}, "rloo-1": {"estimator": "rloo", "seed": 1},
                       "rloo-0-strong-kl": {"estimator": "rloo", "seed": 0, "kl__coef": 1.0}}.items():
        out[name] = run_ppo(config(tmp / name, prompts, tiny_model, **over), sampler=fp32_sampler)["steps"]
    return out


@pytest.mark.parametrize("estimator", ["gae", "rloo"])
def test_reward_rises_beyond_the_seed_spread_with_bounded_kl(runs, estimator):
    seeds = [runs[f"{estimator}-0"], runs[f"{estimator}-1"]]
    start = [s[0]["reward_raw"] for s in seeds]
    spread = max(start) - min(start)
    for steps in seeds:
        assert len(steps) == STEPS
        end = (steps[-1]["reward_raw"] + steps[-2]["reward_raw"]) / 2
        assert end - steps[0]["reward_raw"] > max(spread, 0.02), (estimator, [s["reward_raw"] for s in steps])
        assert max(s["kl"] for s in steps) < KL_BOUND
        assert all(s["first_ratio_max_dev"] < 1e-5 for s in steps)


def test_a_larger_kl_coefficient_keeps_the_policy_closer(runs):
    weak, strong = runs["rloo-0"], runs["rloo-0-strong-kl"]
    late = lambda steps: sum(s["kl"] for s in steps[-3:]) / 3  # noqa: E731
    assert late(strong) < late(weak), ([s["kl"] for s in strong], [s["kl"] for s in weak])


def test_the_shared_sampler_got_its_base_weights_back(runs, fp32_sampler, prompts, tiny_model):
    assert fp32_sampler.versions() == [0]
    assert greedy_ids(fp32_sampler, prompts, tiny_model) == fp32_sampler.base_greedy_ids


def test_the_monitor_stops_a_run_whose_gold_reward_falls_as_the_proxy_rises(tmp_path, fp32_sampler, prompts,
                                                                             tiny_model):
    from synthpref.algorithms.ppo import run_ppo
    # GRPO as veRL and TRL run it: k3 KL in the loss, one update per step, so the update's own log-probs
    # are the old ones (no separate pass)
    cfg = config(tmp_path / "hacked", prompts, tiny_model, estimator="grpo", steps=12, ppo_epochs=1, mini_batch=128,
                 kl={"placement": "loss", "estimator": "k3", "coef": 0.05},
                 judging={"mode": "pointwise", "judges": [
                     {"id": "longer", "type": "function", "function": "synthpref.judging.functions:length"}]},
                 monitor={"every": 1, "prompts": 8, "patience": 2, "action": "stop",
                          "gold": {"mode": "pointwise", "judges": [
                              {"id": "shorter", "type": "function", "function": "synthpref.judging.functions:brevity"}]}})
    report = run_ppo(cfg, sampler=fp32_sampler)
    evals = report["evaluations"]
    assert report["stopped"] and "over-optimisation" in report["stopped"]
    assert len(report["steps"]) < 12 and len(evals) == len(report["steps"])
    last = evals[-3:]
    assert last[2]["gold"] < last[1]["gold"] < last[0]["gold"] and last[2]["proxy"] > last[1]["proxy"] > last[0]["proxy"]
    best = max(evals, key=lambda e: e["gold"])
    assert report["best_gold_step"] == best["step"] and (tmp_path / "hacked" / "best_policy" / "model.safetensors").exists()
    events = [json.loads(line) for line in (tmp_path / "hacked" / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e["event"] == "over_optimisation"] == ["over_optimisation"]
    assert all({"proxy", "gold", "kl", "length"} <= set(e) for e in events if e["event"] == "eval")
    steps = [e for e in events if e["event"] == "ppo"]
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)          # before any update the policy is the reference
    assert steps[-1]["kl"] != pytest.approx(0.0, abs=1e-6)
    assert all(e["engine_trainer_logprob_gap_max"] < 1e-3 and "kl_loss" in e for e in steps)
    assert all("old_logprobs" not in e["spans"] for e in events if e["event"] == "ppo_phases")
