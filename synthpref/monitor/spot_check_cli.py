"""`synthpref spot-check export|import`: the subcommand's options and what it prints (cli.py wires it in)."""
from __future__ import annotations

import argparse

from synthpref.monitor.spot_check import QueueRules

DEFAULTS = QueueRules()


def add_parser(sub) -> argparse.ArgumentParser:
    cmd = sub.add_parser(
        "spot-check", help="human spot checks of a label run: export a review queue, import verdicts",
        description="People check a sample of a label run's pairs, since a judge cannot catch its errors where it "
                    "lacks the competence (the capability ceiling). `export` writes a review queue (JSONL and a "
                    "Label Studio project); `import` reads the verdicts back and reports agreement per judge, per "
                    "jury rule and per domain, flagging domains below a threshold.")
    actions = cmd.add_subparsers(dest="action", required=True)
    export = actions.add_parser(
        "export", help="write a review queue of N pairs chosen by rule",
        description="Choose N pairs, each once, in this order: a random control share, a quota per domain tag, "
                    "undecided pairs (jury tie or failure), order flips, juror disagreement, then the lowest "
                    "confidence. Writes queue.jsonl (with the hidden key: the jury's choice, the votes), "
                    "reviews_template.jsonl (for reviewers: fill in verdict a | b | tie), label_studio_tasks.json "
                    "and label_studio_config.xml.")
    export.add_argument("run", help="the label run folder (the label job's output_dir)")
    export.add_argument("--n", type=int, default=100, help="pairs in the queue (default 100)")
    export.add_argument("--out", help="where the queue goes (default RUN/spot_checks)")
    export.add_argument("--seed", type=int, default=0,
                        help="seeds the control draw, tie-breaks and which response is shown first (default 0)")
    export.add_argument("--control-fraction", type=float, default=DEFAULTS.control_fraction,
                        help=f"share of N drawn uniformly at random from all judged pairs (default "
                             f"{DEFAULTS.control_fraction})")
    export.add_argument("--min-per-domain", type=int, default=DEFAULTS.min_per_domain,
                        help=f"pairs each `domain` tag (prompt meta or provenance) gets at least, hardest first "
                             f"(default {DEFAULTS.min_per_domain}; 0: no quota)")
    export.add_argument("--undecided-fraction", type=float, default=DEFAULTS.undecided_fraction,
                        help=f"share of N for pairs the jury tied on or failed (default {DEFAULTS.undecided_fraction})")
    export.add_argument("--order-flip-fraction", type=float, default=DEFAULTS.order_flip_fraction,
                        help=f"share of N for pairs where a judge's two orders disagreed (default "
                             f"{DEFAULTS.order_flip_fraction})")
    export.add_argument("--disagreement-fraction", type=float, default=DEFAULTS.disagreement_fraction,
                        help=f"share of N for pairs whose judges disagreed, agreement < 1 (default "
                             f"{DEFAULTS.disagreement_fraction}); the lowest-confidence pairs fill the rest")
    imp = actions.add_parser(
        "import", help="read human verdicts back and report agreement",
        description="Read reviews (JSONL rows {pair_id, verdict: a | b | tie, reviewer?, domain?} or a Label Studio "
                    "JSON export) and report agreement with the humans: the run's labels, each judge, each jury "
                    "rule, each domain. Agreement = agree / (agree + disagree) over pairs the human decided; human "
                    "ties and machine ties or failures are counted apart. Writes RUN/spot_checks/report.json and "
                    "quarantine.jsonl and adds `spot_checks` to RUN/summary.json.")
    imp.add_argument("run", help="the label run folder the queue was exported from")
    imp.add_argument("file", help="the reviews: .jsonl rows or a Label Studio JSON export")
    imp.add_argument("--queue", help="the export's queue.jsonl (default: beside FILE, else RUN/spot_checks/queue.jsonl)")
    imp.add_argument("--threshold", type=float, default=0.6,
                     help="flag a domain whose agreement is below this (default 0.6)")
    imp.add_argument("--min-reviews", type=int, default=5,
                     help="reviews a domain needs (decided by human and run) before it can be flagged (default 5)")
    return cmd


def run(args) -> list[str]:
    """Do what the arguments say; the lines to print."""
    if args.action == "export":
        from synthpref.monitor.spot_check import export_queue
        rules = QueueRules(args.control_fraction, args.undecided_fraction, args.order_flip_fraction,
                           args.disagreement_fraction, args.min_per_domain)
        done = export_queue(args.run, args.n, rules, args.seed, args.out)
        lines = [f"{done['queued']} of {done['pairs_in_run']} pairs queued (seed {done['seed']}):"]
        lines += [f"  {rule:<15} {count}" for rule, count in done["by_rule"].items()]
        if done["undecided_without_text"]:
            lines.append(f"  ({done['undecided_without_text']} undecided pairs left out: their texts are not in samples/)")
        return lines + [f"{name:<20} {path}" for name, path in done["files"].items()]
    from synthpref.monitor.spot_check_import import import_reviews
    return report_lines(import_reviews(args.run, args.file, queue=args.queue, threshold=args.threshold,
                                       min_reviews=args.min_reviews))


def report_lines(report: dict) -> list[str]:
    """The agreement table: one row per figure, then the flagged domains."""
    def pct(x):
        return "   n/a" if x is None else f"{100 * x:5.1f}%"

    head = f"{'':<28} {'agree':>7} {'decided':>7} {'ties':>5} {'failed':>6} {'human ties':>10}"
    lines = [f"{report['reviews']} reviews from {report['review_file']} ({report['quarantined']} quarantined)",
             head, "-" * len(head)]

    def row(name: str, t: dict) -> None:
        lines.append(f"{name:<28} {pct(t['agreement']):>7} {t['agree'] + t['disagree']:>7} {t['ties']:>5} "
                     f"{t['failed']:>6} {t['human_ties']:>10}")

    row(f"run ({report['run']['jury_rule']})", report["run"])
    for judge, t in report["judges"].items():
        row(f"judge {judge}", t)
    for rule, t in report["jury_rules"].items():
        row(f"jury rule {rule}", t)
    for domain, t in report["domains"].items():
        row(f"domain {domain}" + (" *" if t["flagged"] else ""), t)
    for rule, t in report["selection_rules"].items():
        row(f"selected by {rule}", t)
    flagged = report["flagged_domains"]
    lines.append(f"capability ceiling (agreement < {report['threshold']} with >= {report['min_reviews']} decided "
                 f"reviews): {', '.join(flagged) if flagged else 'none'}")
    if report["quarantined_by_reason"]:
        lines.append("quarantined: " + ", ".join(f"{k} {v}" for k, v in report["quarantined_by_reason"].items()))
    lines.append(f"report: {report['run_dir']}/spot_checks/report.json")
    return lines
