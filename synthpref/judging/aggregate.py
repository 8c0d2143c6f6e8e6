"""From judgment rows to one decision per pair: both-order debiasing, then the jury.

Orders (per judge): `mean_prob` averages P(a better) over the two orders (Lee et al., 2023, RLAIF);
`consistent` lets a response win only if it wins in both orders, else a tie (Zheng et al., 2023,
MT-Bench). Jury (across judges): `majority` vote, `weighted` vote, or `mean_prob` (Verga et al., 2024,
"Replacing Judges with Juries"). Outcomes use the pair's own labels: "A" = response a, "B" = response b.
A FAILED judgment makes that judge's vote FAILED; a failed vote never counts for a side.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from synthpref.judging.verdicts import FAILED, FIRST, SECOND, TIE, Outcome, Verdict, p_from_verdict, verdict_from_p

_SWAP = {FIRST: SECOND, SECOND: FIRST, TIE: TIE}


@dataclass
class Vote:
    judge_id: str
    winner: Verdict              # A | B | TIE | FAILED, in the pair's own labels
    p_a: float | None            # P(a is better)
    consistent: bool | None      # same winner in both orders (None if one order or failed)
    error: str | None = None


def _p_first(row: dict) -> float | None:
    return row["p_first"] if row.get("p_first") is not None else p_from_verdict(row["verdict"])


def combine_orders(judge_id: str, ab: dict | None, ba: dict | None, rule: str, tie_margin: float = 0.0) -> Vote:
    """One judge's vote on a pair from its `ab` and (optionally) `ba` judgment rows."""
    shown = [r for r in (ab, ba) if r is not None]
    if not shown:
        raise ValueError(f"judge {judge_id}: no judgment for this pair")
    failed = [r for r in shown if r["verdict"] == FAILED]
    if failed:
        return Vote(judge_id, FAILED, None, None, "; ".join(f"{r['order']}: {r['error']}" for r in failed))
    if ba is None or ab is None:
        only = ab or ba
        p = _p_first(only)
        winner = only["verdict"] if only is ab else _SWAP[only["verdict"]]
        return Vote(judge_id, winner, p if only is ab else 1 - p, None)
    winner_ab, winner_ba = ab["verdict"], _SWAP[ba["verdict"]]
    consistent = winner_ab == winner_ba
    p_a = (_p_first(ab) + 1 - _p_first(ba)) / 2
    if rule == "mean_prob":
        winner = verdict_from_p(p_a, tie_margin)
    elif rule == "consistent":
        winner = winner_ab if consistent else TIE
        if not consistent:
            p_a = 0.5                        # no preference survives the order swap
    else:
        raise ValueError(f"unknown order rule {rule!r}")
    return Vote(judge_id, winner, p_a, consistent)


@dataclass
class Decision:
    winner: Verdict              # A | B | TIE | FAILED
    p_a: float | None
    confidence: float | None     # mean_prob: P(winner better); votes: share of weight for the winner
    n_votes: int                 # judges whose vote counted (not failed)
    agreement: float | None      # share of counted judges whose vote equals the decision
    consistent: bool | None      # every counted judge gave the same winner in both orders


def jury(votes: list[Vote], rule: str, weights: dict[str, float] | None = None, tie_margin: float = 0.0) -> Decision:
    """One decision from the judges' votes. Vote rules take the plurality over A, B and TIE (a tie for
    the top is a TIE), so one judge's opinion does not outvote judges that found no preference; their
    `p_a` is the (weighted) share of A among the A and B votes, so it always sides with the winner."""
    valid = [v for v in votes if v.winner != FAILED]
    if not valid:
        return Decision(FAILED, None, None, 0, None, None)
    if rule == "mean_prob":
        p_a = sum(v.p_a for v in valid) / len(valid)
        winner = verdict_from_p(p_a, tie_margin)
        confidence = max(p_a, 1 - p_a)
    elif rule in ("majority", "weighted"):
        weight = (lambda v: weights.get(v.judge_id, 1.0)) if rule == "weighted" and weights else (lambda v: 1.0)
        tally = {side: sum(weight(v) for v in valid if v.winner == side) for side in (FIRST, SECOND, TIE)}
        top = max(tally.values())
        leaders = [side for side, w in tally.items() if w == top]
        winner = leaders[0] if len(leaders) == 1 else TIE
        decided = tally[FIRST] + tally[SECOND]
        p_a = tally[FIRST] / decided if decided > 0 else 0.5
        total = sum(tally.values())
        confidence = tally[winner] / total if total > 0 else None
    else:
        raise ValueError(f"unknown jury rule {rule!r}")
    agreement = sum(1 for v in valid if v.winner == winner) / len(valid)
    flags = [v.consistent for v in valid if v.consistent is not None]
    consistent = all(flags) if flags else None
    return Decision(winner, p_a, confidence, len(valid), agreement, consistent)


@dataclass
class PointChoice:
    best: str | None             # sample ids, None when no choice could be made
    worst: str | None
    score_best: float | None
    score_worst: float | None
    outcome: Outcome
    n_votes: int
    agreement: float | None      # share of judges that themselves rank best above worst
    scores: dict[str, float] = field(default_factory=dict)   # the jury's score of each sample (jury_scores)


def _min_max(scores: dict[str, float]) -> dict[str, float]:
    low, high = min(scores.values()), max(scores.values())
    return {x: (v - low) / (high - low) if high > low else 0.5 for x, v in scores.items()}


def jury_scores(sample_ids: list[str], scores: dict[str, dict[str, float | None]],
                weights: dict[str, float] | None = None) -> tuple[dict[str, float], list[str]]:
    """The one rule for "score these samples" (best-vs-worst preferences, best-of-k selection): the
    (weighted) mean over judges. With one judge its own scores count; with several, each judge's scores
    for the prompt are first min-max scaled to [0, 1], so a 1-10 rating and a P(Yes) weigh alike. A judge
    that failed on any of the prompt's samples is left out for the prompt. Returns ({sample: score},
    judges counted)."""
    judges = [j for j, s in scores.items() if all(s.get(x) is not None for x in sample_ids)]
    if not judges or not sample_ids:
        return {}, []
    own = {j: {x: scores[j][x] for x in sample_ids} for j in judges}
    scaled = own if len(judges) == 1 else {j: _min_max(own[j]) for j in judges}
    w = {j: (weights or {}).get(j, 1.0) for j in judges}
    total = sum(w.values()) or float(len(judges))
    return {x: sum(w[j] * scaled[j][x] for j in judges) / total for x in sample_ids}, judges


def pointwise_choice(sample_ids: list[str], scores: dict[str, dict[str, float | None]],
                     weights: dict[str, float] | None = None) -> PointChoice:
    """Best vs worst by the jury's scores (`jury_scores`); equal best and worst is a tie."""
    combined, judges = jury_scores(sample_ids, scores, weights)
    if not judges or len(sample_ids) < 2:
        return PointChoice(None, None, None, None, Outcome.FAILED, 0, None, combined)
    best = max(sample_ids, key=lambda x: combined[x])
    worst = min(sample_ids, key=lambda x: combined[x])
    if combined[best] == combined[worst]:
        return PointChoice(None, None, combined[best], combined[worst], Outcome.TIE, len(judges), None, combined)
    agree = sum(1 for j in judges if scores[j][best] > scores[j][worst]) / len(judges)
    return PointChoice(best, worst, combined[best], combined[worst], Outcome.CHOSEN, len(judges), agree, combined)
