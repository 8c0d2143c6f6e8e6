"""The pure steps of RFT and of the trainer group's scatter/gather, on hand-made inputs."""
import pytest
import torch

from synthpref.algorithms import rft_steps as steps
from synthpref.data.readers import PromptRow
from synthpref.monitor.diversity import distinct_n
from synthpref.training.group import mean_stats, merge_rows, split


def judgment(sample_id, judge, score, verdict="SCORE"):
    return {"pair_id": sample_id, "judge_id": judge, "score": score, "verdict": verdict}


def test_sample_scores_weighted_mean_without_failed_verdicts():
    rows = [judgment("s1", "a", 1.0), judgment("s1", "b", 4.0), judgment("s2", "a", 2.0),
            judgment("s2", "b", None, "FAILED"), judgment("s3", "a", None, "FAILED")]
    scores = steps.sample_scores(rows, {"a": 1.0, "b": 3.0})
    assert scores == {"s1": pytest.approx((1 * 1.0 + 3 * 4.0) / 4), "s2": 2.0}      # s3: no judge scored it


def test_keep_best_threshold_and_unscored_counts():
    samples_of = {"p1": [{"sample_id": "a"}, {"sample_id": "b"}], "p2": [{"sample_id": "c"}, {"sample_id": "d"}],
                  "p3": [{"sample_id": "e"}]}
    scores = {"a": 0.2, "b": 0.9, "c": 0.1, "d": 0.3}
    kept, counts = steps.keep_best(samples_of, scores, threshold=0.5)
    assert [k["sample_id"] for k in kept] == ["b"] and kept[0]["score"] == 0.9
    assert counts == {"prompts": 3, "kept": 1, "below_threshold": 1, "unscored": 1}
    kept, counts = steps.keep_best(samples_of, scores, threshold=None)
    assert [k["sample_id"] for k in kept] == ["b", "d"] and counts["kept"] == 2
    stats = steps.score_stats(samples_of, scores)
    assert stats["mean_score"] == pytest.approx(1.5 / 4) and stats["best_score"] == pytest.approx(0.6)


def test_prompts_cycle_through_the_set_and_seeds_differ_per_iteration():
    prompts = [PromptRow(f"p{i}", [{"role": "user", "content": str(i)}], "t") for i in range(5)]
    ids = [[p.prompt_id for p in steps.prompts_for(prompts, it, 3)] for it in (1, 2, 3)]
    assert ids == [["p0", "p1", "p2"], ["p3", "p4", "p0"], ["p1", "p2", "p3"]]
    assert len(steps.prompts_for(prompts, 1, 50)) == 5                # never a prompt twice in one iteration
    assert steps.iteration_seed(0, 1) != steps.iteration_seed(0, 2) == steps.iteration_seed(0, 2)


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
