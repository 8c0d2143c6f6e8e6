"""What each self-rewarding iteration measures about the policy M_t:

- progress: M_t's win rate over M_0 on held-out prompts, by an independent jury (never M_t itself);
- judge quality: M_t as a pairwise judge (both orders) against human labels: agreement and flip rate;
- self-enhancement: on audit pairs of M_t's own response and the human-chosen one, how often M_t prefers
  its own beside how often the independent jury does; the gap is the self-preference figure (MT-Bench,
  Zheng et al. 2023; Panickssery et al. 2024);
- the diversity panel of the held-out samples (monitor/diversity.py), against M_0's and real text.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from synthpref.data.pairs import Pair, given_samples
from synthpref.data.prompts import round_seed
from synthpref.data.schema import SAMPLES, to_table
from synthpref.data.shards import atomic_write_table
from synthpref.monitor import diversity
from synthpref.judging.verdicts import FAILED, FIRST, SECOND, TIE


def table_rows(path: Path) -> list[dict]:
    """A Parquet table's rows ([] when the file is absent)."""
    return pq.read_table(path).to_pylist() if path.exists() else []


def _rate(decisions: dict, pairs: list[Pair], side_of: dict[str, str]) -> dict:
    """How often the side named by `side_of[pair_id]` won: wins + ties / 2 over the pairs not FAILED."""
    wins = ties = failed = 0
    for p in pairs:
        winner = decisions[p.pair_id][0].winner
        if winner == FAILED:
            failed += 1
        elif winner == TIE:
            ties += 1
        elif winner == side_of[p.pair_id]:
            wins += 1
    counted = len(pairs) - failed
    return {"rate": (wins + ties / 2) / counted if counted else None, "wins": wins, "ties": ties,
            "failed": failed, "pairs": len(pairs)}


def head_to_head(jury, prompt_ids: list[str], first: dict[str, dict], second: dict[str, dict],
                 conversations: dict) -> dict:
    """`first`'s rate of winning against `second` (sample rows per prompt id) under `jury` (both orders).
    The first is shown as A in every other pair, so a position-biased jury cannot favour either side."""
    pairs, side = [], {}
    for n, pid in enumerate(p for p in prompt_ids if p in first and p in second):
        a, b = (first[pid], second[pid]) if n % 2 == 0 else (second[pid], first[pid])
        pair = Pair(f"{pid}:{n}", pid, a, b)
        pairs.append(pair)
        side[pair.pair_id] = FIRST if n % 2 == 0 else SECOND
    if not pairs:
        return {"rate": None, "wins": 0, "ties": 0, "failed": 0, "pairs": 0}
    _, decisions, _ = jury.judge_pairs(pairs, conversations)
    return _rate(decisions, pairs, side)


def win_rate(jury, prompt_ids: list[str], now: dict[str, dict], start: dict[str, dict], conversations: dict) -> dict:
    """M_t's win rate over M_0 on the held-out prompts (ties half); None without an independent jury."""
    if jury is None:
        return {"rate": None, "pairs": 0}
    return head_to_head(jury, prompt_ids, now, start, conversations)


def judge_agreement(self_jury, human_rows: list) -> dict:
    """The policy as a pairwise judge on human-labelled pairs (the human's choice shown first in every
    other pair, both orders judged): agreement with the human choice (ties half) and position flip rate."""
    if not human_rows:
        return {"agreement": None, "flip_rate": None, "pairs": 0}
    chosen = {r.prompt_id: given_samples(r.prompt_id, r.completions)[0] for r in human_rows}
    rejected = {r.prompt_id: given_samples(r.prompt_id, r.completions)[1] for r in human_rows}
    conversations = {r.prompt_id: r.messages for r in human_rows}
    pairs, side = [], {}
    for n, pid in enumerate(chosen):
        a, b = (chosen[pid], rejected[pid]) if n % 2 == 0 else (rejected[pid], chosen[pid])
        pair = Pair(f"{pid}:{n}", pid, a, b)
        pairs.append(pair)
        side[pair.pair_id] = FIRST if n % 2 == 0 else SECOND
    _, decisions, stats = self_jury.judge_pairs(pairs, conversations)
    judge = next(iter(stats["judges"].values()))
    rate = _rate(decisions, pairs, side)
    return {"agreement": rate["rate"], "flip_rate": judge["flips"] / judge["both_orders"] if judge["both_orders"] else None,
            "failed": rate["failed"], "pairs": len(pairs)}


def self_preference(self_jury, independent_jury, own: dict[str, dict], other: dict[str, dict],
                    conversations: dict) -> dict:
    """How often the policy prefers its own response over another source's (the human-chosen one), beside
    the independent jury's rate on the same pairs; gap = self rate - independent rate."""
    ids = sorted(own)
    mine = head_to_head(self_jury, ids, own, other, conversations)
    theirs = head_to_head(independent_jury, ids, own, other, conversations) if independent_jury is not None else None
    gap = (mine["rate"] - theirs["rate"]) if theirs and None not in (mine["rate"], theirs["rate"]) else None
    return {"self_rate": mine["rate"], "independent_rate": theirs["rate"] if theirs else None, "gap": gap,
            "pairs": mine["pairs"], "self_failed": mine["failed"]}


def measure(run, held: list, conversations: dict, it: int) -> dict:
    """The figures of M_it (see self_reward_eval.py); its held-out samples go to iterations/NNNN/."""
    cfg, e = run.cfg, run.cfg.eval
    folder = run.job.out / "iterations"
    samples_of, errors = run.sample(held, e.samples_per_prompt, round_seed(cfg.seed, "self-reward-eval", 0))
    samples = [s for ss in samples_of.values() for s in ss]
    atomic_write_table(folder / f"{it:04d}" / "eval_samples.parquet", to_table(samples, SAMPLES))
    start = samples if it == 0 else table_rows(folder / "0000" / "eval_samples.parquet")
    texts, start_texts = [s["text"] for s in samples], [s["text"] for s in start]
    reference = run.real_counts or diversity.word_counts(start_texts)
    panel, start_panel = diversity.panel(texts, reference), diversity.panel(start_texts, reference)
    first = {pid: ss[0] for pid, ss in samples_of.items() if ss}
    start_first = {}
    for s in start:
        start_first.setdefault(s["prompt_id"], s)
    audit = [r for r in run.human if len(r.completions) == 2][:e.audit_pairs]
    own, audit_errors = run.sample(audit, 1, round_seed(cfg.seed, "self-reward-audit", it)) if audit else ({}, [])
    human_chosen = {r.prompt_id: given_samples(r.prompt_id, r.completions)[0] for r in audit}
    audit_conv = {r.prompt_id: r.messages for r in audit}
    lengths = sorted(s["n_tokens"] for s in samples if s.get("n_tokens") is not None)
    return {"iteration": it, "eval_version": sorted({s["policy"] for s in samples}), "eval_errors": len(errors),
            "audit_errors": len(audit_errors),
            "panel": panel, "panel_vs_start": diversity.relative(panel, start_panel),
            "panel_vs_real": diversity.relative(panel, run.real_panel) if run.real_panel else None,
            "length": {"mean_tokens": sum(lengths) / len(lengths) if lengths else None,
                       "p50_tokens": lengths[len(lengths) // 2] if lengths else None,
                       "p90_tokens": lengths[int(len(lengths) * 0.9)] if lengths else None},
            "win_rate": (win_rate(run.independent, [p.prompt_id for p in held], first, start_first,
                                           conversations) if it else {"rate": None, "pairs": 0}),
            "judge": judge_agreement(run.self_pairs, run.human),
            "self_preference": self_preference(run.self_pairs, run.independent,
                                                        {pid: ss[0] for pid, ss in own.items() if ss}, human_chosen,
                                                        audit_conv)}
