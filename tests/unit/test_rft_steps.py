"""The pure steps of RFT and of the trainer group's scatter/gather, on hand-made inputs."""
import pytest
import torch

from synthpref.algorithms import rft_steps as steps
from synthpref.data.prompts import prompts_for_round, round_seed
from synthpref.data.readers import PromptRow
from synthpref.monitor.diversity import distinct_n
from synthpref.training.group import mean_stats, merge_rows, split


def test_best_of_k_and_best_vs_worst_share_one_jury_rule():
    """A 1-10 judge beside a P(Yes) judge: each is min-max scaled per prompt before the weighted mean, so
    rft keeps the sample label would call best (a raw mean would let the 1-10 scale decide alone)."""
    from synthpref.judging.aggregate import jury_scores, pointwise_choice
    ids = ["x", "y"]
    scores = {"rating": {"x": 6.0, "y": 5.0}, "p_yes": {"x": 0.01, "y": 0.99}}
    weights = {"rating": 1.0, "p_yes": 3.0}
    combined, judges = jury_scores(ids, scores, weights)
    assert combined == {"x": pytest.approx(0.25), "y": pytest.approx(0.75)} and judges == ["rating", "p_yes"]
    choice = pointwise_choice(ids, scores, weights)
    kept, _ = steps.keep_best({"p": [{"sample_id": "x"}, {"sample_id": "y"}]}, choice.scores, None)
    assert choice.best == kept[0]["sample_id"] == "y"
    one_judge, _ = jury_scores(ids, {"rating": {"x": 6.0, "y": 5.0}})
    assert one_judge == {"x": 6.0, "y": 5.0}                   # one judge: its own scale (keep_threshold reads it)


def test_keep_best_threshold_and_unscored_counts():
    samples_of = {"p1": [{"sample_id": "a"}, {"sample_id": "b"}], "p2": [{"sample_id": "c"}, {"sample_id": "d"}],
                  "p3": [{"sample_id": "e"}]}
    scores = {"a": 0.2, "b": 0.9, "c": 0.1, "d": 0.3}
    kept, counts = steps.keep_best(samples_of, scores, threshold=0.5)
    assert [k["sample_id"] for k in kept] == ["b"] and kept[0]["score"] == 0.9
    assert counts == steps.KeptCounts(prompts=3, kept=1, below_threshold=1, unscored=1)
    kept, counts = steps.keep_best(samples_of, scores, threshold=None)
    assert [k["sample_id"] for k in kept] == ["b", "d"] and counts.kept == 2
    stats = steps.score_stats(samples_of, scores)
    assert stats["mean_score"] == pytest.approx(1.5 / 4) and stats["best_score"] == pytest.approx(0.6)


def test_prompts_cycle_through_the_set_and_seeds_differ_per_iteration():
    prompts = [PromptRow(f"p{i}", [{"role": "user", "content": str(i)}], "t") for i in range(5)]
    ids = [[p.prompt_id for p in prompts_for_round(prompts, it, 3)] for it in (1, 2, 3)]
    assert ids == [["p0", "p1", "p2"], ["p3", "p4", "p0"], ["p1", "p2", "p3"]]
    assert len(prompts_for_round(prompts, 1, 50)) == 5                # never a prompt twice in one iteration
    assert round_seed(0, "rft", 1) != round_seed(0, "rft", 2) == round_seed(0, "rft", 2) != round_seed(0, "ppo", 2)


def test_kl_estimate_and_distinct_n_by_hand():
    assert steps.kl_estimate([-1.0, -2.0], [-1.5, -4.0]) == pytest.approx((0.5 + 2.0) / 2)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)   # bigrams ab, ba, ab, ab
    assert distinct_n(["x"], 2) is None


def test_scatter_pads_short_batches_and_gather_restores_order():
    batch = {"input_ids": torch.arange(5).unsqueeze(1)}
    shares = split(batch, 2)
    assert shares[0]["input_ids"].flatten().tolist() == [0, 2, 4] and shares[1]["input_ids"].flatten().tolist() == [1, 3]
    assert merge_rows([[0, 2, 4], [1, 3]], 5) == [0, 1, 2, 3, 4]
    one = split({"input_ids": torch.tensor([[7]])}, 3)
    assert "weight" not in one[0] and float(one[1]["weight"]) == 0.0 and float(one[2]["weight"]) == 0.0
    assert merge_rows([[10], [99], [98]], 1) == [10]                     # padding ranks' rows dropped
    # row-weighted mean: 3 rows at loss 1.0 and 2 rows at loss 2.0
    assert mean_stats([{"loss": 1.0, "rows": 3}, {"loss": 2.0, "rows": 2}], 5) == {"loss": pytest.approx(7 / 5), "rows": 5}
    assert mean_stats([{"loss": 1.0, "rows": 1}, {"loss": 0.0, "rows": 1}], 1) == {"loss": 1.0, "rows": 1}
