"""Self-rewarding's pure steps with known answers: best-vs-worst pairs (ties dropped, length control),
the fresh-pair share, seed SFT targets, K judge samples averaged, the self-preference gap of a judge that
favours its own style vs a neutral one, and the DPO loss's label smoothing and pair weights."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from synthpref.algorithms.self_reward_eval import self_preference
from synthpref.algorithms.self_reward_steps import fresh_rows, select_pairs, sft_target
from synthpref.config import JudgeConfig, JudgingConfig
from synthpref.data.readers import PromptRow
from synthpref.training.losses import dpo_loss


def sample(pid: str, sid: str, n_tokens: int) -> dict:
    return {"prompt_id": pid, "sample_id": sid, "text": "w " * n_tokens, "n_tokens": n_tokens}


def test_best_vs_worst_with_ties_and_unscored_prompts_counted():
    samples_of = {"p": [sample("p", "a", 5), sample("p", "b", 9), sample("p", "c", 3)],
                  "tie": [sample("tie", "d", 4), sample("tie", "e", 4)],
                  "lone": [sample("lone", "f", 4), sample("lone", "g", 4)]}
    scores = {"a": 2.0, "b": 4.0, "c": 1.0, "d": 3.0, "e": 3.0, "f": 5.0, "g": None}
    pairs, counts = select_pairs(samples_of, scores)
    assert [(c["sample_id"], r["sample_id"]) for c, r in pairs] == [("b", "c")]
    assert (counts.prompts, counts.pairs, counts.ties, counts.unscored) == (3, 1, 1, 1)


def test_length_control_chooses_the_shortest_near_the_top_but_never_the_worst():
    samples_of = {"p": [sample("p", "long", 40), sample("p", "short", 8), sample("p", "worst", 2)]}
    scores = {"long": 4.6, "short": 4.1, "worst": 1.0}
    assert [c["sample_id"] for c, _ in select_pairs(samples_of, scores, margin=0.5)[0]] == ["short"]
    assert [c["sample_id"] for c, _ in select_pairs(samples_of, scores, margin=0.4)[0]] == ["long"]
    # a margin wide enough to reach the worst still pairs a better candidate with it
    assert [(c["sample_id"], r["sample_id"]) for c, r in select_pairs(samples_of, scores, margin=10)[0]] == [("short", "worst")]


def test_fresh_pairs_are_their_share_of_the_training_set_and_the_next_ones_each_iteration():
    pool = [PromptRow(f"id{i}", [{"role": "user", "content": f"q{i}"}], "s", {}, [f"good {i}", f"bad {i}"])
            for i in range(10)]
    first = fresh_rows(pool, 0, 0, 0.5, 6)
    second = fresh_rows(pool, len(first), 1, 0.5, 8)          # more own pairs: more fresh ones, the next in line
    assert len(first) == 6 and len(fresh_rows(pool, 0, 0, 0.25, 6)) == 2        # 0.25 = n / (6 + n)
    assert [r["prompt_id"] for r in second] == ["id6", "id7", "id8", "id9", "id0", "id1", "id2", "id3"]
    assert first[0]["chosen"] == [{"role": "assistant", "content": "good 0"}] and first[0]["source"] == "fresh"
    assert second[0]["iteration"] == 1
    assert fresh_rows(pool, 0, 3, 0.0, 6) == [] and fresh_rows([], 0, 3, 0.5, 6) == []


def test_a_seed_sft_row_teaches_its_completion_in_any_of_trl_s_shapes():
    row = lambda meta, completions=None: PromptRow("id", [{"role": "user", "content": "q"}], "s", meta, completions)  # noqa: E731
    assert sft_target(row({"completion": "plain"})) == "plain"
    assert sft_target(row({"completion": [{"role": "assistant", "content": "as message"}]})) == "as message"
    assert sft_target(row({}, ["chosen one", "rejected one"])) == "chosen one"
    assert sft_target(row({"completion": "  "})) is None and sft_target(row({})) is None


def test_k_text_verdicts_are_averaged_and_none_parsing_is_failed():
    from synthpref.judging.backends import ModelJudge
    cfg = JudgeConfig(id="self", type="vllm", model="m", verdict="text", template="additive-5-text", samples=3,
                      temperature=0.7)
    judge = ModelJudge(cfg, "pointwise", pool=SimpleNamespace(replicas={0: None}))
    job = judge._job([[{"role": "user", "content": "x"}]] * 2, ["s1", "s2"], None)
    seeds = [r["seed"] for r in job.requests]
    assert len(job.requests) == 6 and len(set(seeds)) == 6 and {r["temperature"] for r in job.requests} == {0.7}
    job.results = [{"text": "good [[4]]"}, {"text": "[[2]]"}, {"text": "no verdict"},
                   {"text": "x"}, {"text": "[[9]]"}, {"text": "y"}]          # 9 is outside 0-5: not parsed
    first, second = (judge._score_fields(o) for o in judge._sampled_outputs(job))
    assert first == {"verdict": "SCORE", "score": 3.0}
    assert second["verdict"] == "FAILED" and "none of 3 verdicts parsed" in second["error"]


def jury(function: str):
    from synthpref.judging.jury import Jury
    return Jury(JudgingConfig(mode="pairwise", judges=[JudgeConfig(id="j", type="function", function=function)]))


def test_a_judge_favouring_its_own_style_shows_a_positive_self_preference_gap_and_a_neutral_one_none():
    conv = {f"p{i}": [{"role": "user", "content": f"question {i}"}] for i in range(6)}
    own = {pid: {"prompt_id": pid, "sample_id": f"own-{pid}", "text": "please please help"} for pid in conv}
    other = {pid: {"prompt_id": pid, "sample_id": f"other-{pid}", "text": "stone river dust"} for pid in conv}
    neutral = jury("tests.rule_judges:constant")
    biased = self_preference(jury("tests.rule_judges:please_rate"), neutral, own, other, conv)
    assert biased == {"self_rate": 1.0, "independent_rate": 0.5, "gap": 0.5, "pairs": 6, "self_failed": 0}
    fair = self_preference(neutral, neutral, own, other, conv)
    assert fair["gap"] == 0.0 and fair["self_rate"] == 0.5


def test_conservative_dpo_and_pair_weights_by_hand():
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-10.0, -12.0, -11.0, -11.0))
    h = 0.1 * 2.0                                     # beta * ((-10 + 11) - (-12 + 11))
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.2)
    expected = -0.8 * math.log(1 / (1 + math.exp(-h))) - 0.2 * math.log(1 / (1 + math.exp(h)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    two = [torch.tensor([a, b]) for a, b in ((-10.0, -10.0), (-12.0, -12.0), (-11.0, -11.0), (-11.0, -11.0))]
    weighted, _, _ = dpo_loss(*two, beta=0.1, weights=torch.tensor([1.0, 0.5]))
    plain = -math.log(1 / (1 + math.exp(-h)))
    assert weighted.item() == pytest.approx((plain + 0.5 * plain) / 2, abs=1e-6)
