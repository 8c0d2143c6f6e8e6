"""Turning judge output into verdicts: strict text parsing and logprob-to-probability math."""
from __future__ import annotations

import math
import re
from enum import StrEnum


class Verdict(StrEnum):
    """A judgment of a pair, in the order shown (A = the first response), or a vote in the pair's own labels."""
    FIRST = "A"
    SECOND = "B"
    TIE = "TIE"
    FAILED = "FAILED"


class Outcome(StrEnum):
    """What became of a pair (pairwise) or of a prompt's samples (pointwise, best vs worst)."""
    CHOSEN = "CHOSEN"
    TIE = "TIE"
    FAILED = "FAILED"


FIRST, SECOND, TIE, FAILED = Verdict.FIRST, Verdict.SECOND, Verdict.TIE, Verdict.FAILED

_PAIR_MARK = re.compile(r"\[\[\s*(A|B|TIE)\s*\]\]", re.IGNORECASE)
_SCORE_MARK = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


class VerdictParseError(ValueError):
    """The judge's text has no verdict, or contradicting ones."""


def parse_pairwise_text(raw: str) -> tuple[str, str]:
    """`...reasoning... [[A]]` -> ("A", "...reasoning..."). Exactly one distinct marker is accepted."""
    marks = [m.group(1).upper() for m in _PAIR_MARK.finditer(raw)]
    if not marks:
        raise VerdictParseError("no verdict marker [[A]], [[B]] or [[TIE]] found")
    if len(set(marks)) > 1:
        raise VerdictParseError(f"conflicting verdict markers: {sorted(set(marks))}")
    last = list(_PAIR_MARK.finditer(raw))[-1]
    return marks[0], raw[:last.start()].strip()


def parse_score_text(raw: str, low: float = 1, high: float = 10) -> tuple[float, str]:
    """`...reasoning... [[7]]` -> (7.0, "...reasoning..."); out-of-range or several scores fail."""
    marks = list(_SCORE_MARK.finditer(raw))
    if not marks:
        raise VerdictParseError("no rating marker [[N]] found")
    values = {float(m.group(1)) for m in marks}
    if len(values) > 1:
        raise VerdictParseError(f"conflicting ratings: {sorted(values)}")
    value = values.pop()
    if not low <= value <= high:
        raise VerdictParseError(f"rating {value} outside [{low}, {high}]")
    return value, raw[:marks[-1].start()].strip()


def normalise(logprobs: dict[str, float]) -> dict[str, float]:
    """Label logprobs -> probabilities renormalised over the labels (a softmax over the labels)."""
    finite = {k: v for k, v in logprobs.items() if v is not None and v > -math.inf}
    if not finite:
        raise ValueError("no finite logprob for any label")
    top = max(finite.values())
    mass = {k: math.exp(v - top) if k in finite else 0.0 for k, v in logprobs.items()}
    total = sum(mass.values())
    return {k: m / total for k, m in mass.items()}


def label_probs(logprobs: dict[str, list[float]]) -> dict[str, float]:
    """Per-label token logprobs (e.g. "A" and " A") -> P(label) renormalised over the labels: the
    probability mass of each label's spellings, then a softmax over labels."""
    merged = {}
    for label, values in logprobs.items():
        finite = [v for v in values if v is not None and v > -math.inf]
        if finite:
            top = max(finite)
            merged[label] = top + math.log(sum(math.exp(v - top) for v in finite))
        else:
            merged[label] = -math.inf
    return normalise(merged)


def within_tie_margin(p_first: float, tie_margin: float) -> bool:
    """The one tie rule: P(first is better) within `tie_margin` of 0.5 is a tie."""
    return abs(p_first - 0.5) <= tie_margin


def verdict_from_p(p_first: float, tie_margin: float = 0.0) -> Verdict:
    """P(first is better) -> A, B or TIE (within `tie_margin` of 0.5)."""
    if within_tie_margin(p_first, tie_margin):
        return TIE
    return FIRST if p_first > 0.5 else SECOND


def verdict_from_scores(first: float, second: float, tie_margin: float = 0.0) -> tuple[Verdict, float]:
    """Two responses' scalar scores -> (verdict, P(first better) = sigmoid(first - second)), Bradley-Terry."""
    p_first = sigmoid(first - second)
    return (TIE if first == second else verdict_from_p(p_first, tie_margin)), p_first


def p_from_verdict(verdict: str) -> float | None:
    """Text verdicts as probabilities for averaging: A -> 1, B -> 0, TIE -> 0.5; FAILED has none."""
    return {FIRST: 1.0, SECOND: 0.0, TIE: 0.5}.get(verdict)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
