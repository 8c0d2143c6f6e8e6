import math

import pytest

from synthpref.judging.verdicts import (VerdictParseError, label_probs, normalise, p_from_verdict, parse_pairwise_text,
                                        parse_score_text, sigmoid, verdict_from_p)


def test_pairwise_text_with_rationale():
    verdict, rationale = parse_pairwise_text("A is vague; B answers the question.\n[[B]]")
    assert verdict == "B"
    assert rationale == "A is vague; B answers the question."


@pytest.mark.parametrize("raw, verdict", [("[[A]]", "A"), ("[[ tie ]]", "TIE"), ("x [[B]] and again [[B]]", "B")])
def test_pairwise_text_markers(raw, verdict):
    assert parse_pairwise_text(raw)[0] == verdict


@pytest.mark.parametrize("raw, reason", [("A is better", "no verdict"), ("[[A]] or maybe [[B]]", "conflicting"),
                                         ("", "no verdict"), ("[A]", "no verdict")])
def test_pairwise_text_rejects(raw, reason):
    with pytest.raises(VerdictParseError, match=reason):
        parse_pairwise_text(raw)


def test_score_text():
    assert parse_score_text("fine answer. Rating: [[7]]") == (7.0, "fine answer. Rating:")
    with pytest.raises(VerdictParseError, match="outside"):
        parse_score_text("[[11]]")
    with pytest.raises(VerdictParseError, match="conflicting"):
        parse_score_text("[[3]] [[4]]")


def test_normalise_is_a_softmax_over_labels():
    # log P(A) = log 0.3, log P(B) = log 0.1 over the whole vocabulary -> 0.75 / 0.25 over the labels
    probs = normalise({"A": math.log(0.3), "B": math.log(0.1)})
    assert probs["A"] == pytest.approx(0.75)
    assert probs["B"] == pytest.approx(0.25)
    assert normalise({"A": -1e9 + 0.0, "B": -math.inf})["A"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        normalise({"A": -math.inf, "B": None})


def test_verdict_from_p_and_back():
    assert verdict_from_p(0.7) == "A"
    assert verdict_from_p(0.3) == "B"
    assert verdict_from_p(0.5) == "TIE"
    assert verdict_from_p(0.55, tie_margin=0.1) == "TIE"
    assert [p_from_verdict(v) for v in ("A", "B", "TIE", "FAILED")] == [1.0, 0.0, 0.5, None]
    assert sigmoid(0) == 0.5
    assert sigmoid(-800) == pytest.approx(0.0) and sigmoid(800) == pytest.approx(1.0)


def test_label_probs_sum_spellings_then_renormalise():
    # P("A") = 0.2, P(" A") = 0.1, P("B") = 0.1, P(" B") missing -> A: 0.3 / 0.4 = 0.75
    probs = label_probs({"A": [math.log(0.2), math.log(0.1)], "B": [math.log(0.1)]})
    assert probs["A"] == pytest.approx(0.75) and probs["B"] == pytest.approx(0.25)
    assert label_probs({"A": [math.log(0.5)], "B": []}) == {"A": 1.0, "B": 0.0}
    with pytest.raises(ValueError):
        label_probs({"A": [], "B": [-math.inf]})
