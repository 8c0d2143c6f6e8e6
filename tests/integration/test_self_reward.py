"""`synthpref self-reward` end to end on tiny models, fp32 pinned, one shared sampler (its base weights
given back after each run):

- three iterations in which the policy (LoRA adapters, after a short seed SFT, DPO against that M_0)
  judges its own candidates on the engines that sample them (the expected 0-5 total), run as two and then
  resumed to three: the tables of every iteration, pairs and ties counted, iteration t sampled and judged
  by weights version t, judge agreement with human labels, flip rate, self-preference and win rate;
- collapse made visible: a function judge rewarding one fixed word ("please") stands in for the policy's
  judging after a seed SFT that teaches the tiny policy to write words; its distinct-2 falls and the guard
  stops the loop (a rerun of the stopped run does nothing more), while the same loop with accumulated
  pairs and fresh real pairs keeps diversity higher.
"""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from synthpref.config import EngineConfig, PoolConfig, SelfRewardConfig, from_dict, validate

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

COLLAPSE_AT = 4          # the guard's iteration on the machine the test was written on (fp32, seeded)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from synthpref.data.demo_prompts import demo_prompts
    from tests.rule_judges import rule_pairs, word_rows
    tmp = tmp_path_factory.mktemp("self-reward-data")
    out = {}
    for name, rows in {"prompts": demo_prompts(24), "human": rule_pairs(8, seed=3), "fresh": rule_pairs(64, seed=7),
                       "sft": word_rows(64)}.items():
        out[name] = tmp / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.fixture(scope="module")
def sampler(ray_session, tiny_model):
    from synthpref.sampling.group import SamplerGroup
    group = SamplerGroup(tiny_model, EngineConfig(max_model_len=512, dtype="float32"), PoolConfig(replicas=1),
                         chunk_size=128)
    yield group
    group.shutdown()


def config(out, files, model, **over) -> SelfRewardConfig:
    tree = {"output_dir": str(out), "iterations": 3, "prompts_per_iteration": 8, "progress": False,
            "data": {"path": str(files["prompts"])},
            "policy": {"model": model, "samples_per_prompt": 4, "max_tokens": 16, "temperature": 1.0,
                       "engine": {"max_model_len": 512, "dtype": "float32"}},
            "self_judge": {"verdict": "logprob"},
            "eval": {"prompts": 6, "samples_per_prompt": 2, "audit_pairs": 6, "human": {"path": str(files["human"])},
                     "judging": {"mode": "pairwise", "judges": [
                         {"id": "polite", "type": "function", "function": "tests.rule_judges:polite"}]}},
            "train": {"lr": 1.0e-4, "dtype": "float32", "max_len": 512, "micro_batch": 8, "lora_r": 4},
            "reference": "initial", "seed_sft": {"data": str(files["sft"]), "limit": 16}, **over}
    return validate(from_dict(SelfRewardConfig, tree))


@pytest.fixture(scope="module")
def three_iterations(tmp_path_factory, files, tiny_model, sampler):
    """DPO against M_0 (reference: initial) after a short seed SFT, with LoRA adapters."""
    from synthpref.algorithms.self_reward import run_self_reward
    out = tmp_path_factory.mktemp("self-reward") / "run"
    first = run_self_reward(config(out, files, tiny_model, iterations=2), sampler=sampler)
    assert sampler.versions() == [0]                        # given back between runs
    return {"out": out, "first": first, "report": run_self_reward(config(out, files, tiny_model), sampler=sampler)}


def test_every_iteration_writes_its_tables_and_counts_its_pairs(three_iterations):
    out, report = three_iterations["out"], three_iterations["report"]
    records = report["iterations"]
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    for r in records[:3]:
        folder = out / "iterations" / f"{r['iteration']:04d}"
        samples = pq.read_table(folder / "samples.parquet").to_pylist()
        pairs = pq.read_table(folder / "pairs.parquet").to_pylist()
        judgments = pq.read_table(folder / "judgments.parquet").to_pylist()
        assert r["prompts"] == 8 and r["pairs"] + r["ties"] + r["unscored"] == 8
        assert len(pairs) == r["pairs"] > 0 and len(samples) == 32 and len(judgments) == 32
        by_id = {s["sample_id"]: s for s in samples}
        for p in pairs:                                   # each prompt's best vs its worst, by the stored scores
            scores = [j["score"] for j in judgments if by_id[j["pair_id"]]["prompt_id"] == p["prompt_id"]]
            assert p["score_chosen"] == max(scores) > p["score_rejected"] == min(scores)
            assert by_id[p["chosen_id"]]["token_ids"] == p["chosen_token_ids"]
        assert (folder / "eval_samples.parquet").exists()
    assert (out / "iterations" / "0003" / "eval_samples.parquet").exists()
    assert (out / "m0" / "config.json").exists()                   # M_0 after seed SFT: the reference model


def test_iteration_t_samples_and_judges_with_weights_version_t(three_iterations, tiny_model):
    for r in three_iterations["report"]["iterations"][:3]:
        t = r["iteration"]
        name = tiny_model if t == 0 else f"{tiny_model}@v{t}"
        assert r["sampled_version"] == [name] and r["eval_version"] == [name]
        assert r["judge_versions"] == [t] and r["weight_version"] == t + 1


def test_a_rerun_resumes_after_the_last_iteration(three_iterations):
    first, report, out = three_iterations["first"], three_iterations["report"], three_iterations["out"]
    assert [r["iteration"] for r in first["iterations"]] == [0, 1, 2]
    assert report["iterations"][:2] == first["iterations"][:2]        # iterations 0 and 1 were not redone
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "iteration"] == [0, 1, 2, 3]
    dpo = [e["step"] for e in events if e["event"] == "dpo"]
    assert dpo == list(range(1, len(dpo) + 1))


def test_judging_quality_and_self_preference_are_measured(three_iterations):
    for r in three_iterations["report"]["iterations"]:
        judge, pref = r["judge"], r["self_preference"]
        assert judge["pairs"] == 8 and 0 <= judge["agreement"] <= 1 and 0 <= judge["flip_rate"] <= 1
        assert pref["pairs"] == 6 and pref["gap"] == pytest.approx(pref["self_rate"] - pref["independent_rate"])
        assert set(r["panel"]) >= {"distinct_1", "distinct_2", "distinct_3", "self_bleu", "unigram_entropy", "rare_mass"}
        assert r["length"]["mean_tokens"] > 0
        if r["iteration"]:
            assert r["win_rate"]["pairs"] == 6 and 0 <= r["win_rate"]["rate"] <= 1


def collapse_config(out, files, model, **over) -> SelfRewardConfig:
    settings = {"iterations": 6, "prompts_per_iteration": 16, "reference": "previous",
                "self_judge": {"function": "tests.rule_judges:please_rate"},
                "seed_sft": {"data": str(files["sft"]), "epochs": 12},
                "guard": {"metric": "distinct_2", "min_fraction": 0.6, "action": "stop"},
                "eval": {"prompts": 8, "samples_per_prompt": 4},
                "train": {"lr": 2.0e-3, "dtype": "float32", "max_len": 512, "micro_batch": 8, "epochs": 3}}
    return config(out, files, model, **{**settings, **over})


@pytest.fixture(scope="module")
def collapse_runs(tmp_path_factory, files, tiny_model, sampler):
    from synthpref.algorithms.self_reward import run_self_reward
    tmp = tmp_path_factory.mktemp("collapse")
    alone = run_self_reward(collapse_config(tmp / "alone", files, tiny_model), sampler=sampler)
    again = run_self_reward(collapse_config(tmp / "alone", files, tiny_model), sampler=sampler)
    assert again["iterations"] == alone["iterations"] and again["guard"] == alone["guard"]   # a stopped run stays stopped
    mixed = run_self_reward(collapse_config(tmp / "mixed", files, tiny_model, data_policy="accumulate",
                                            fresh_fraction=0.5, fresh={"path": str(files["fresh"])},
                                            iterations=COLLAPSE_AT + 1,
                                            guard={"metric": "distinct_2", "min_fraction": 0.6, "action": "warn"}),
                            sampler=sampler)
    return alone, mixed


def test_a_loop_rewarding_one_word_collapses_and_the_guard_stops_it(collapse_runs):
    alone, _ = collapse_runs
    guard = alone["guard"]
    assert guard["stopped_at"] is not None and abs(guard["stopped_at"] - COLLAPSE_AT) <= 1, \
        [r["panel"]["distinct_2"] for r in alone["iterations"]]
    records = alone["iterations"]
    assert records[-1]["iteration"] == guard["stopped_at"] and "distinct_2" in guard["fired"][-1]["message"]
    start, end = records[0]["panel"], records[-1]["panel"]
    assert end["distinct_2"] < 0.6 * start["distinct_2"]
    assert end["self_bleu"] > start["self_bleu"] and end["unigram_entropy"] < start["unigram_entropy"]
    assert records[-1]["panel_vs_start"]["distinct_2"] < 0.6


def test_accumulating_with_fresh_real_pairs_keeps_diversity_higher(collapse_runs):
    alone, mixed = collapse_runs
    at = alone["guard"]["stopped_at"]
    mixed_at = next(r for r in mixed["iterations"] if r["iteration"] == at)
    assert mixed_at["panel"]["distinct_2"] > alone["iterations"][-1]["panel"]["distinct_2"] + 0.2
    assert all(r["fresh_pairs"] > 0 for r in mixed["iterations"][:-1])
    assert [r["earlier_pairs"] for r in mixed["iterations"][:3]][0] == 0 < mixed["iterations"][1]["earlier_pairs"]
