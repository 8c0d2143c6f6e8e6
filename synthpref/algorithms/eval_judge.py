"""Eval-judge: how often a judge, or a jury, agrees with human preference labels.

Each human-labelled pair (hh-rlhf transcripts, or TRL chosen/rejected rows) is judged in both orders
exactly as the label job would judge it. The human's choice is shown first in half of the pairs and
second in the other half, so a position-biased judge cannot look accurate when only one order is judged.
Reported per judge and for the jury: agreement with the human choice (over decided pairs, and with ties
counted as half), ties, failures, position flip rate and length correlation, next to two reference
points: how often the longer response is the human's choice, and chance (0.5). This is the
capability-ceiling check of DESIGN.md: a judge's agreement with humans bounds its labels' worth.
"""
from __future__ import annotations

import json

from synthpref.config import EvalJudgeConfig
from synthpref.data.pairs import Pair, given_samples
from synthpref.data.prompts import read_rows
from synthpref.data.quarantine import by_reason, write_quarantine
from synthpref.data.readers import PromptRow, Quarantined
from synthpref.data.schema import content_id
from synthpref.data.shards import atomic_write_bytes
from synthpref.errors import no_usable_rows
from synthpref.judging.preflight import preflight
from synthpref.judging.verdicts import FIRST, SECOND, TIE
from synthpref.models.precision import describe as describe_dtypes
from synthpref.monitor import bias
from synthpref.monitor.metrics import progress
from synthpref.monitor.agreement import Tally
from synthpref.runtime.job import JobRuntime


def human_pairs(cfg: EvalJudgeConfig) -> tuple[list[Pair], dict[str, str], dict, list[Quarantined], int]:
    """(pairs, human winner "A"/"B" per pair, conversations, quarantined rows, rows read)."""
    pairs, human, conversations, quarantined, n_read = [], {}, {}, [], 0
    for item in read_rows(cfg.data):
        n_read += 1
        if isinstance(item, Quarantined):
            quarantined.append(item)
            continue
        choice = item.meta.get("human_choice")
        if not isinstance(item, PromptRow) or item.completions is None or len(item.completions) != 2 or choice not in (0, 1):
            quarantined.append(Quarantined(item.source, "no_human_label", "expected a pair of responses with a human "
                                           "choice (hh-rlhf or chosen/rejected rows)", json.dumps(item.messages)[:2000]))
            continue
        chosen, rejected = given_samples(item.prompt_id, item.completions)[choice], \
            given_samples(item.prompt_id, item.completions)[1 - choice]
        human_first = len(pairs) % 2 == 0                       # alternate the human's side
        a, b = (chosen, rejected) if human_first else (rejected, chosen)
        pair = Pair(content_id(item.prompt_id, a["sample_id"], b["sample_id"]), item.prompt_id, a, b)
        pairs.append(pair)
        human[pair.pair_id] = FIRST if human_first else SECOND
        conversations[item.prompt_id] = item.messages
    return pairs, human, conversations, quarantined, n_read


def run_eval_judge(cfg: EvalJudgeConfig) -> dict:
    """Judge every human-labelled pair in both orders and report agreement, bias figures and baselines."""
    from synthpref.judging.jury import Jury, jury_cpus, needs_actors

    with JobRuntime(cfg, "eval-judge", tensorboard=False, resumable=False) as job:
        preflight(cfg.judging)
        pairs, human, conversations, quarantined, n_read = human_pairs(cfg)
        write_quarantine(job.out / "quarantine.jsonl", quarantined)
        if not pairs:
            raise no_usable_rows("human-labelled pairs", cfg.data.path, len(quarantined),
                                 "reasons: " + ", ".join(sorted({q.reason for q in quarantined})))
        jury_tally, tallies = Tally(), {j.id: Tally() for j in cfg.judging.judges}
        stats = {j.id: bias.new_judge_stats() for j in cfg.judging.judges}
        agreement: dict = {}
        consistent = checked = longer_is_human = 0
        if needs_actors(cfg.judging):
            job.start_ray(max(2, int(jury_cpus(cfg.judging) + 0.999)))
        jury = job.own(Jury(cfg.judging, events=job.log))
        dtypes = jury.dtypes()
        bar = progress(total=len(pairs), desc="judging human-labelled pairs", unit="pair", enabled=cfg.progress)
        for start in range(0, len(pairs), cfg.chunk_pairs):
            batch = pairs[start:start + cfg.chunk_pairs]
            _, decisions, batch_stats = jury.judge_pairs(batch, conversations)
            for pair in batch:
                decision, votes = decisions[pair.pair_id]
                jury_tally.count(decision.winner, human[pair.pair_id])
                for vote in votes:
                    tallies[vote.judge_id].count(vote.winner, human[pair.pair_id])
                if decision.consistent is not None:
                    checked += 1
                    consistent += int(decision.consistent)
                longer = FIRST if pair.length_delta > 0 else SECOND if pair.length_delta < 0 else TIE
                longer_is_human += int(longer == human[pair.pair_id])
            for jid, js in batch_stats["judges"].items():
                stats[jid] = bias.merge_judge_stats(stats[jid], js)
            for key, (n, same) in batch_stats["agreement"].items():
                agreement[key] = (agreement.get(key, (0, 0))[0] + n, agreement.get(key, (0, 0))[1] + same)
            bar.update(len(batch))
        bar.close()
        report = {
            "data": str(cfg.data.path), "dtypes": dtypes, "rows_read": n_read, "pairs": len(pairs),
            "quarantined": len(quarantined), "quarantined_by_reason": by_reason(quarantined),
            "jury": {**jury_tally.rates(), "rule": cfg.judging.jury_rule, "order_rule": cfg.judging.order_rule,
                     "position_consistency": consistent / checked if checked else None},
            "judges": {jid: {**tallies[jid].rates(), **{k: v for k, v in bias.judge_report(stats[jid]).items()
                                                        if k in ("position_flip_rate", "length_correlation", "retries",
                                                                 "prompt_tokens", "completion_tokens")}}
                       for jid in tallies},
            "judge_agreement": bias.agreement_report(agreement),
            "baselines": {"longer_response_is_human_choice": longer_is_human / len(pairs) if pairs else None,
                          "chance": 0.5},
            "output_dir": str(job.out.resolve()),
        }
        atomic_write_bytes(job.out / "report.json", json.dumps(report, indent=2).encode())
        job.log({"event": "end", "pairs": len(pairs), "jury_agreement": report["jury"]["agreement"]})
    return report


def format_table(report: dict) -> str:
    """The report as a readable table: one row per judge, then the jury."""
    def pct(x):
        return "   n/a" if x is None else f"{100 * x:5.1f}%"

    def num(x):
        return "   n/a" if x is None else f"{x:+.3f}"
    head = f"{'judge':<24} {'agree':>7} {'ties½':>7} {'ties':>5} {'failed':>6} {'flip rate':>9} {'len corr':>8}"
    lines = [f"{report['pairs']} human-labelled pairs from {report['data']} ({report['quarantined']} quarantined)",
             head, "-" * len(head)]
    for jid, r in report["judges"].items():
        lines.append(f"{jid:<24} {pct(r['agreement']):>7} {pct(r['agreement_ties_half']):>7} {r['ties']:>5} "
                     f"{r['failed']:>6} {pct(r['position_flip_rate']):>9} {num(r['length_correlation']):>8}")
    j = report["jury"]
    lines.append(f"{'jury (' + j['rule'] + ')':<24} {pct(j['agreement']):>7} {pct(j['agreement_ties_half']):>7} "
                 f"{j['ties']:>5} {j['failed']:>6} {'':>9} {'':>8}")
    b = report["baselines"]
    lines.append(f"position consistency of the jury: {pct(j['position_consistency'])}; baselines: the longer "
                 f"response is the human's choice in {pct(b['longer_response_is_human_choice'])}, chance 50.0%")
    if report.get("dtypes"):
        lines.append(f"precision: {describe_dtypes(report['dtypes'])}")
    return "\n".join(lines)
