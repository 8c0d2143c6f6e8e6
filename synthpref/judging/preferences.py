"""From a jury's judgments to preference rows: every pair judged (pairwise), or every sample scored and
each prompt's best vs worst (pointwise). Used by every job that makes preferences (label, rft)."""
from __future__ import annotations

import json
from dataclasses import dataclass

from synthpref.data.pairs import make_pairs
from synthpref.data.schema import content_id
from synthpref.judging.verdicts import FAILED, FIRST, TIE, Outcome


@dataclass
class PairCounts:
    """What became of the pairs of one batch of prompts; they add up: pairs = preferences + ties + failed_pairs."""
    pairs: int = 0
    identical_pairs: int = 0         # pairs of identical texts, never judged (not in `pairs`)
    preferences: int = 0
    ties: int = 0
    failed_pairs: int = 0
    consistent_pairs: int = 0        # both orders agreed, of `checked_pairs`
    checked_pairs: int = 0

    def add(self, outcome: Outcome) -> None:
        self.pairs += 1
        if outcome == Outcome.FAILED:
            self.failed_pairs += 1
        elif outcome == Outcome.TIE:
            self.ties += 1
        else:
            self.preferences += 1


@dataclass
class Judged:
    """A batch's judgment rows, preference rows, per-judge stats (bias.py) and counts."""
    rows: list[dict]
    preferences: list[dict]
    stats: dict
    counts: PairCounts
    choices: dict                    # pointwise: {prompt_id: PointChoice} (the jury's score of each sample)


def preference_row(judging, chosen: dict, rejected: dict, conversation: list[dict], judges: list[dict], *,
                   pair_id: str, score_chosen, score_rejected, confidence, n_votes: int, agreement,
                   consistent, votes: dict | None, principle: str | None = None) -> dict:
    """A TRL-ready row: conversational prompt/chosen/rejected plus scores and provenance (with the principle
    the pair was compared under, for constitutional judging)."""
    provenance = {**({"principle": principle} if principle else {}), "policy": chosen["policy"], "policy_dtype": chosen.get("dtype"),
                  "sample_ids": [chosen["sample_id"], rejected["sample_id"]], "seeds": [chosen["seed"], rejected["seed"]],
                  "judges": judges, "mode": judging.mode, "both_orders": judging.both_orders,
                  "order_rule": judging.order_rule, "jury_rule": judging.jury_rule, "votes": votes}
    return {"prompt_id": chosen["prompt_id"], "pair_id": pair_id, "prompt": conversation,
            "chosen": [{"role": "assistant", "content": chosen["text"]}],
            "rejected": [{"role": "assistant", "content": rejected["text"]}],
            "score_chosen": score_chosen, "score_rejected": score_rejected, "confidence": confidence,
            "n_votes": n_votes, "agreement": agreement, "position_consistent": consistent,
            "length_delta": len(chosen["text"]) - len(rejected["text"]),
            "provenance": json.dumps(provenance, ensure_ascii=False)}


def judge_pairwise(samples_of: dict, conversations: dict, jury, on_done=None) -> Judged:
    """Pair each prompt's completions, judge every pair (both orders, every judge), keep the decided ones."""
    judging = jury.cfg
    pairs, identical = make_pairs(samples_of, judging.max_pairs_per_prompt)
    rows, decisions, stats = jury.judge_pairs(pairs, conversations, on_done)
    counts, judges, prefs = PairCounts(identical_pairs=identical), jury.describe(), []
    for pair in pairs:
        decision, votes = decisions[pair.pair_id]
        if decision.consistent is not None:
            counts.checked_pairs += 1
            counts.consistent_pairs += int(decision.consistent)
        outcome = Outcome.FAILED if decision.winner == FAILED else Outcome.TIE if decision.winner == TIE else Outcome.CHOSEN
        counts.add(outcome)
        if outcome != Outcome.CHOSEN:
            continue
        a_wins = decision.winner == FIRST
        chosen, rejected = (pair.a, pair.b) if a_wins else (pair.b, pair.a)
        score_chosen = decision.p_a if a_wins else 1 - decision.p_a
        prefs.append(preference_row(judging, chosen, rejected, conversations[pair.prompt_id], judges,
                                    pair_id=pair.pair_id, score_chosen=score_chosen, score_rejected=1 - score_chosen,
                                    confidence=decision.confidence, n_votes=decision.n_votes,
                                    agreement=decision.agreement, consistent=decision.consistent,
                                    votes={v.judge_id: v.winner for v in votes},
                                    principle=getattr(jury.principle_of(pair.pair_id), "id", None)))
    return Judged(rows, prefs, stats, counts, {})


def judge_pointwise(samples_of: dict, conversations: dict, jury, on_done=None) -> Judged:
    """Score every completion with every judge; each prompt's best vs worst (by the jury's scores,
    aggregate.jury_scores) becomes a preference."""
    rows, choices, stats = jury.score_samples(samples_of, conversations, on_done)
    counts, judges, prefs = PairCounts(), jury.describe(), []
    for pid, samples in samples_of.items():
        if len(samples) < 2:
            continue
        choice = choices[pid]
        counts.add(choice.outcome)
        if choice.outcome != Outcome.CHOSEN:
            continue
        by_id = {s["sample_id"]: s for s in samples}
        chosen, rejected = by_id[choice.best], by_id[choice.worst]
        prefs.append(preference_row(jury.cfg, chosen, rejected, conversations[pid], judges,
                                    pair_id=content_id(pid, chosen["sample_id"], rejected["sample_id"]),
                                    score_chosen=choice.score_best, score_rejected=choice.score_worst,
                                    confidence=choice.agreement, n_votes=choice.n_votes,
                                    agreement=choice.agreement, consistent=None, votes=None))
    return Judged(rows, prefs, stats, counts, choices)


def judge(samples_of: dict, conversations: dict, jury, on_done=None) -> Judged:
    """The jury's mode decides: pairwise or pointwise."""
    run = judge_pairwise if jury.cfg.mode == "pairwise" else judge_pointwise
    return run(samples_of, conversations, jury, on_done)
