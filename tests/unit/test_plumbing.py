import numpy as np
import pytest

from synthpref.cluster.placement import core_plan, omp_binding_env, parse_cores
from synthpref.data.pairs import make_pairs
from synthpref.monitor import bias


def test_core_plan_hands_out_disjoint_cores():
    assert core_plan(2, cores=[0, 1]) == ["0", "1"]
    assert core_plan(1, cores=[0, 1]) == ["0-1"]
    assert core_plan(3, cores=[0, 1, 2, 3, 4, 5, 6]) == ["0-2", "3-4", "5-6"]
    assert core_plan(3, cores=[0, 1]) == ["0", "1", "0"]
    assert core_plan(2, setting="0-1") == ["0-1", "0-1"]


def test_core_lists_and_their_openmp_binding():
    assert parse_cores("0-3,6") == [0, 1, 2, 3, 6] and parse_cores("5") == [5]
    assert omp_binding_env("2-3") == {"OMP_NUM_THREADS": "2", "OMP_PLACES": "{2,3}", "OMP_PROC_BIND": "true"}


def test_pearson_from_sums_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    y = y + 0.5 * x
    a, b = bias.new_corr(), bias.new_corr()
    for i, (xi, yi) in enumerate(zip(x, y)):
        bias.add_point(a if i < 20 else b, float(xi), float(yi))
    assert bias.pearson(bias.merge(a, b)) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert bias.pearson(bias.new_corr()) is None


def test_pairs_skip_identical_texts_and_cap():
    s = [{"sample_id": str(i), "text": t} for i, t in enumerate(["x", "y", "x", "z"])]
    pairs, identical = make_pairs({"p": s})
    assert identical == 1 and len(pairs) == 5
    capped, _ = make_pairs({"p": s}, max_pairs_per_prompt=2)
    assert [(p.a["sample_id"], p.b["sample_id"]) for p in capped] == [("0", "1"), ("0", "3")]
    assert pairs[0].length_delta == 0


def test_pointwise_jury_of_function_judges_reports_agreement():
    from synthpref.config import JudgeConfig, JudgingConfig
    from synthpref.judging.jury import Jury

    fn = "synthpref.judging.functions:"
    jury = Jury(JudgingConfig(mode="pointwise", judges=[JudgeConfig(id="long", type="function", function=fn + "length"),
                                                        JudgeConfig(id="short", type="function", function=fn + "brevity"),
                                                        JudgeConfig(id="long2", type="function", function=fn + "length")]))
    samples_of = {"p": [{"sample_id": "a", "text": "aaaa"}, {"sample_id": "b", "text": "b"}],
                  "q": [{"sample_id": "c", "text": "cc"}, {"sample_id": "d", "text": "dddd"}]}
    rows, choices, stats = jury.score_samples(samples_of, {"p": [], "q": []})
    assert len(rows) == 12
    assert stats["agreement"] == {"long|long2": (2, 2), "long|short": (2, 0), "short|long2": (2, 0)}
    assert choices["p"].best == "a" and choices["q"].best == "d"     # two length judges outweigh one brevity judge
    assert bias.judge_report(stats["judges"]["long"])["score_length_correlation"] == pytest.approx(1.0)


CALLS = []


def counted_length(messages, completion):
    CALLS.append(completion)
    return len(completion)


def test_function_judge_scores_each_text_once_across_both_orders():
    from synthpref.config import JudgeConfig
    from synthpref.judging.backends import FunctionJudge, PairRequest

    judge = FunctionJudge(JudgeConfig(id="n", type="function", function="tests.unit.test_plumbing:counted_length"))
    conv = [{"role": "user", "content": "q"}]
    CALLS.clear()
    rows = judge.judge_pairs([PairRequest("p", "ab", conv, "long one", "x"), PairRequest("p", "ba", conv, "x", "long one")])
    assert [r["verdict"] for r in rows] == ["A", "B"]
    assert sorted(CALLS) == ["long one", "x"]


def test_shared_prefix_order_puts_every_first_order_before_any_second():
    from synthpref.sampling.engine import shared_prefix_order
    prompts = ["p0ab", "p0ba", "p1ab", "p1ba", "x", "p2ab", "p2ba"]
    groups = ["p0", "p0", "p1", "p1", None, "p2", "p2"]
    ordered, params, keys = shared_prefix_order(prompts, list(range(7)), list(range(7)), groups)
    assert ordered == ["p0ab", "p1ab", "x", "p2ab", "p0ba", "p1ba", "p2ba"]
    assert params == keys == [0, 2, 4, 5, 1, 3, 6]          # params and result keys move with their prompt


def test_a_new_table_schema_gives_runs_a_new_fingerprint(monkeypatch):
    """A folder written before a column was added is not resumed into (its shards could not be read
    together with the new ones): the schema version is part of every job's run tree."""
    from synthpref.config import LabelConfig, RFTConfig
    from synthpref.runtime import rerun

    before = rerun.run_tree(LabelConfig()), rerun.run_tree(RFTConfig())
    monkeypatch.setattr(rerun, "SCHEMA_VERSION", rerun.SCHEMA_VERSION + 1)
    after = rerun.run_tree(LabelConfig()), rerun.run_tree(RFTConfig())
    assert rerun.rerun_change(before[0], after[0]).startswith("schema_version:")
    assert rerun.rerun_change(before[1], after[1], RFTConfig.length_keys).startswith("schema_version:")
