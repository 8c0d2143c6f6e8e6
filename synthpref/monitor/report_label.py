"""Report sections of judging runs: a label run's counts, quarantine reasons, per-judge bias, judge
agreement, label confidence and least confident pairs, per-principle figures (constitutional judging),
human spot checks; eval-judge's agreement with human labels."""
from __future__ import annotations

from synthpref.monitor.report_data import (RunFolder, flatten, is_number, read_column, read_json, read_quarantine,
                                           read_rows)
from synthpref.monitor.report_html import Figures, Note, Section, Table, fmt
from synthpref.monitor.report_plots import bar_plot, heatmap_plot, histogram_plot

EXAMPLE_SHARDS = 20          # least confident pairs are looked for in this many preference shards at most


def mapping_table(mapping: dict, first: str, caption: str = "") -> Table:
    """{name: {field: value}} (nested fields dotted) or {name: value} as a table, one row per name."""
    rows = {name: flatten(v) if isinstance(v, dict) else {"value": v} for name, v in mapping.items()}
    columns: list[str] = []
    for fields in rows.values():
        columns += [c for c in fields if c not in columns]
    body = [[name, *(fields.get(c) for c in columns)] for name, fields in rows.items()]
    return Table([first, *columns], body, caption)


def numeric_fields(mapping: dict, fields: list[str]) -> dict[str, list]:
    """For each of `fields` that some entry has as a number: the values over the entries (None where missing)."""
    out = {}
    for f in fields:
        values = [v.get(f) if isinstance(v, dict) and is_number(v.get(f)) else None for v in mapping.values()]
        if any(v is not None for v in values):
            out[f] = values
    return out


def judge_blocks(judges: dict, agreement: dict, human_fields: tuple = ("human_agreement",)) -> list:
    """Per-judge table, flip rate and length correlation bars, human agreement bars, agreement heatmap."""
    if not judges:
        return []
    names = list(judges)
    blocks: list = [mapping_table(judges, "judge")]
    flip = numeric_fields(judges, ["position_flip_rate"])
    if flip:
        blocks.append(bar_plot("judges/position_flip_rate", "Position flip rate per judge (0 = order-blind)",
                               names, {"flip rate": flip["position_flip_rate"]}, y_range=(0, 1)))
    corr = numeric_fields(judges, ["length_correlation", "score_length_correlation"])
    if corr:
        blocks.append(bar_plot("judges/length_correlation", "Correlation of verdict with length difference",
                               names, {k.replace("_", " "): v for k, v in corr.items()}, y_range=(-1, 1)))
    human = numeric_fields(judges, list(human_fields))
    if human:
        blocks.append(bar_plot("judges/human_agreement", "Agreement with human labels per judge", names,
                               {k.replace("_", " "): v for k, v in human.items()}, y_range=(0, 1)))
    matrix = agreement_matrix(names, agreement)
    if matrix:
        blocks.append(heatmap_plot("judges/agreement", "How often each two judges agree", *matrix, z_title="agreement"))
    return blocks


def agreement_matrix(names: list[str], agreement: dict):
    """(labels, matrix) from {"a|b": {"agreement": x}} (1 on the diagonal), or None without two judges."""
    pairs = {}
    for key, value in agreement.items():
        a, _, b = str(key).partition("|")
        rate = value.get("agreement") if isinstance(value, dict) else value
        pairs[(a, b)] = pairs[(b, a)] = rate if is_number(rate) else None
    labels = list(dict.fromkeys(names + [n for pair in pairs for n in pair]))
    if len(labels) < 2 or not pairs:
        return None
    return labels, [[1.0 if a == b else pairs.get((a, b)) for b in labels] for a in labels]


def quarantine_blocks(run: RunFolder) -> list:
    """Quarantined rows by reason (the summary's counts, else quarantine.jsonl's), each with an example."""
    records = read_quarantine(run.path / "quarantine.jsonl")
    example: dict[str, dict] = {}
    counts = dict(run.report.get("quarantined_by_reason") or {})
    for r in records:
        reason = str(r.get("reason", "unknown"))
        example.setdefault(reason, r)
        if not run.report.get("quarantined_by_reason"):
            counts[reason] = counts.get(reason, 0) + 1
    if not counts:
        return [Note("No rows quarantined.")]
    rows = [[reason, n, example.get(reason, {}).get("source", ""), example.get(reason, {}).get("detail", "")]
            for reason, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return [Table(["reason", "rows", "example source", "example detail"], rows,
                  caption=f"{sum(counts.values())} quarantined rows (examples from quarantine.jsonl)")]


def last_content(messages) -> str:
    if isinstance(messages, list) and messages:
        last = messages[-1]
        return str(last.get("content", "")) if isinstance(last, dict) else str(last)
    return "" if messages is None else str(messages)


def preference_blocks(run: RunFolder) -> list:
    """Histogram of the jury's confidence and the least confident pairs (spot-check candidates)."""
    folder = run.path / "preferences"
    confidence = read_column(folder, "confidence")
    if not confidence:
        return []
    blocks: list = [histogram_plot("preferences/confidence", "Label confidence", confidence, "confidence")]
    agreement = read_column(folder, "agreement")
    if any(is_number(a) for a in agreement):
        blocks.append(histogram_plot("preferences/agreement", "Jury agreement per pair", agreement, "agreement"))
    rows = read_rows(folder, ["prompt", "chosen", "rejected", "confidence"], EXAMPLE_SHARDS)
    rows = sorted((r for r in rows if is_number(r.get("confidence"))), key=lambda r: r["confidence"])[:5]
    if rows:
        blocks.append(Table(["confidence", "prompt", "chosen", "rejected"],
                            [[r["confidence"], last_content(r.get("prompt")), last_content(r.get("chosen")),
                              last_content(r.get("rejected"))] for r in rows],
                            caption="The five least confident preferences (candidates for a human spot check)"))
    return blocks


def principle_blocks(principles: dict) -> list:
    """A table and bar plots of per-principle figures: how often each was drawn, and its rates."""
    if not principles:
        return []
    names = list(principles)
    fields = list(dict.fromkeys(k for v in principles.values() if isinstance(v, dict) for k in v))
    rates = [f for f in fields if "agreement" in f or "rate" in f]
    blocks: list = [mapping_table(principles, "principle")]
    drawn = numeric_fields(principles, ["drawn"])
    if drawn:
        blocks.append(bar_plot("principles/drawn", "Pairs judged under each principle", names, drawn))
    values = numeric_fields(principles, rates)
    if values:
        blocks.append(bar_plot("principles/rates", "Agreement and flip rate per principle", names,
                               {k.replace("_", " "): v for k, v in values.items()}, y_range=(0, 1)))
    return blocks


def spot_check_blocks(spot: dict) -> list:
    """Human spot checks (`synthpref spot-check import`): numbers as tiles, {name: figures} parts (per judge,
    jury rule, domain, selection rule) as tables with agreement bars, flagged domains as a warning."""
    if not spot:
        return []
    tiles = [(k.replace("_", " "), v) for k, v in spot.items() if is_number(v)]
    for key, value in spot.items():                  # the run's own figures: {agree: .., agreement: ..}
        if isinstance(value, dict) and value and not any(isinstance(v, dict) for v in value.values()):
            tiles += [(f"{key} {k}".replace("_", " "), v) for k, v in value.items() if is_number(v) or v is None]
    blocks: list = [Figures(tiles)] if tiles else []
    plots: list = []
    flagged = spot.get("flagged_domains")
    if isinstance(flagged, list):
        listed = ", ".join(map(str, flagged))
        blocks.append(Note(f"flagged domains (agreement under {fmt(spot.get('threshold'))}): {listed}"
                           if flagged else "no flagged domains", warn=bool(flagged)))
    for key, value in spot.items():
        if not (isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values())):
            if isinstance(value, str) or (isinstance(value, list) and key != "flagged_domains" and value):
                shown = value if isinstance(value, str) else ", ".join(map(str, value))
                blocks.append(Note(f"{key.replace('_', ' ')}: {shown}"))
            continue
        one = key.replace("_", " ").removesuffix("s")
        blocks.append(mapping_table(value, one, caption=f"agreement with humans per {one}"))
        bars = numeric_fields(value, ["agreement", "agreement_ties_half"])
        if bars:
            plots.append(bar_plot(f"spot_checks/{key}", f"Agreement with humans per {one}", list(value),
                                  {k.replace("_", " "): v for k, v in bars.items()}, y_range=(0, 1)))
    return blocks + plots                            # the plots side by side after the tables


def label_sections(run: RunFolder) -> list[Section]:
    s = run.report
    sections = [Section("Counts", [Figures([(k.replace("_", " "), v) for k, v in (s.get("counts") or {}).items()])],
                        run=run.name),
                Section("Quarantined rows", quarantine_blocks(run), run=run.name),
                Section("Judges", judge_blocks(s.get("judges") or {}, s.get("judge_agreement") or {}), run=run.name),
                Section("Labels", preference_blocks(run), run=run.name)]
    if s.get("principles"):
        sections.append(Section("Principles", principle_blocks(s["principles"]), run=run.name))
    spot = s.get("spot_checks") or read_json(run.path / "spot_checks" / "report.json")
    if spot:
        sections.append(Section("Human spot checks", spot_check_blocks(spot), run=run.name))
    return sections


def eval_judge_sections(run: RunFolder) -> list[Section]:
    r = run.report
    judges = dict(r.get("judges") or {})
    jury = r.get("jury")
    table_rows = {**judges, **({f"jury ({jury.get('rule', '')})": jury} if isinstance(jury, dict) else {})}
    blocks = judge_blocks(judges, r.get("judge_agreement") or {}, ("agreement", "agreement_ties_half"))
    if blocks:
        blocks[0] = mapping_table(table_rows, "judge")
    baselines = r.get("baselines") or {}
    if baselines:
        blocks.insert(0, Figures([(k.replace("_", " "), v) for k, v in baselines.items()]))
    return [Section("Agreement with human labels", blocks, run=run.name),
            Section("Quarantined rows", quarantine_blocks(run), run=run.name)]
