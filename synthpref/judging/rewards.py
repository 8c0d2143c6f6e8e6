"""RL rewards from the jury: every judge scores every completion (pointwise), each judgment becomes a
reward on one scale per judge, and a completion's reward is the judges' weighted mean.

What a judgment's score means as a reward (`judge_reward`):
- a rating template read from logprobs (direct RLAIF, expected_score.py): the expected rating rescaled to
  [-1, 1], e.g. (s - 4.5) / 4.5 on 0-9;
- a two-choice logprob template (Yes/No): 2 P(Yes) - 1;
- a text verdict (a 1-10 rating parsed from generated text): (s - 5.5) / 4.5;
- a reward model or a function: its score as it is.
A FAILED judgment gives no reward: the completion is left out of the update and counted by reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from synthpref.judging.backends import PointRequest
from synthpref.judging.expected_score import is_rating_scale, rescale
from synthpref.judging.verdicts import FAILED


def judge_reward(judge, score: float) -> float:
    """The reward one judge's pointwise score means (see the module docstring)."""
    kind, verdict = judge.cfg.type, judge.cfg.verdict
    if kind in ("reward_model", "function"):
        return score
    if verdict == "text":
        return rescale(score, 1, 10)
    choices = judge.template.choices
    if is_rating_scale(choices):
        values = [float(c) for c in choices]
        return rescale(score, min(values), max(values))
    return 2.0 * score - 1.0


@dataclass
class Rewards:
    """The rewards of one batch of completions."""
    value: dict[str, float] = field(default_factory=dict)        # sample_id -> weighted mean over judges
    failed: dict[str, str] = field(default_factory=dict)         # sample_id -> the first judge's error
    by_judge: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)               # the judgment rows


def score_completions(jury, samples: list[dict], conversations: dict[str, list[dict]], on_done=None) -> Rewards:
    """Every judge of `jury` scores every sample at once (all pools busy); the rewards combine them by
    judge weight. A sample with any FAILED judgment has no reward (counted in `failed`)."""
    requests = [PointRequest(s["sample_id"], conversations[s["prompt_id"]], s["text"], s.get("token_ids"))
                for s in samples]
    out = Rewards()
    for judge, rows in zip(jury.judges, jury.run_all(lambda j: j.start_scores(requests, on_done))):
        out.rows.extend(rows)
        mine = out.by_judge.setdefault(judge.id, {})
        for row in rows:
            if row["verdict"] == FAILED:
                out.failed.setdefault(row["pair_id"], f"{judge.id}: {row['error']}")
            else:
                mine[row["pair_id"]] = judge_reward(judge, row["score"])
    weights = {j.id: j.cfg.weight for j in jury.judges}
    total = sum(weights.values()) or 1.0
    for s in samples:
        sid = s["sample_id"]
        if sid not in out.failed:
            out.value[sid] = sum(weights[j] * out.by_judge[j][sid] for j in out.by_judge) / total
    return out
