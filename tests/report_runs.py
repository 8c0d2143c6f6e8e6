"""Run folders for the report tests, shaped like the ones the jobs write (modelled on runs/demo: the same
events, fields, None values and files), so the tests need no Ray and no engines.

`cai_run` builds a folder with sub-runs (sl/, labels/, rm/, ppo/) as the cai job lays them out; its
label summary has per-principle figures and human spot checks; some of its text is hostile HTML."""
from __future__ import annotations

import json
import numbers
import random
from pathlib import Path

HOSTILE = '<script>alert("pwned")</script>'
INDEX_FIELDS = {"time", "step", "event", "epoch", "iteration", "round", "shard"}     # never plotted as metrics


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


class Clock:
    """Increasing wall-clock times, so sub-runs started in the order they are built."""
    def __init__(self, start: float = 1_795_818_050.0):
        self.now = start

    def __call__(self, seconds: float = 0.5) -> float:
        self.now += seconds
        return round(self.now, 3)


def ppo_run(folder: Path, clock: Clock, steps: int = 12, eval_every: int = 4) -> Path:
    rng = random.Random(1)
    rows = [{"time": clock(), "event": "replica_ready", "pool": "sampler", "slot": 0, "pid": 1, "seconds": 9.3},
            {"time": clock(), "event": "start", "dtypes": {"policy_trainer": "float32"}, "prompts": 20,
             "held_out": 4, "quarantined": 0, "resumed_after_step": 0}]
    for step in range(1, steps + 1):
        rows.append({"time": clock(), "event": "ppo_phases", "step": step,
                     "spans": {"generate": [1.0, 2.0], "reward": [2.0, 3.0]}})
        rows.append({"time": clock(), "event": "ppo", "step": step, "samples": 32, "sampling_errors": 0,
                     "reward_raw": 0.8 + 0.01 * step + rng.uniform(-0.01, 0.01), "reward_shaped": 0.79 + 0.01 * step,
                     "kl": 0.02 * step, "kl_coef": 0.05, "response_length": 24.0 - 0.3 * step,
                     "entropy": 6.4 - 0.01 * step, "pg_loss": rng.uniform(-0.1, 0.1), "value_loss": 0.15 / step,
                     "clip_fraction": 0.0, "explained_variance": -1.0 + 0.1 * step,
                     "time_generate_s": 1.9 if step == 1 else 0.08, "time_reward_s": 0.09, "time_update_s": 0.07,
                     "time_sync_s": 0.03, "step_s": 0.3, "tokens_per_s": 390.0,
                     "approx_kl": float("nan") if step == 2 else 0.001 * step})   # a NaN a real run can log
        if step % eval_every == 0:
            rows.append({"time": clock(), "event": "eval", "step": step, "proxy": 0.79 - 0.005 * step,
                         "gold": -67.0 + step, "kl": 0.7 * step, "length": 24.0, "diverging_streak": 0})
            rows.append({"time": clock(), "event": "best_gold", "step": step, "gold": -67.0 + step})
    rows.append({"time": clock(), "event": "over_optimisation", "step": steps,
                 "message": f"gold falls while proxy rises {HOSTILE}", "action": "warn"})
    rows.append({"time": clock(), "event": "end", "steps": steps, "stopped": None})
    write_jsonl(folder / "metrics.jsonl", rows)
    write_json(folder / "run.json", {"job": "ppo", "config": {"train.steps": steps}, "finished": steps})
    write_json(folder / "report.json", {"output_dir": str(folder), "dtypes": {"policy_trainer": "float32"},
                                        "steps": [], "stopped": None, "best_gold_step": steps,
                                        "best_gold": -67.0 + steps, "engine_trainer_logprob_gap_max": 0.004})
    return folder


def train_run(folder: Path, clock: Clock, job: str = "train-rm", steps: int = 9, epochs: int = 3) -> Path:
    rng = random.Random(2)
    rows = [{"time": clock(), "event": "start", "dtypes": {"reward_trainer": "float32"}, "pairs": 72, "train": 51,
             "held_out": 21, "quarantined": 0, "resumed_after_epoch": 0}]
    per_epoch = steps // epochs
    for step in range(1, steps + 1):
        rows.append({"time": clock(), "event": "train", "step": step, "epoch": (step - 1) // per_epoch + 1,
                     "loss": 0.69 - 0.02 * step, "accuracy": min(1.0, 0.5 + 0.05 * step),
                     "margin": 0.1 * step, "reward_chosen": 0.05 * step, "reward_rejected": -0.05 * step,
                     "rows": 8, "grad_norm": rng.uniform(0.5, 1.5)})
        if step % per_epoch == 0:
            rows.append({"time": clock(), "event": "eval", "step": step, "epoch": step // per_epoch,
                         "held_out_accuracy": 0.5 + 0.08 * (step // per_epoch), "held_out_margin": 0.2 * step})
    rows.append({"time": clock(), "event": "end", "pairs": 72, "train_pairs": 51})
    write_jsonl(folder / "metrics.jsonl", rows)
    write_json(folder / "run.json", {"job": job, "config": {"train.epochs": epochs}, "finished": epochs})
    write_json(folder / "report.json", {"output_dir": str(folder), "dtypes": {"reward_trainer": "float32"},
                                        "pairs": 72, "train_pairs": 51, "quarantined": 0, "steps": steps,
                                        "held_out": {"pairs": 21, "accuracy": 0.76, "mean_margin": 0.4},
                                        "human_agreement": {"pairs": 10, "accuracy": 0.7, "quarantined": 0}})
    return folder


JUDGES = ["tiny-judge", "readable", "<b>bold</b>"]


def label_run(folder: Path, clock: Clock, principles: bool = True, spot_checks: bool = True) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = random.Random(3)
    rows = [{"time": clock(), "event": "start", "prompts": 24, "quarantined": 2, "shards": 3, "shards_to_run": 3}]
    for shard in range(3):
        rows.append({"time": clock(), "event": "shard", "shard": shard, "seconds": 4.2, "labels_per_s": 5.7,
                     "pairs": 24, "preferences": 23, "ties": 1})
    rows.append({"time": clock(), "event": "end", "prompts": 24, "pairs": 72, "preferences": 69})
    write_jsonl(folder / "metrics.jsonl", rows)
    write_json(folder / "run.json", {"job": "label", "config": {"data.shard_size": 8}, "finished": 3})
    write_jsonl(folder / "quarantine.jsonl", [
        {"source": "prompts.jsonl:7", "reason": "empty_prompt", "detail": f"no text {HOSTILE}", "raw": HOSTILE},
        {"source": "prompts.jsonl:9", "reason": "too_long", "detail": "4100 tokens > 1024", "raw": "..."}])
    judges = {j: {"votes": 72, "failed": i, "both_order_pairs": 72, "position_flip_rate": [0.958, 0.0, 0.3][i],
                  "length_correlation": [0.084, 0.635, -0.2][i], "score_length_correlation": None,
                  "prompt_tokens": 40292 * (i == 0), "completion_tokens": 144 * (i == 0), "retries": 0}
              for i, j in enumerate(JUDGES)}
    summary = {"dtypes": {"judge:tiny-judge": "bfloat16", "sampler": "bfloat16"}, "output_dir": str(folder),
               "counts": {"rows_read": 26, "prompts": 24, "quarantined_rows": 2, "quarantined": 2, "samples": 72,
                          "pairs": 72, "preferences": 69, "ties": 2, "failed_pairs": 1, "judgments": 432,
                          "failed_verdicts": 3},
               "quarantined_by_reason": {"empty_prompt": 1, "too_long": 1},
               "position_consistency": 0.042, "judges": judges,
               "judge_agreement": {f"{JUDGES[0]}|{JUDGES[1]}": {"pairs": 72, "agreement": 0.639},
                                   f"{JUDGES[0]}|{JUDGES[2]}": {"pairs": 72, "agreement": 0.5},
                                   f"{JUDGES[1]}|{JUDGES[2]}": {"pairs": 72, "agreement": 0.8}},
               "chosen_longer_rate": 0.76, "tokens": {"prompt": 40292, "completion": 144, "per_label": 561.6},
               "cost": None, "shards": {"total": 3, "skipped_as_done": 0, "run": 3}}
    if principles:
        summary["principles"] = {
            "harmless": {"drawn": 30, "decided": 28, "ties": 1, "failed": 1, "juror_agreement": 0.7, "flip_rate": 0.2,
                         "human_agreement": 0.8},
            "honest": {"drawn": 25, "decided": 25, "ties": 0, "failed": 0, "juror_agreement": 0.9, "flip_rate": 0.1,
                       "human_agreement": None},
            "helpful": {"drawn": 17, "decided": 16, "ties": 1, "failed": 0, "juror_agreement": None, "flip_rate": 0.4,
                        "human_agreement": 0.6}}
    if spot_checks:
        def rates(agree, n):
            return {"pairs": n, "agree": agree, "disagree": n - agree, "ties": 0, "failed": 0, "human_ties": 1,
                    "agreement": agree / n, "agreement_ties_half": agree / n}
        summary["spot_checks"] = {
            "reviews": 40, "human_ties": 2, "reviewers": ["ann", "bo"], "quarantined": 1, "threshold": 0.6,
            "min_reviews": 5, "review_file": "reviews.jsonl",
            "run": {**rates(30, 38), "jury_rule": "mean_prob", "order_rule": "mean_prob"},
            "judges": {j: rates(20 + 5 * i, 38) for i, j in enumerate(JUDGES)},
            "jury_rules": {"majority": rates(29, 38), "mean_prob": rates(30, 38)},
            "domains": {"math": {**rates(4, 10), "flagged": True}, "poems": {**rates(26, 28), "flagged": False}},
            "flagged_domains": ["math"]}
    write_json(folder / "summary.json", summary)
    for shard in range(3):
        n = 23
        conf = [0.5 + rng.random() / 2 for _ in range(n)]
        table = pa.table({
            "prompt": [[{"role": "user", "content": f"prompt {shard}-{i} {HOSTILE}"}] for i in range(n)],
            "chosen": [[{"role": "assistant", "content": f"chosen {i} & <i>x</i>"}] for i in range(n)],
            "rejected": [[{"role": "assistant", "content": f"rejected {i}"}] for i in range(n)],
            "confidence": conf, "agreement": [rng.choice([0.5, 1.0]) for _ in range(n)]})
        (folder / "preferences").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "preferences" / f"shard-{shard:05d}.parquet")
    (folder / "spot_checks").mkdir(exist_ok=True)                  # not a sub-run: no metrics.jsonl
    write_json(folder / "spot_checks" / "report.json", summary.get("spot_checks", {}))
    return folder


def sl_run(folder: Path, clock: Clock, rounds: int = 3) -> Path:
    """The critique-revision phase of cai (cai_sl.py): answers (round 0), a record per critique-revision
    round, then SFT steps on the revisions."""
    rows = [{"time": clock(), "event": "start", "prompts": 16},
            {"time": clock(), "event": "sl_round", "step": 0, "round": 0, "answers": 16, "failed": 0}]
    for r in range(1, rounds + 1):
        rows.append({"time": clock(), "event": "sl_round", "step": r, "round": r, "prompts": 12, "kept": 9 + r,
                     "empty": 1, "failed": 3 - r, "critique_s": 1.2, "revise_s": 1.5,
                     "principle_agreement": None if r == 1 else 0.6 + 0.1 * r})
    rows.append({"time": clock(), "event": "sl_answers", "red_team_answered": 12, "unanswered": 0})
    for step in range(1, 7):
        rows.append({"time": clock(), "event": "sft", "step": step, "epoch": 1 + step // 4, "loss": 3.0 / step})
    rows.append({"time": clock(), "event": "end", "sft_loss_first": 3.0, "sft_loss_last": 0.5})
    write_jsonl(folder / "metrics.jsonl", rows)
    write_json(folder / "run.json", {"job": "cai-sl", "config": {}, "finished": rounds})
    return folder


def self_reward_run(folder: Path, clock: Clock, iterations: int = 3) -> Path:
    rows, history, step = [{"time": clock(), "event": "start"}], [], 0
    for it in range(iterations + 1):
        record = {"iteration": it, "win_rate": {"rate": None if it == 0 else 0.5 + 0.05 * it, "pairs": 8},
                  "judge": {"agreement": None, "pairs": 0}, "panel": {"distinct_2": 1.0 - 0.01 * it, "self_bleu": 0.07},
                  "length": {"mean_tokens": 31.0 + it}, "pairs": 16, "ties": 0, "guard_fired": False,
                  "sample_s": 0.2, "judge_s": 0.15, "train_s": 0.1, "sync_s": 0.02}
        history.append(record)
        flat = {"win_rate_rate": record["win_rate"]["rate"], "judge_agreement": None, "guard_fired": False,
                "panel_distinct_2": record["panel"]["distinct_2"], "panel_self_bleu": 0.07,
                "length_mean_tokens": 31.0 + it, "pairs": 16, "sample_s": 0.2, "judge_s": 0.15, "train_s": 0.1}
        rows.append({"time": clock(), "event": "iteration", "step": it, "iteration": it, **flat})
        for _ in range(2 if it < iterations else 0):
            step += 1
            rows.append({"time": clock(), "event": "dpo", "step": step, "iteration": it, "loss": 0.69 - 0.001 * step,
                         "accuracy": 0.5, "reward_chosen": 0.001 * step, "reward_rejected": -0.001 * step})
    rows.append({"time": clock(), "event": "end", "iterations": len(history), "guard": None})
    write_jsonl(folder / "metrics.jsonl", rows)
    write_json(folder / "run.json", {"job": "self-reward", "config": {"iterations": iterations},
                                     "finished": iterations})
    write_json(folder / "report.json", {"output_dir": str(folder), "iterations": history, "guard": None,
                                        "quarantined": 0, "dtypes": {"policy_trainer": "float32"}})
    return folder


def cai_run(folder: Path) -> Path:
    """A cai run folder as algorithms/cai.py writes it: no run.json (the chain keeps chain.json), its own
    records and report (with the per-principle table), and sub-runs sl/, labels/, rm/, ppo/."""
    clock = Clock()
    folder.mkdir(parents=True, exist_ok=True)
    own = [{"time": clock(), "event": "phase", "phase": "sl", "status": "started"}]
    sl_run(folder / "sl", clock)
    label_run(folder / "labels", clock)
    train_run(folder / "rm", clock)
    ppo_run(folder / "ppo", clock)
    own.append({"time": clock(), "event": "end", "phases": ["sl", "label", "train_rm", "ppo"]})
    write_jsonl(folder / "metrics.jsonl", own)
    write_json(folder / "chain.json", {"finished": {"sl": {}, "label": {}, "train_rm": {}, "ppo": {}}})
    principles = json.loads((folder / "labels" / "summary.json").read_text())["principles"]
    write_json(folder / "report.json", {
        "output_dir": str(folder), "constitution": {"name": "default", "hash": "abc", "principles": 3},
        "phases": {name: {"output_dir": str(folder / name)} for name in ("sl", "labels", "rm", "ppo")},
        "sl": {"rounds": 3, "kept_revisions": 33, "sft_rows": 33}, "labels": {"position_consistency": 0.4},
        "principles": {pid: {**row, "human_reviews": 4} for pid, row in principles.items()},
        "reward_model": {"held_out": {"pairs": 21, "accuracy": 0.76}, "train_pairs": 51},
        "ppo": {"policy_dir": str(folder / "ppo" / "policy")}, "policy_dir": str(folder / "ppo" / "policy")})
    (folder / "checkpoints").mkdir()                                  # folders that are not runs
    return folder


def expected_counts(metrics_path: Path) -> dict[str, int]:
    """{"event/field": rows of that event with a step and a number in that field}: a curve's point count."""
    counts: dict[str, int] = {}
    for line in metrics_path.read_text().splitlines():
        row = json.loads(line)
        if not (isinstance(row.get("step"), numbers.Real) and not isinstance(row.get("step"), bool)):
            continue
        for key, value in row.items():
            if key not in INDEX_FIELDS and isinstance(value, numbers.Real) and not isinstance(value, bool):
                metric = f"{row['event']}/{key}"
                counts[metric] = counts.get(metric, 0) + 1
    return counts
