"""What a PPO run writes: each step's tables, the final report, and the summary the CLI prints."""
from __future__ import annotations

import json
from pathlib import Path

from synthpref.data.quarantine import write_quarantine
from synthpref.data.schema import JUDGMENTS, REWARDS, SAMPLES, to_table
from synthpref.data.shards import atomic_write_bytes, atomic_write_table


def step_tables(out: Path, step: int, samples: list[dict], rewards, raw: list[float], shaped: list[float],
                trained, dropped: dict[str, str]) -> None:
    """steps/NNNNNN/: samples (with their token ids), judgments, rewards (raw, shaped, trained or why
    not) and the quarantine of the step's failures (empty when none, so a redone step leaves no stale one)."""
    folder = out / "steps" / f"{step:06d}"
    shaped_of = {s["sample_id"]: (r, v) for s, r, v in zip(trained.samples, raw, shaped)}
    rows = []
    for s in samples:
        reward, value = shaped_of.get(s["sample_id"], (rewards.value.get(s["sample_id"]), None))
        reason = dropped.get(s["sample_id"])
        rows.append({"prompt_id": s["prompt_id"], "sample_id": s["sample_id"], "reward": reward, "shaped_reward": value,
                     "trained": reason is None and s["sample_id"] in shaped_of, "dropped_reason": reason})
    atomic_write_table(folder / "samples.parquet", to_table(samples, SAMPLES))
    atomic_write_table(folder / "judgments.parquet", to_table(rewards.rows, JUDGMENTS))
    atomic_write_table(folder / "rewards.parquet", to_table(rows, REWARDS))
    write_quarantine(folder / "quarantine.jsonl",
                     [{"sample_id": sid, "reason": reason.split(":")[0], "detail": reason} for sid, reason in dropped.items()])


def guard_report(guard, diversity: dict | None) -> dict | None:
    """The collapse guard's rule, baseline panel and firings (the run state's `diversity` without its word
    counts); None when no evaluation ran."""
    if diversity is None:
        return None
    return {"metric": guard.metric, "min_fraction": guard.min_fraction, "action": guard.action,
            **{k: v for k, v in diversity.items() if k != "reference"}}


def write_report(job, parts, summaries: list[dict], monitor, stopped: str | None,
                 diversity: dict | None = None) -> dict:
    """Save the final policy and write report.json; `diversity`: the collapse guard's state (None when
    there were no evaluations), reported without its word counts."""
    parts.policy.save_pretrained(job.out / "policy")
    gaps = [s["engine_trainer_logprob_gap_max"] for s in summaries if s.get("engine_trainer_logprob_gap_max") is not None]
    report = {"output_dir": str(job.out), "policy_dir": str(job.out / "policy"), "dtypes": parts.dtypes(),
              "steps": summaries, "stopped": stopped, "evaluations": monitor.history,
              "best_gold_step": monitor.best_step, "best_gold": monitor.best_gold,
              "best_policy_dir": str(job.out / "best_policy") if monitor.best_step is not None else None,
              "engine_trainer_logprob_gap_max": max(gaps) if gaps else None,
              "guard": guard_report(parts.cfg.guard, diversity)}
    atomic_write_bytes(job.out / "report.json", json.dumps(report, indent=2).encode())
    job.log({"event": "end", "steps": len(summaries), "stopped": stopped})
    return report


def summary_lines(report: dict) -> list[str]:
    """What `synthpref ppo` prints at the end: one line per step, the monitor's verdict, where things are."""
    def num(x, fmt=".3f"):
        return "n/a" if x is None else format(x, fmt)
    lines = ["\n step   reward   KL (nats/seq)   length   gold reward   trained"]
    for s in report["steps"]:
        lines.append(f"{s['step']:>5}  {num(s['reward_raw']):>7}  {num(s['kl'], '.4f'):>14}  "
                     f"{num(s['response_length'], '.1f'):>7}  {num(s.get('gold')):>12}  {s.get('trained_rows', 0):>7}")
    if report.get("stopped"):
        lines.append(f"stopped early: {report['stopped']}")
    guard = report.get("guard") or {}
    if guard.get("fired_at") is not None and guard["action"] != "stop":
        at = ", ".join(str(s) for s in guard["fired"])
        lines.append(f"collapse guard warned at step{'s' if len(guard['fired']) > 1 else ''} {at}; the first time: "
                     f"{guard['message']}")
    if report.get("best_gold_step") is not None:
        lines.append(f"best gold reward {report['best_gold']:.3f} at step {report['best_gold_step']}: "
                     f"{report['best_policy_dir']}")
    lines += [f"policy (Hugging Face format): {report['policy_dir']}",
              f"steps' tables, report, metrics and logs: {report['output_dir']}"]
    return lines
