"""The steps of rejection-sampling fine-tuning as plain functions (the driver is rft.py)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from synthpref.data.readers import PromptRow
from synthpref.models.loading import pad_id
from synthpref.training.batches import TooLong, collate, encode


@dataclass
class KeptCounts:
    """What became of each prompt of an iteration; prompts = kept + below_threshold + unscored."""
    prompts: int = 0
    kept: int = 0                    # its best sample goes to SFT
    below_threshold: int = 0         # its best sample scored below keep_threshold
    unscored: int = 0                # no judge scored all of its samples


def keep_best(samples_of: dict[str, list[dict]], scores: dict[str, float],
              threshold: float | None) -> tuple[list[dict], KeptCounts]:
    """Each prompt's highest-scoring sample by the jury's score (the first of equals), if that score clears
    the threshold. Returns the survivors and what became of each prompt."""
    kept, counts = [], KeptCounts(prompts=len(samples_of))
    for samples in samples_of.values():
        scored = [s for s in samples if s["sample_id"] in scores]
        if not scored:
            counts.unscored += 1
            continue
        best = max(scored, key=lambda s: scores[s["sample_id"]])
        if threshold is not None and scores[best["sample_id"]] < threshold:
            counts.below_threshold += 1
            continue
        kept.append({**best, "score": scores[best["sample_id"]]})
        counts.kept += 1
    return kept, counts


def score_stats(samples_of: dict[str, list[dict]], scores: dict[str, float]) -> dict:
    """Mean score over all scored samples, and the mean over prompts of each prompt's best score."""
    values = [scores[s["sample_id"]] for ss in samples_of.values() for s in ss if s["sample_id"] in scores]
    bests = [max(scores[s["sample_id"]] for s in ss if s["sample_id"] in scores)
             for ss in samples_of.values() if any(s["sample_id"] in scores for s in ss)]
    return {"mean_score": statistics.fmean(values) if values else None,
            "best_score": statistics.fmean(bests) if bests else None, "scored": len(values)}


def sft_rows(kept: list[dict], conversations: dict[str, list[dict]], iteration: int) -> list[dict]:
    """The survivors as rows of the SFT table (TRL's conversational prompt/completion format)."""
    return [{"prompt_id": s["prompt_id"], "sample_id": s["sample_id"], "prompt": conversations[s["prompt_id"]],
             "completion": [{"role": "assistant", "content": s["text"]}], "score": s["score"],
             "iteration": iteration, "policy": s["policy"]} for s in kept]


def kl_batch(tokenizer, prompts: list[PromptRow], samples: list[dict], max_len: int) -> dict | None:
    rows = []
    for p, sample in zip(prompts, samples):
        try:
            rows.append(encode(tokenizer, p.messages, sample["text"], max_len, sample.get("token_ids")))
        except TooLong:
            continue
    return collate(rows, pad_id(tokenizer)) if rows else None


def kl_estimate(policy_logps: list[float], reference_logps: list[float]) -> float:
    """KL(pi || pi_0) ~ E_{y ~ pi}[log pi(y|x) - log pi_0(y|x)], the Monte-Carlo estimate over samples
    drawn from the current policy (the k1 estimator; Schulman 2020, "Approximating KL Divergence")."""
    return statistics.fmean(p - r for p, r in zip(policy_logps, reference_logps))
