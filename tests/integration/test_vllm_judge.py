import pytest

from synthpref.config import JudgeConfig, JudgingConfig
from synthpref.data.pairs import Pair
from synthpref.judging.backends import PairRequest, ModelJudge
from synthpref.judging.jury import Jury, engine_key
from synthpref.judging.templates import PAIRWISE_LOGPROB, PAIRWISE_TEXT

pytestmark = pytest.mark.integration
CONV = [{"role": "user", "content": "tell me about the moon"}]


def requests(n):
    out = []
    for i in range(n):
        out.append(PairRequest(f"pair{i}", "ab", CONV, f"short {i}", f"a much longer answer {i} " * 3))
        out.append(PairRequest(f"pair{i}", "ba", CONV, f"a much longer answer {i} " * 3, f"short {i}"))
    return out


def test_logprob_verdicts_read_p_first_from_one_token(judge_group):
    judge = ModelJudge(JudgeConfig(id="first", verdict="logprob"), "pairwise", judge_group)
    rows = judge.judge_pairs(requests(4))
    assert len(rows) == 8
    assert all(r["verdict"] == "A" and r["p_first"] > 0.9 for r in rows)   # the always-first judge
    assert all(r["template_hash"] == PAIRWISE_LOGPROB.hash for r in rows)
    assert all(r["completion_tokens"] == 1 and r["prompt_tokens"] > 50 for r in rows)


def test_text_verdicts_parse_strictly_and_keep_raw(judge_group):
    assert judge_group.dtype() == "float32"        # the dtype the fixture pins is the one the engine runs
    judge = ModelJudge(JudgeConfig(id="first-text", verdict="text", max_tokens=8), "pairwise", judge_group)
    rows = judge.judge_pairs(requests(3))
    assert [r["verdict"] for r in rows] == ["A"] * 6
    assert all("[[A]]" in r["raw"] and r["template_hash"] == PAIRWISE_TEXT.hash for r in rows)
    cut = ModelJudge(JudgeConfig(id="cut", verdict="text", max_tokens=2), "pairwise", judge_group)
    failed = cut.judge_pairs(requests(1))
    assert [r["verdict"] for r in failed] == ["FAILED", "FAILED"]
    assert all(r["raw"] and "[[A]]".startswith(r["raw"]) and "unparseable" in r["error"] for r in failed)


def test_over_long_judge_prompt_fails_alone(judge_group):
    judge = ModelJudge(JudgeConfig(id="first", verdict="logprob"), "pairwise", judge_group)
    batch = requests(2) + [PairRequest("huge", "ab", CONV, "sea " * 3000, "x")]
    rows = judge.judge_pairs(batch)
    assert [r["verdict"] for r in rows] == ["A"] * 4 + ["FAILED"]
    assert "prompt_too_long" in rows[-1]["error"]


def test_jury_of_three_catches_the_position_biased_judges(judge_group, first_judge_model):
    cfg = JudgingConfig(order_rule="consistent", jury_rule="majority", judges=[
        JudgeConfig(id="first-logprob", model=first_judge_model, verdict="logprob"),
        JudgeConfig(id="first-text", model=first_judge_model, verdict="text", max_tokens=8),
        JudgeConfig(id="longer", type="function", function="synthpref.judging.functions:length"),
    ])
    groups = {engine_key(first_judge_model, cfg.judges[0].engine, cfg.judges[0].pool): judge_group}
    jury = Jury(cfg, pools=groups)
    assert len(jury.pools) == 1                          # both vLLM judges share the one engine
    a = {"sample_id": "a", "text": "a long and careful answer about the moon", "seed": 1}
    b = {"sample_id": "b", "text": "moon", "seed": 2}
    pairs = [Pair(f"p{i}", "q", dict(a, text=a["text"] + str(i)), b) for i in range(3)]
    rows, decisions, stats = jury.judge_pairs(pairs, {"q": CONV})
    assert len(rows) == 3 * 3 * 2
    for pair in pairs:
        decision, votes = decisions[pair.pair_id]
        assert [v.winner for v in votes] == ["TIE", "TIE", "A"]
        assert [v.p_a for v in votes[:2]] == [0.5, 0.5]     # flipped votes carry no preference
        assert decision.winner == "TIE" and decision.n_votes == 3   # two no-preference votes outvote one
        assert decision.agreement == pytest.approx(2 / 3)
        assert decision.consistent is False
    assert stats["judges"]["first-logprob"]["flips"] == 3 and stats["judges"]["first-logprob"]["both_orders"] == 3
    assert stats["judges"]["longer"]["flips"] == 0
    assert stats["agreement"] == {"first-logprob|first-text": (3, 3), "first-logprob|longer": (3, 0),
                                  "first-text|longer": (3, 0)}


def test_pointwise_logprob_scores(judge_group):
    from synthpref.judging.backends import PointRequest
    from synthpref.judging.templates import POINTWISE_LOGPROB

    judge = ModelJudge(JudgeConfig(id="yes-no", verdict="logprob"), "pointwise", judge_group)
    rows = judge.score([PointRequest(f"s{i}", CONV, f"the moon is far away {i}") for i in range(3)])
    assert [r["verdict"] for r in rows] == ["SCORE"] * 3 and [r["order"] for r in rows] == ["point"] * 3
    assert all(0.0 < r["score"] < 1.0 and r["template_hash"] == POINTWISE_LOGPROB.hash for r in rows)
