"""The label job's summary: counts summed over every shard of the plan (run now or earlier), per-judge
bias figures, judge agreement, dtypes, tokens and cost per label."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from synthpref.data.quarantine import by_reason
from synthpref.data.shards import Shard, ShardStore
from synthpref.judging.preferences import PairCounts
from synthpref.monitor import bias

OUTPUTS = ("preferences", "judgments", "samples", "prompts", "quarantine.jsonl", "metrics.jsonl", "summary.json")


@dataclass
class ShardCounts(PairCounts):
    """One shard's counts (and, summed, the job's): the jury's PairCounts plus what the shard sampled."""
    prompts: int = 0
    samples: int = 0
    unpaired_prompts: int = 0        # prompts with fewer than 2 completions
    judgments: int = 0
    failed_verdicts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chosen_longer: int = 0

    def __add__(self, other: "ShardCounts") -> "ShardCounts":
        return ShardCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_stats(cls, stats: dict) -> "ShardCounts":
        return cls(**{f.name: stats[f.name] for f in dataclasses.fields(cls)})


def sampling_errors(store: ShardStore, shards: list[Shard]) -> list[dict]:
    return [e for s in shards if s.shard_id in store.manifest["shards"] for e in store.stats(s.shard_id)["sampling_errors"]]


def summarise(cfg, store: ShardStore, shards: list[Shard], quarantined: list, n_read: int, skipped: int) -> dict:
    """Counts summed over every shard of the plan (run now or earlier), and per-judge bias figures."""
    totals = ShardCounts()
    judges: dict[str, dict] = {}
    agreement: dict[str, tuple] = {}
    principles: dict[str, dict] = {}
    for s in shards:
        stats = store.stats(s.shard_id)
        totals = totals + ShardCounts.from_stats(stats)
        for jid, js in stats["judges"].items():
            judges[jid] = bias.merge_judge_stats(judges.get(jid, bias.new_judge_stats()), js)
        for key, (n, same) in stats["judge_agreement"].items():
            agreement[key] = (agreement.get(key, (0, 0))[0] + n, agreement.get(key, (0, 0))[1] + same)
        for pid, ps in stats.get("principles", {}).items():
            principles[pid] = bias.merge(principles.get(pid, {}), ps)
    reasons = by_reason(quarantined)
    n_sampling_errors = len(sampling_errors(store, shards))
    if n_sampling_errors:
        reasons["sampling_failed"] = n_sampling_errors
    counts = {"rows_read": n_read, "prompts": totals.prompts, "quarantined_rows": len(quarantined),
              "quarantined": len(quarantined) + n_sampling_errors, "samples": totals.samples,
              "sampling_errors": n_sampling_errors, "unpaired_prompts": totals.unpaired_prompts, "pairs": totals.pairs,
              "identical_pairs": totals.identical_pairs, "preferences": totals.preferences,
              "ties": totals.ties, "failed_pairs": totals.failed_pairs, "judgments": totals.judgments,
              "failed_verdicts": totals.failed_verdicts}
    checked = totals.checked_pairs
    return {
        "dtypes": merged_dtypes(store.stats(s.shard_id).get("dtypes", {}) for s in shards),
        "output_dir": str(Path(cfg.output_dir).resolve()),
        "counts": counts,
        "quarantined_by_reason": reasons,
        "position_consistency": totals.consistent_pairs / checked if checked else None,
        "judges": {jid: bias.judge_report(js) for jid, js in judges.items()},
        "judge_agreement": bias.agreement_report(agreement),
        **({"principles": bias.principle_report(principles)} if principles else {}),
        "chosen_longer_rate": totals.chosen_longer / totals.preferences if totals.preferences else None,
        "tokens": {"prompt": totals.prompt_tokens, "completion": totals.completion_tokens,
                   "per_label": ((totals.prompt_tokens + totals.completion_tokens) / totals.preferences
                                 if totals.preferences else None)},
        "cost": cost_report(cfg, judges, totals.preferences),
        "shards": {"total": len(shards), "skipped_as_done": skipped, "run": len(shards) - skipped},
        "outputs": {name: str(Path(cfg.output_dir) / name) for name in OUTPUTS},
    }


def merged_dtypes(per_shard) -> dict[str, str]:
    """{component: dtype} over the shards' records ("a, b" where shards ran in different dtypes)."""
    seen: dict[str, set] = {}
    for dtypes in per_shard:
        for name, dtype in dtypes.items():
            seen.setdefault(name, set()).update(dtype.split(", "))
    return {name: ", ".join(sorted(values)) for name, values in seen.items()}


def cost_report(cfg, judges: dict[str, dict], labels: int) -> dict | None:
    """USD spent on judge tokens, in all and per preference label, for judges with prices in the config
    (None when no judge has one). A human preference label costs about $0.50-$5."""
    by_judge = {}
    for jc in cfg.judging.judges:
        if jc.usd_per_1m_prompt_tokens is None and jc.usd_per_1m_completion_tokens is None:
            continue
        stats = judges.get(jc.id, {})
        by_judge[jc.id] = (stats.get("prompt_tokens", 0) * (jc.usd_per_1m_prompt_tokens or 0)
                           + stats.get("completion_tokens", 0) * (jc.usd_per_1m_completion_tokens or 0)) / 1e6
    if not by_judge:
        return None
    total = sum(by_judge.values())
    return {"usd_total": total, "usd_per_label": total / labels if labels else None, "by_judge": by_judge}
