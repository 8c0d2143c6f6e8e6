"""The steps of a self-rewarding iteration as plain functions (the driver is self_reward.py): best-vs-worst
pair selection (optionally length-controlled), the training set's mix of self-made, earlier and fresh real
pairs, and the seed SFT."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from synthpref.config import DataConfig
from synthpref.data.prompts import read_rows, round_seed
from synthpref.data.quarantine import write_quarantine
from synthpref.data.readers import PromptRow

from synthpref.data.schema import MESSAGES
from synthpref.errors import no_usable_rows
from synthpref.models.loading import pad_id
from synthpref.monitor.metrics import progress
from synthpref.training.batches import TooLong, collate, encode, length_sorted_batches, shuffled
from synthpref.training.dpo_data import DPOPair, encode_pair

PAIRS = pa.schema([          # iterations/NNNN/pairs.parquet: TRL's prompt/chosen/rejected plus where each came from
    ("prompt_id", pa.string()),
    ("prompt", MESSAGES),
    ("chosen", MESSAGES),
    ("rejected", MESSAGES),
    ("score_chosen", pa.float64()),
    ("score_rejected", pa.float64()),
    ("chosen_id", pa.string()),            # sample ids (null for real pairs)
    ("rejected_id", pa.string()),
    ("chosen_token_ids", pa.list_(pa.int32())),    # the ids the sampler produced (trained on as they are)
    ("rejected_token_ids", pa.list_(pa.int32())),
    ("iteration", pa.int64()),
    ("source", pa.string()),               # self | fresh
])


@dataclass
class PairCounts:
    """What became of each prompt of an iteration: prompts = pairs + ties + unscored."""
    prompts: int = 0
    pairs: int = 0
    ties: int = 0              # every scored candidate got the same score: dropped
    unscored: int = 0          # fewer than 2 candidates with a score (failed verdicts, sampling errors)


def select_pairs(samples_of: dict[str, list[dict]], scores: dict[str, float | None],
                 margin: float | None = None) -> tuple[list[tuple[dict, dict]], PairCounts]:
    """Each prompt's highest- vs lowest-scoring candidate (Yuan et al. 2024), ties dropped. With `margin`
    (Meta-Rewarding, Wu et al. 2024), the chosen one is the shortest (in tokens) of the candidates scoring
    within `margin` of the top and above the lowest score. The first of equals wins, so it is stable."""
    out, counts = [], PairCounts(prompts=len(samples_of))
    for samples in samples_of.values():
        scored = [s for s in samples if scores.get(s["sample_id"]) is not None]
        if len(scored) < 2:
            counts.unscored += 1
            continue
        score = {s["sample_id"]: scores[s["sample_id"]] for s in scored}
        top, low = max(score.values()), min(score.values())
        if top == low:
            counts.ties += 1
            continue
        rejected = next(s for s in scored if score[s["sample_id"]] == low)
        if margin is None:
            chosen = next(s for s in scored if score[s["sample_id"]] == top)
        else:
            near = [s for s in scored if score[s["sample_id"]] >= top - margin and score[s["sample_id"]] > low]
            chosen = min(near, key=lambda s: s.get("n_tokens") or len(s["text"]))
        out.append((chosen, rejected))
        counts.pairs += 1
    return out, counts


def pair_rows(selected: list[tuple[dict, dict]], scores: dict, conversations: dict, iteration: int) -> list[dict]:
    """Selected pairs as rows of the PAIRS table."""
    return [{"prompt_id": c["prompt_id"], "prompt": conversations[c["prompt_id"]],
             "chosen": [{"role": "assistant", "content": c["text"]}],
             "rejected": [{"role": "assistant", "content": r["text"]}],
             "score_chosen": scores[c["sample_id"]], "score_rejected": scores[r["sample_id"]],
             "chosen_id": c["sample_id"], "rejected_id": r["sample_id"], "chosen_token_ids": c.get("token_ids"),
             "rejected_token_ids": r.get("token_ids"), "iteration": iteration, "source": "self"} for c, r in selected]


def fresh_rows(pool: list, used: int, iteration: int, fraction: float, n_self: int) -> list[dict]:
    """The real pairs mixed into an iteration: round(fraction * n_self / (1 - fraction)) of them, so they are
    `fraction` of the training set, the ones after the `used` pairs of earlier iterations (cycling through
    the pool when it runs out)."""
    n = min(len(pool), round(fraction * n_self / (1 - fraction))) if pool and fraction else 0
    rows = [pool[(used + i) % len(pool)] for i in range(n)]
    return [{"prompt_id": row.prompt_id, "prompt": row.messages,
             "chosen": [{"role": "assistant", "content": row.completions[0]}],
             "rejected": [{"role": "assistant", "content": row.completions[1]}], "score_chosen": None,
             "score_rejected": None, "chosen_id": None, "rejected_id": None, "chosen_token_ids": None,
             "rejected_token_ids": None, "iteration": iteration, "source": "fresh"} for row in rows]


def encode_training_pairs(tokenizer, rows: list[dict], max_len: int, quarantined: list[dict]) -> list[DPOPair]:
    """PAIRS rows as DPO pairs (self-made ones on the sampler's own token ids); rows that do not fit max_len
    or whose two responses are the same tokens are quarantined with their reason."""
    out = []
    for row in rows:
        try:
            out.append(encode_pair(tokenizer, row["prompt"], row["chosen"][0]["content"], row["rejected"][0]["content"],
                                   max_len, source=row["source"], chosen_ids=row["chosen_token_ids"],
                                   rejected_ids=row["rejected_token_ids"]))
        except TooLong as exc:
            quarantined.append({"prompt_id": row["prompt_id"], "reason": "too_long", "detail": str(exc)})
        except ValueError as exc:
            quarantined.append({"prompt_id": row["prompt_id"], "reason": "identical", "detail": str(exc)})
    return out


def sft_batches(tokenizer, rows: list, max_len: int, batch_size: int, seed: int, quarantined: list[dict]) -> list[dict]:
    """Seed SFT rows (PromptRows whose first completion is the target) as length-sorted batches in a seeded
    order; rows too long are quarantined."""
    encoded = []
    for row in rows:
        try:
            encoded.append(encode(tokenizer, row.messages, row.completions[0], max_len))
        except TooLong as exc:
            quarantined.append({"source": row.source, "reason": "too_long", "detail": str(exc)})
    order = shuffled(length_sorted_batches([len(e.input_ids) for e in encoded], batch_size), seed)
    return [collate([encoded[i] for i in index], pad_id(tokenizer)) for index in order]


def sft_target(row: PromptRow) -> str | None:
    """The response a seed SFT row teaches: `completion` (a string, or TRL's [{"role": "assistant", ...}]),
    else the first of its completions (chosen of a chosen/rejected row); None when it has neither."""
    target = row.meta.get("completion")
    if isinstance(target, list) and target and isinstance(target[-1], dict):
        target = target[-1].get("content")
    if isinstance(target, str) and target.strip():
        return target
    return row.completions[0] if row.completions else None


def seed_sft(run) -> None:
    """SFT on the seed instruction data and judge-format examples (IFT + EFT), once, before iteration 0; the
    result is M_0: saved as out/m0 (Hugging Face format, the reference of reference: initial) and as
    checkpoint iter0, and loaded into the engines as version 0."""
    s, t = run.cfg.seed_sft, run.cfg.train
    rows, bad = [], []
    for key, path in (("seed_sft.data", s.data), ("seed_sft.judge_data", s.judge_data)):
        if not path:
            continue
        found = 0
        for item in read_rows(DataConfig(path=path, limit=s.limit)):
            if isinstance(item, PromptRow) and sft_target(item) is not None:
                rows.append(PromptRow(item.prompt_id, item.messages, item.source, {}, [sft_target(item)]))
                found += 1
            else:
                bad.append(item.to_json() if not isinstance(item, PromptRow) else
                           {"source": item.source, "reason": "no_completion",
                            "detail": "a seed SFT row needs completion (or chosen/completions)"})
        if not found:
            raise no_usable_rows("seed SFT rows (prompt + completion)", path, len(bad), f"{key}")
    if not rows:                                           # no seed data configured: M_0 is policy.model
        return
    run.metrics.rewind(0, ("seed_sft",))                   # a seed SFT cut short by a kill is done again
    size = t.micro_batch * t.world_size
    for epoch in range(1, s.epochs + 1):
        batches = sft_batches(run.tokenizer, rows, t.max_len, size, round_seed(run.cfg.seed, "seed-sft", epoch),
                              bad if epoch == 1 else [])
        bar = progress(len(batches), f"seed SFT epoch {epoch}", "step", run.cfg.progress)
        for n, batch in enumerate(batches, 1):
            stats = run.policy.train("train_sft", batch)
            run.metrics.scalars("seed_sft", (epoch - 1) * len(batches) + n, stats)
            bar.update(1)
        bar.close()
    write_quarantine(run.job.out / "seed_sft_quarantine.jsonl", bad)
    run.policy.save_pretrained(run.job.out / "m0")         # M_0 as a model: the reference of reference: initial
    run.checkpoint(0)
    run.sync(0)
