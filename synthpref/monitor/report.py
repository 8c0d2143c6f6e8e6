"""`synthpref report RUN`: one self-contained HTML file for any run folder, written to RUN/report.html.

    from synthpref.monitor.report import write_report
    path = write_report("runs/demo/ppo")          # opens in any browser, with no network

The page has a header (the job, the folder, when it ran, key figures), a table of contents, and sections
by run kind: a label run's counts, quarantine reasons, judge bias, agreement and label confidence;
eval-judge's agreement with human labels; the iterations of rft, self-reward and cai; and for every run
the curves of metrics.jsonl (a line plot per numeric field of each event with a step, so new jobs render
without code changes). A folder holding sub-runs (a `cai` run's sl/, labels/, rm/, ppo/) gets a section
per sub-run. Every plot's element has `data-run` and `data-metric` (e.g. "ppo/reward_raw").
"""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from synthpref.errors import MissingInput
from synthpref.monitor.report_curves import curve_sections, iteration_records, iteration_table, notices
from synthpref.monitor.report_data import RunFolder, flatten, is_number, read_run
from synthpref.monitor.report_html import Figures, Note, Section, Table, render_page
from synthpref.monitor.report_label import eval_judge_sections, label_sections, principle_blocks

log = logging.getLogger(__name__)

# The figures shown first for each kind of run, as dotted keys of its report.json / summary.json.
KEY_FIGURES = {
    "label": ["counts.prompts", "counts.pairs", "counts.preferences", "counts.ties", "counts.failed_pairs",
              "counts.quarantined", "position_consistency", "chosen_longer_rate", "tokens.per_label",
              "cost.usd_per_label", "spot_checks.run.agreement"],
    "eval-judge": ["pairs", "quarantined", "jury.agreement", "jury.position_consistency",
                   "baselines.longer_response_is_human_choice"],
    "train-rm": ["train_pairs", "held_out.pairs", "held_out.accuracy", "held_out.mean_margin",
                 "human_agreement.accuracy", "quarantined"],
    "dpo": ["train_pairs", "steps", "held_out.accuracy", "held_out.margin", "human_agreement.accuracy", "quarantined"],
    "ppo": ["best_gold", "best_gold_step", "stopped", "engine_trainer_logprob_gap_max", "quarantined"],
    "cai": ["constitution.principles", "sl.rounds", "sl.kept_revisions", "sl.sft_rows", "labels.counts.preferences",
            "labels.position_consistency", "reward_model.held_out.accuracy", "reward_model.train_pairs"],
}
# Of the last per-iteration record (rft, self-reward, cai): the figures shown.
LAST_ITERATION = ["win_rate.rate", "mean_score", "best_score", "kept_fraction", "judge.agreement",
                  "self_preference.gap", "panel.distinct_2", "div_distinct_2", "kl_to_start"]
# Of metrics.jsonl: the last value of these event/field series.
LAST_VALUES = ["ppo/reward_raw", "ppo/kl", "ppo/response_length", "eval/gold", "train/loss", "sft/loss", "dpo/loss"]


def write_report(run_dir: str | Path) -> Path:
    """Write RUN/report.html (atomically) and return its path."""
    from synthpref.data.shards import atomic_write_bytes
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingInput(f"{run_dir}: no such run folder")
    run = read_run(run_dir)
    if not (run.rows or run.run_json or run.report or run.subruns):
        raise MissingInput(f"{run_dir}: not a run folder (no metrics.jsonl, run.json, report.json or summary.json)")
    path = run_dir / "report.html"
    atomic_write_bytes(path, report_html(run).encode("utf-8"))
    return path


def report_html(run: RunFolder) -> str:
    from plotly.offline import get_plotlyjs
    header = [Figures(key_figures(run)), *[Note(line) for line in run_lines(run)]]
    return render_page(f"{described(run)}: {run.path.resolve().name}", str(run.path.resolve()), header,
                       run_sections(run), get_plotlyjs())


def run_sections(run: RunFolder) -> list[Section]:
    """The sections of one run, then one section per sub-run (holding that sub-run's sections)."""
    sections = [Section("Overview", overview_blocks(run), run=run.name)]
    sections += guarded(run, kind_sections)
    sections += guarded(run, curve_sections)
    for sub in run.subruns:
        sections.append(Section(f"{sub.name}/ ({described(sub)})",
                                [Figures(key_figures(sub)), *[Note(line) for line in run_lines(sub)]],
                                run_sections(sub), run=sub.name))
    return sections


def guarded(run: RunFolder, build) -> list[Section]:
    """A section builder's sections; one that fails on an odd file becomes a note, not a missing report."""
    try:
        return build(run)
    except Exception as exc:                     # the rest of the report is still worth having
        log.warning("report section %s of %s failed: %s", build.__name__, run.path, exc, exc_info=True)
        return [Section(f"{build.__name__.replace('_', ' ')} (failed)",
                        [Note(f"this part of the report could not be built: {type(exc).__name__}: {exc}", warn=True)],
                        run=run.name)]


def kind_sections(run: RunFolder) -> list[Section]:
    if run.kind == "label" or ("counts" in run.report and "judges" in run.report):
        return label_sections(run)
    if run.kind == "eval-judge":
        return eval_judge_sections(run)
    sections = []
    if iteration_records(run):
        sections.append(Section("Iterations", iteration_table(run), run=run.name))
    if isinstance(run.report.get("principles"), dict):        # a run reporting principles itself (cai)
        sections.append(Section("Principles", principle_blocks(run.report["principles"]), run=run.name))
    return sections


def overview_blocks(run: RunFolder) -> list:
    """Notices from metrics.jsonl, the precision each part ran in, and every scalar of report.json."""
    blocks: list = notices(run)
    dtypes = run.report.get("dtypes")
    if isinstance(dtypes, dict) and dtypes:
        blocks.append(Note("precision: " + ", ".join(f"{k} {v}" for k, v in dtypes.items())))
    scalars = {k: v for k, v in flatten(run.report).items() if not k.startswith(("dtypes.", "outputs."))}
    if scalars:
        source = "summary.json" if (run.path / "summary.json").exists() and not (run.path / "report.json").exists() \
            else "report.json"
        blocks.append(Table(["figure", "value"], [[k, v] for k, v in scalars.items()],
                            caption=f"Every figure in {source} ({len(scalars)})", collapsed=True))
    return blocks


def key_figures(run: RunFolder) -> list[tuple[str, object]]:
    """The run's headline numbers: its kind's figures from the report, the last iteration's, and the last
    value of the main curves; else the report's first numbers."""
    flat = flatten(run.report)
    items = [(key, flat[key]) for key in KEY_FIGURES.get(run.kind, []) if key in flat]
    iterations = iteration_records(run)
    if iterations:
        last = flatten(iterations[-1])
        items.insert(0, ("iterations", len(iterations)))
        items += [(f"last {key}", last[key]) for key in LAST_ITERATION if key in last]
    steps = [r["step"] for r in run.rows if is_number(r.get("step"))]
    if steps and run.kind not in ("label", "eval-judge"):
        items.insert(0, ("last step", max(steps)))
    for metric in LAST_VALUES:
        event, _, name = metric.partition("/")
        values = [r[name] for r in run.rows if r.get("event") == event and is_number(r.get(name))]
        if values:
            items.append((f"last {metric}", values[-1]))
    if not items:
        items = [(k, v) for k, v in flat.items() if is_number(v)][:8]
    return [(figure_label(k), v) for k, v in items if v is not None][:12]


def figure_label(key: str) -> str:
    """'counts.failed_pairs' -> 'failed pairs', 'held_out.accuracy' -> 'held-out accuracy'."""
    key = key.removeprefix("counts.").replace("held_out", "held-out")
    return key.replace(".", " ").replace("_", " ")


def described(run: RunFolder) -> str:
    return "run" if run.kind == "run" else f"{run.kind} run"


def run_lines(run: RunFolder) -> list[str]:
    """When the run ran, how many records it has, whether it finished, what it holds."""
    times = run.times
    lines = []
    if times:
        start, end = (datetime.fromtimestamp(t).astimezone() for t in (min(times), max(times)))
        lines.append(f"{described(run)}, {start:%Y-%m-%d %H:%M:%S %Z} to {end:%H:%M:%S} "
                     f"({(end - start).total_seconds():.0f} s), {len(run.rows)} metrics records")
    elif not run.subruns:
        lines.append(f"{described(run)}, no metrics.jsonl records")
    events = [r.get("event") for r in run.rows]
    last_start = max((i for i, e in enumerate(events) if e == "start"), default=0)
    if events and "end" not in events[last_start:]:
        lines.append("no end record after the last start: the run did not finish (or is still running)")
    if run.subruns:
        lines.append("sub-runs: " + ", ".join(f"{s.name}/ ({s.kind})" for s in run.subruns))
    return lines
