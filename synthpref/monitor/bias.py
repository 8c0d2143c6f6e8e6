"""Judge bias statistics that add up across shards: position flips and length correlation.

Each statistic is kept as additive sums per shard (so a resumed job reports the same figures as an
uninterrupted one) and turned into rates at the end.
"""
from __future__ import annotations

import math


def new_corr() -> dict:
    return {"n": 0, "sx": 0.0, "sy": 0.0, "sxx": 0.0, "syy": 0.0, "sxy": 0.0}


def add_point(acc: dict, x: float, y: float) -> None:
    acc["n"] += 1
    acc["sx"] += x
    acc["sy"] += y
    acc["sxx"] += x * x
    acc["syy"] += y * y
    acc["sxy"] += x * y


def merge(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}


def pearson(acc: dict) -> float | None:
    """Pearson correlation from sums; None with fewer than 2 points or no variance."""
    n = acc["n"]
    if n < 2:
        return None
    vx = n * acc["sxx"] - acc["sx"] ** 2
    vy = n * acc["syy"] - acc["sy"] ** 2
    if vx <= 1e-12 or vy <= 1e-12:
        return None
    return (n * acc["sxy"] - acc["sx"] * acc["sy"]) / math.sqrt(vx * vy)


def new_judge_stats() -> dict:
    """Per-judge sums: votes, failures, both-order pairs, flips; pairwise corr(P(a better), len a - len b)
    under "length", pointwise corr(score, len) under "score_length"."""
    return {"votes": 0, "failed": 0, "both_orders": 0, "flips": 0, "length": new_corr(), "score_length": new_corr(),
            "prompt_tokens": 0, "completion_tokens": 0, "retries": 0}


_COUNTS = ("votes", "failed", "both_orders", "flips", "prompt_tokens", "completion_tokens", "retries")


def add_call(stats: dict, row: dict) -> None:
    """Count one judge call's tokens and retries (every attempt after the first)."""
    stats["prompt_tokens"] += row.get("prompt_tokens") or 0
    stats["completion_tokens"] += row.get("completion_tokens") or 0
    stats["retries"] += max(0, (row.get("attempts") or 1) - 1)


def merge_judge_stats(a: dict, b: dict) -> dict:
    out = {k: a.get(k, 0) + b.get(k, 0) for k in _COUNTS}
    for key in ("length", "score_length"):
        out[key] = merge(a.get(key, new_corr()), b.get(key, new_corr()))
    return out


def judge_report(stats: dict) -> dict:
    both = stats["both_orders"]
    return {"votes": stats["votes"], "failed": stats["failed"], "both_order_pairs": both,
            "position_flip_rate": stats["flips"] / both if both else None,
            "length_correlation": pearson(stats["length"]),
            "score_length_correlation": pearson(stats["score_length"]),
            "prompt_tokens": stats.get("prompt_tokens", 0), "completion_tokens": stats.get("completion_tokens", 0),
            "retries": stats.get("retries", 0)}


def add_agreement(acc: dict, votes: list) -> None:
    """Count, for each two judges that both voted (not FAILED) on a pair, whether they agreed."""
    valid = [v for v in votes if v.winner != "FAILED"]
    for i, a in enumerate(valid):
        for b in valid[i + 1:]:
            key = f"{a.judge_id}|{b.judge_id}"
            n, same = acc.get(key, (0, 0))
            acc[key] = (n + 1, same + int(a.winner == b.winner))


def agreement_report(acc: dict) -> dict:
    """{"j1|j2": {"pairs": n, "agreement": share of pairs with the same vote}}."""
    return {key: {"pairs": n, "agreement": same / n if n else None} for key, (n, same) in sorted(acc.items())}


def new_principle_stats() -> dict:
    """Per-principle sums (constitutional judging): pairs drawn under it, their outcomes, judge-pair
    comparisons and agreements, and both-order votes and flips."""
    return {"drawn": 0, "decided": 0, "ties": 0, "failed": 0, "judge_pairs": 0, "judge_pairs_agreeing": 0,
            "both_orders": 0, "flips": 0}


def add_principle(stats: dict, winner: str, votes: list) -> None:
    """Count one pair judged under a principle: its decision, its jurors' agreement and order flips."""
    stats["drawn"] += 1
    stats["failed" if winner == "FAILED" else "ties" if winner == "TIE" else "decided"] += 1
    acc: dict = {}
    add_agreement(acc, votes)
    stats["judge_pairs"] += sum(n for n, _ in acc.values())
    stats["judge_pairs_agreeing"] += sum(same for _, same in acc.values())
    for v in votes:
        if v.winner != "FAILED" and v.consistent is not None:
            stats["both_orders"] += 1
            stats["flips"] += 0 if v.consistent else 1


def principle_report(stats: dict) -> dict:
    """{principle: {drawn, decided, ties, failed, juror_agreement, flip_rate}} from summed stats; rates are
    None where nothing was counted (juror_agreement needs two judges voting on a pair)."""
    out = {}
    for pid, s in sorted(stats.items()):
        out[pid] = {"drawn": s["drawn"], "decided": s["decided"], "ties": s["ties"], "failed": s["failed"],
                    "juror_agreement": s["judge_pairs_agreeing"] / s["judge_pairs"] if s["judge_pairs"] else None,
                    "flip_rate": s["flips"] / s["both_orders"] if s["both_orders"] else None}
    return out
