"""Curves from metrics.jsonl: a line plot for every numeric field of every event that has a step (so a
new job renders without code changes), a few combined plots where several fields tell one story (gold vs
proxy reward, seconds per phase, diversity), per-iteration tables, and the runs' notices."""
from __future__ import annotations

import re

from synthpref.monitor.report_data import RunFolder, Series, flatten, is_number, stepped_series
from synthpref.monitor.report_html import Note, Section, Table
from synthpref.monitor.report_plots import line_plot

# Combined plots: (id, title, [(event, field pattern)] on the left axis, [(event, field pattern)] on the right).
# One is drawn when it finds two series or more; every series also has its own plot below it.
COMBINED = [
    ("reward", "Reward: raw and KL-shaped", [("ppo", r"reward_raw|reward_shaped")], []),
    ("gold_vs_proxy", "Held-out reward: training reward (proxy) vs gold judge", [("eval", r"proxy")],
     [("eval", r"gold")]),
    ("kl", "KL to the reference: training batches and held-out", [("ppo", r"kl"), ("eval", r"kl")], []),
    ("phase_times", "Seconds per phase",
     [("ppo", r"time_\w+_s"), (r"iteration|sl_round", r"(sample|judge|train|sync|score|sft|critique|revise)_s")], []),
    ("chosen_vs_rejected", "Implicit reward of chosen vs rejected",
     [(r"train|dpo", r"reward_chosen|reward_rejected")], []),
    ("loss_vs_held_out", "Training loss and held-out accuracy", [("train", r"loss")], [("eval", r"held_out_accuracy")]),
    ("win_and_agreement", "Win rate, judge agreement, self-preference gap",
     [("iteration", r"win_rate_rate|judge_agreement|self_preference_gap|human_agreement")], []),
    ("diversity", "Diversity panel (distinct-n, self-BLEU)",
     [(r"iteration|sl_round", r"(panel_|div_)?(distinct_\d|self_bleu)")], []),
]

# Fields shown first in their event's grid, in this order (the rest follow in the order they first appear).
PRIORITY = ["reward_raw", "reward_shaped", "reward", "gold", "proxy", "win_rate_rate", "mean_score", "best_score",
            "loss", "accuracy", "held_out_accuracy", "held_out_margin", "margin", "kl", "kl_to_start",
            "response_length", "length", "length_mean_tokens", "entropy", "judge_agreement", "self_preference_gap",
            "panel_distinct_2", "div_distinct_2", "kept_fraction", "pg_loss", "value_loss", "dpo_loss_last",
            "sft_loss_last", "clip_fraction", "approx_kl"]

# Columns of the per-iteration table, where a run's report.json has them (dotted: nested in the record).
ITERATION_COLUMNS = ["iteration", "prompts", "pairs", "ties", "kept", "kept_fraction", "mean_score", "best_score",
                     "win_rate.rate", "judge.agreement", "self_preference.gap", "principle_agreement", "revised",
                     "panel.distinct_2", "div_distinct_2", "distinct_2", "length.mean_tokens", "kl_to_start",
                     "sft_loss_first", "sft_loss_last", "dpo_loss_first", "dpo_loss_last", "guard_fired", "iteration_s"]


def x_title(event: str, rows: list[dict]) -> str:
    """'iteration' or 'round' for events recorded once per iteration or round (their step is its
    number), else 'step'."""
    mine = [r for r in rows if r.get("event") == event and is_number(r.get("step"))]
    for unit in ("iteration", "round"):
        if mine and all(r.get(unit) == r["step"] for r in mine):
            return unit
    return "iteration" if event == "iteration" else "step"


def ordered(series: list[Series]) -> list[Series]:
    """PRIORITY fields first, fields that never change last, first-seen order otherwise."""
    rank = {name: i for i, name in enumerate(PRIORITY)}
    return sorted(series, key=lambda s: (len(set(s.values)) <= 1, rank.get(s.field, len(rank))))


def find(series: dict[str, Series], patterns: list[tuple[str, str]]) -> list[Series]:
    return [s for s in series.values()
            if any(re.fullmatch(ev, s.event) and re.fullmatch(fd, s.field) for ev, fd in patterns)]


def combined_plots(series: dict[str, Series], rows: list[dict]) -> list:
    plots = []
    for name, title, left, right in COMBINED:
        lhs, rhs = find(series, left), find(series, right)
        if len(lhs) + len(rhs) < 2 or not lhs:
            continue
        plots.append(line_plot(f"combined/{name}", title, lhs, x_title(lhs[0].event, rows), rhs, wide=True))
    return plots


def curve_sections(run: RunFolder) -> list[Section]:
    """'Curves': combined plots, then one subsection per event with a plot per numeric field."""
    series = stepped_series(run.rows)
    if not series:
        return []
    by_event: dict[str, list[Series]] = {}
    for s in series.values():
        by_event.setdefault(s.event, []).append(s)
    children = []
    combined = combined_plots(series, run.rows)
    if combined:
        children.append(Section("Combined curves", combined, run=run.name))
    for event, items in by_event.items():
        x = x_title(event, run.rows)
        plots = [line_plot(s.metric, s.field, [s], x) for s in ordered(items)]
        n_rows = sum(1 for r in run.rows if r.get("event") == event and is_number(r.get("step")))
        children.append(Section(f"{event} ({n_rows} records, by {x})", plots, run=run.name))
    return [Section("Curves", [Note("One plot per numeric field of each event in metrics.jsonl, one point per "
                                    "record carrying it.")], children, run=run.name)]


def iteration_records(run: RunFolder) -> list[dict]:
    """The per-iteration records of report.json (`iterations` of rft and self-reward, `rounds` of cai)."""
    records = run.report.get("iterations") or run.report.get("rounds")
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def iteration_table(run: RunFolder) -> list:
    """A table of the per-iteration records in report.json."""
    records = [flatten(r) for r in iteration_records(run)]
    if not records:
        return []
    present = [c for c in ITERATION_COLUMNS if any(c in r for r in records)]
    if len(present) < 3:                          # a record of another shape: its first scalar columns
        present = [k for k in records[0] if is_number(records[0][k]) or records[0][k] is None][:12]
    rows = [[r.get(c) for c in present] for r in records]
    return [Table(present, rows, caption=f"{len(records)} iterations (report.json)")]


def notices(run: RunFolder) -> list:
    """Records that carry a message (over-optimisation, collapse guard, ...) as a table."""
    found = [r for r in run.rows if isinstance(r.get("message"), str) and r["message"]]
    if not found:
        return []
    rows = [[r.get("event", ""), r.get("step", r.get("iteration")), r.get("action", ""), r["message"]] for r in found]
    return [Note(f"{len(found)} notice{'s' if len(found) != 1 else ''} in metrics.jsonl", warn=True),
            Table(["event", "step / iteration", "action", "message"], rows)]
