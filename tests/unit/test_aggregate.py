import pytest

from synthpref.judging.aggregate import Vote, combine_orders, jury, pointwise_choice


def row(order, verdict, p=None, error=None):
    return {"order": order, "verdict": verdict, "p_first": p, "error": error}


def test_mean_prob_averages_both_orders():
    # ab: P(a first is better) = 0.8; ba: P(b first is better) = 0.4 -> P(a) = (0.8 + 0.6) / 2 = 0.7
    vote = combine_orders("j", row("ab", "A", 0.8), row("ba", "B", 0.4), "mean_prob")
    assert vote.p_a == pytest.approx(0.7)
    assert vote.winner == "A"
    assert vote.consistent is True


def test_position_bias_is_caught():
    # the judge always says "first": A in ab, and A (= b) in ba -> inconsistent
    mean = combine_orders("j", row("ab", "A", 0.9), row("ba", "A", 0.7), "mean_prob")
    assert mean.consistent is False
    assert mean.p_a == pytest.approx((0.9 + 0.3) / 2)
    assert mean.winner == "A"
    strict = combine_orders("j", row("ab", "A", 0.9), row("ba", "A", 0.7), "consistent")
    assert strict.winner == "TIE"


def test_consistent_rule_keeps_agreeing_text_verdicts():
    vote = combine_orders("j", row("ab", "B"), row("ba", "A"), "consistent")
    assert vote.winner == "B" and vote.consistent is True and vote.p_a == pytest.approx(0.0)


def test_failed_order_never_becomes_a_side():
    vote = combine_orders("j", row("ab", "A", 0.9), row("ba", "FAILED", error="timeout"), "mean_prob")
    assert vote.winner == "FAILED"
    assert "ba: timeout" in vote.error
    assert vote.p_a is None


def test_single_order():
    assert combine_orders("j", row("ab", "B", 0.2), None, "mean_prob").winner == "B"
    only_ba = combine_orders("j", None, row("ba", "A", 0.9), "mean_prob")
    assert only_ba.winner == "B" and only_ba.p_a == pytest.approx(0.1) and only_ba.consistent is None


def votes(*spec):
    return [Vote(f"j{i}", w, p, c) for i, (w, p, c) in enumerate(spec)]


def test_majority_vote_with_a_failed_judge():
    d = jury(votes(("A", 0.9, True), ("A", 0.6, True), ("B", 0.2, False), ("FAILED", None, None)), "majority")
    assert d.winner == "A"
    assert d.n_votes == 3
    assert d.agreement == pytest.approx(2 / 3)
    assert d.confidence == pytest.approx(2 / 3)
    assert d.consistent is False


def test_weighted_vote_overrules_majority():
    vs = votes(("A", 0.9, True), ("A", 0.8, True), ("B", 0.1, True))
    d = jury(vs, "weighted", weights={"j0": 1, "j1": 1, "j2": 3})
    assert d.winner == "B"
    assert d.confidence == pytest.approx(3 / 5)


def test_mean_prob_jury_and_ties():
    d = jury(votes(("A", 0.9, True), ("B", 0.3, True)), "mean_prob")
    assert d.p_a == pytest.approx(0.6) and d.winner == "A" and d.confidence == pytest.approx(0.6)
    assert jury(votes(("A", 0.9, True), ("B", 0.1, True)), "majority").winner == "TIE"
    assert jury(votes(("FAILED", None, None)), "majority").winner == "FAILED"


def test_pointwise_best_vs_worst():
    # one judge: its own scores
    c = pointwise_choice(["x", "y", "z"], {"j1": {"x": 0.9, "y": 0.1, "z": 0.5}})
    assert (c.best, c.worst, c.score_best, c.score_worst) == ("x", "y", 0.9, 0.1)
    # two judges on different scales: each is min-max scaled first
    # j1: x 1, y 0, z .5;  j2 (1-10 rating): x 1, y 0, z 4/6  ->  x 1, y 0, z 0.5833
    scores = {"j1": {"x": 0.9, "y": 0.1, "z": 0.5}, "j2": {"x": 8.0, "y": 2.0, "z": 6.0}}
    c = pointwise_choice(["x", "y", "z"], scores)
    assert (c.best, c.worst, c.outcome) == ("x", "y", "CHOSEN")
    assert c.score_best == pytest.approx(1.0) and c.score_worst == pytest.approx(0.0)
    assert c.agreement == pytest.approx(1.0)
    opposed = pointwise_choice(["x", "y"], {"text": {"x": 6.0, "y": 5.0}, "logprob": {"x": 0.01, "y": 0.99}})
    assert opposed.outcome == "TIE"                 # a 1-10 scale does not outweigh a probability
    failed_one = pointwise_choice(["x", "y"], {"j1": {"x": 1.0, "y": None}, "j2": {"x": 2.0, "y": 1.0}})
    assert failed_one.n_votes == 1 and failed_one.best == "x"
    assert pointwise_choice(["x", "y"], {"j1": {"x": 1.0, "y": 1.0}}).outcome == "TIE"
    assert pointwise_choice(["x", "y"], {"j1": {"x": None, "y": 1.0}}).outcome == "FAILED"


def test_consistent_rule_gives_a_flipped_vote_no_probability():
    # position-biased in both orders: a TIE vote, and under a mean_prob jury it must not pick a side
    vote = combine_orders("j", row("ab", "A", 0.9), row("ba", "A", 0.55), "consistent")
    assert vote.winner == "TIE" and vote.p_a == 0.5
    assert jury([vote], "mean_prob").winner == "TIE"


def test_vote_rules_score_sides_with_the_winner():
    d = jury(votes(("A", 0.6, True), ("A", 0.55, True), ("B", 0.01, True)), "majority")
    assert d.winner == "A" and d.p_a == pytest.approx(2 / 3) and d.confidence == pytest.approx(2 / 3)


def test_tie_votes_are_a_side_in_the_plurality():
    d = jury(votes(("A", 0.9, True), ("TIE", 0.5, False), ("TIE", 0.5, False)), "majority")
    assert d.winner == "TIE" and d.agreement == pytest.approx(2 / 3)
    d = jury(votes(("A", 0.9, True), ("A", 0.8, True), ("TIE", 0.5, False)), "majority")
    assert d.winner == "A" and d.p_a == 1.0
    assert jury(votes(("A", 0.9, True), ("TIE", 0.5, False)), "majority").winner == "TIE"
