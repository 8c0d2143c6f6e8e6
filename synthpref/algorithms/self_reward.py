"""`synthpref self-reward`: Self-Rewarding Language Models (Yuan et al. 2024, arXiv 2401.10020).

Iteration t, with M_t the current policy:
  measure M_t: held-out samples (diversity panel, win rate over M_0 by an independent jury), M_t as a judge
    of human-labelled pairs, and its preference for its own text; the collapse guard compares the panel
    with M_0's (Alemohammad et al. 2023) and may end the loop here;
  a. M_t samples N candidates per prompt for a fresh slice of the prompts;
  b. M_t judges each candidate itself (an additive 0-5 score, K judge samples averaged) on the same engines,
     so every weight sync updates the judge too;
  c. each prompt's best vs worst candidate is a pair (ties dropped and counted; optionally the shortest of
     the near-best, Meta-Rewarding);
  d. DPO from M_t on those pairs (plus earlier iterations' under `accumulate`, plus fresh real pairs by
     `fresh_fraction`) gives M_{t+1}, whose weights go to the engines; checkpoint.
A rerun resumes after the last finished iteration. Optional seed SFT (instruction and judge-format data,
the paper's IFT and EFT) runs once before iteration 0.
"""
from __future__ import annotations

import json
import time

from synthpref.algorithms import self_reward_steps as steps
from synthpref.algorithms.self_reward_eval import measure, table_rows
from synthpref.algorithms.self_reward_parts import SelfRewardRun
from synthpref.config import ConfigError
from synthpref.config.self_reward import SelfRewardConfig
from synthpref.data.prompts import load_prompts, prompts_for_round, round_seed
from synthpref.data.quarantine import write_quarantine
from synthpref.data.schema import JUDGMENTS, SAMPLES, content_id, to_table
from synthpref.data.shards import atomic_write_bytes, atomic_write_table
from synthpref.errors import no_usable_rows
from synthpref.judging.jury import jury_cpus
from synthpref.judging.preflight import preflight
from synthpref.models.loading import pad_id, tokenizer_or_error
from synthpref.models.precision import describe as describe_dtypes
from synthpref.monitor.collapse_guard import check_collapse
from synthpref.monitor.console import say
from synthpref.monitor.metrics import progress
from synthpref.runtime.job import JobRuntime
from synthpref.training import dpo_data

def preflight_juries(cfg: SelfRewardConfig) -> None:
    """Fail before any worker starts on a judge that cannot work, naming the self-reward key: the policy's
    own scoring and pairwise judging (self_judge.*) and the independent jury (eval.judging.*)."""
    for jury_cfg, key in ((cfg.self_judge.scoring_jury(cfg.policy), "self_judge"),
                          (cfg.self_judge.pairwise_jury(cfg.policy), "self_judge"), (cfg.eval.judging, "eval.judging")):
        if jury_cfg is None:
            continue
        try:
            preflight(jury_cfg)
        except ConfigError as exc:
            text = str(exc)
            if key == "self_judge":
                text = text.replace("judging.judges.0.model", "policy.model").replace("judging.judges.0.", "self_judge.")
            raise ConfigError(text if key == "self_judge" else text.replace("judging.", "eval.judging.", 1)) from None


def split_prompts(prompts: list, n_held: int) -> tuple[list, list, int]:
    """(held-out prompts: the last n_held, training prompts: the rest less any conversation also held out,
    how many were left out for that)."""
    held = prompts[-n_held:]
    seen = {content_id(p.messages) for p in held}
    pool = [p for p in prompts[:-n_held] if content_id(p.messages) not in seen]
    return held, pool, len(prompts) - n_held - len(pool)


def run_self_reward(cfg: SelfRewardConfig, sampler=None) -> dict:
    """Seed SFT (once), then iterations of measure, sample, self-judge, pair, DPO, sync; `sampler`: a running
    SamplerGroup of the policy to use instead of starting one (tests share one)."""
    with JobRuntime(cfg, "self-reward") as job:
        preflight_juries(cfg)
        tokenizer = tokenizer_or_error(cfg.policy.model, "policy.model")
        prompts, quarantined, _ = load_prompts(cfg.data, cfg.policy)
        held, pool, overlap = split_prompts(prompts, cfg.eval.prompts)
        if not pool:
            write_quarantine(job.out / "quarantine.jsonl", quarantined)
            raise no_usable_rows(f"prompts beyond the {cfg.eval.prompts} held out (eval.prompts)", cfg.data.path,
                                 len(quarantined), f"{len(prompts)} usable")
        t = cfg.train
        job.start_ray(int(2 * t.world_size * max(1, t.num_cpus) + cfg.policy.engine.num_cpus * cfg.policy.pool.most
                          + (jury_cpus(cfg.eval.judging) if cfg.eval.judging else 0) + 1))
        run = SelfRewardRun(job, tokenizer, sampler)
        run.exclude({content_id(p.messages) for p in held}, "held-out prompt (eval.prompts)")
        audited = {content_id(r.messages) for r in run.human}       # the audit's prompts are never trained on
        pool = [p for p in pool if content_id(p.messages) not in audited]
        if not pool:
            raise no_usable_rows("prompts to train on that are neither held out (eval.prompts) nor human-labelled "
                                 "(eval.human.path)", cfg.data.path, len(quarantined), f"{len(prompts)} usable")
        write_quarantine(job.out / "quarantine.jsonl", quarantined + run.quarantined)
        done, history = job.state.finished, list(job.state.get("history", []))
        guard = job.state.get("guard") or {"metric": cfg.guard.metric, "min_fraction": cfg.guard.min_fraction,
                                           "action": cfg.guard.action, "fired": [], "stopped_at": None}
        if job.state.get("seeded") is None:
            steps.seed_sft(run)
            job.state.mark(0, seeded=True)
        stopped_before = guard["stopped_at"] is not None
        if not stopped_before:
            run.restore(done)
            history = [h for h in history if h["iteration"] < done]
            guard["fired"] = [f for f in guard["fired"] if f["iteration"] < done]     # iteration `done` is redone
        else:
            say(f"this run was stopped by the collapse guard at iteration {guard['stopped_at']}; nothing to do")
        say(f"precision: {describe_dtypes(run.dtypes())}")
        conversations = {p.prompt_id: p.messages for p in prompts}
        for it in range(done, cfg.iterations + 1) if guard["stopped_at"] is None else ():
            record = measure(run, held, conversations, it)
            verdict = check_collapse(record["panel"], history[0]["panel"], cfg.guard.metric, cfg.guard.min_fraction,
                                     f"iteration {it}") if it and history else None
            if verdict is not None and verdict.fired and cfg.guard.action != "off":
                say(verdict.message)
                guard["fired"].append({"iteration": it, "message": verdict.message})
                if cfg.guard.action == "stop":
                    guard["stopped_at"] = it
            record["guard_fired"] = bool(guard["fired"] and guard["fired"][-1]["iteration"] == it)
            if it == cfg.iterations or guard["stopped_at"] is not None:   # the last measurement: no training
                history.append(record)
                run.metrics.scalars("iteration", it, flat(record))
                job.state.mark(it, history=history, guard=guard, seeded=True)
                break
            record.update(one_iteration(run, pool, conversations, it, sum(h.get("fresh_pairs", 0) for h in history)))
            history.append(record)
            run.metrics.scalars("iteration", it, flat(record))
            run.checkpoint(it + 1)
            job.state.mark(it + 1, history=history, guard=guard, seeded=True)
        if not stopped_before:                         # (a stopped run's policy/ was saved when it stopped)
            run.policy.save_pretrained(job.out / "policy")
        run.give_back_shared_sampler()
        report = {"output_dir": str(job.out), "policy_dir": str(job.out / "policy"), "dtypes": run.dtypes(),
                  "iterations": history, "guard": guard, "quarantined": len(quarantined) + len(run.quarantined),
                  "held_out_overlap": overlap}
        atomic_write_bytes(job.out / "report.json", json.dumps(report, indent=2, default=str).encode())
        job.log({"event": "end", "iterations": len(history), "guard": guard})
    return report


def one_iteration(run: SelfRewardRun, pool: list, conversations: dict, it: int, fresh_used: int) -> dict:
    """Steps a-d of iteration `it` with M_it; writes iterations/NNNN/ and returns the step's figures.
    `fresh_used`: real pairs taken by earlier iterations (this one takes the next)."""
    cfg, started, timing = run.cfg, time.perf_counter(), {}
    seed, folder = round_seed(cfg.seed, "self-reward", it), run.job.out / "iterations" / f"{it:04d}"
    batch = prompts_for_round(pool, it + 1, cfg.prompts_per_iteration)
    k = cfg.policy.samples_per_prompt
    bar = progress(len(batch) * k, f"iteration {it} sample", "req", cfg.progress)
    samples_of, errors = run.sample(batch, k, seed, bar.update)
    bar.close()
    timing["sample_s"] = time.perf_counter() - started
    judge = run.scoring.judges[0]
    per_sample = judge.cfg.samples if judge.cfg.type != "function" else 1
    bar = progress(sum(map(len, samples_of.values())) * per_sample, f"iteration {it} self-judge", "req", cfg.progress)
    rows, _, _ = run.scoring.score_samples(samples_of, conversations, on_done=bar.update)
    bar.close()
    scores = {r["pair_id"]: r["score"] for r in rows if r["verdict"] == "SCORE"}
    timing["judge_s"] = time.perf_counter() - started - timing["sample_s"]
    selected, counts = steps.select_pairs(samples_of, scores, cfg.length_control_margin)
    own = steps.pair_rows(selected, scores, conversations, it)
    earlier = [r for j in range(it) for r in table_rows(run.job.out / "iterations" / f"{j:04d}" / "pairs.parquet")
               if r["source"] == "self"] if cfg.data_policy == "accumulate" else []
    fresh = steps.fresh_rows(run.fresh, fresh_used, it, cfg.fresh_fraction, len(own) + len(earlier))
    bad: list[dict] = []
    pairs = steps.encode_training_pairs(run.tokenizer, own + earlier + fresh, cfg.train.max_len, bad)
    train_start = time.perf_counter()
    dpo = train_dpo(run, pairs, it, seed)
    timing["train_s"] = time.perf_counter() - train_start
    sync = run.sync(it + 1)
    timing["sync_s"] = sync["total_s"]
    samples = [s for ss in samples_of.values() for s in ss]
    atomic_write_table(folder / "samples.parquet", to_table(samples, SAMPLES))
    atomic_write_table(folder / "judgments.parquet", to_table(rows, JUDGMENTS))
    atomic_write_table(folder / "pairs.parquet", to_table(own + fresh, steps.PAIRS))
    write_quarantine(folder / "quarantine.jsonl", errors + bad)
    return {"prompts": counts.prompts, "pairs": counts.pairs, "ties": counts.ties, "unscored": counts.unscored,
            "sampling_errors": len(errors), "failed_verdicts": sum(r["verdict"] != "SCORE" for r in rows),
            "quarantined_pairs": len(bad),
            "earlier_pairs": len(earlier), "fresh_pairs": len(fresh), "trained_pairs": len(pairs),
            "sampled_version": sorted({s["policy"] for s in samples}),
            "judge_versions": sorted({r["weight_version"] for r in rows if r["weight_version"] is not None}),
            "mean_self_score": sum(scores.values()) / len(scores) if scores else None,
            "chosen_tokens": mean([c.get("n_tokens") for c, _ in selected]),
            "rejected_tokens": mean([r.get("n_tokens") for _, r in selected]),
            **dpo, "weight_version": it + 1, **timing, "iteration_s": time.perf_counter() - started}


def train_dpo(run: SelfRewardRun, pairs: list, it: int, seed: int) -> dict:
    """Reference log-probs (M_it itself, or M_0), then train.epochs of DPO over the pairs."""
    cfg, d = run.cfg, run.cfg.dpo
    if not pairs:
        return {"dpo_steps": 0, "dpo_loss_first": None, "dpo_loss_last": None, "dpo_accuracy_last": None}
    size, pad = cfg.train.micro_batch * cfg.train.world_size, pad_id(run.tokenizer)
    dpo_data.fill_reference(run.reference_group() or run.policy, pairs, size, pad, shared_prompt=d.shared_prompt)
    losses, stats = [], {}
    for epoch in range(1, cfg.train.epochs + 1):
        for index in dpo_data.batches(pairs, size, seed + epoch):
            stats = run.policy.train("train_dpo", dpo_data.pair_tensors(pairs, index, pad, d.loss), d.settings())
            losses.append(stats["loss"])
            run.step += 1
            run.metrics.scalars("dpo", run.step, {"iteration": it, **stats})
    return {"dpo_steps": len(losses), "dpo_loss_first": losses[0], "dpo_loss_last": losses[-1],
            "dpo_accuracy_last": stats.get("accuracy")}


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def flat(record: dict) -> dict:
    """The record's numbers, nested ones as a_b (for metrics.jsonl and TensorBoard)."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}_{k}": v for k, v in flat(value).items()})
        elif not isinstance(value, (list, str)):
            out[key] = value
    return out


def summary_lines(report: dict) -> list[str]:
    """What `synthpref self-reward` prints at the end: one line per iteration, the guard, where things are."""
    def num(x, fmt=".3f"):
        return "n/a" if x is None else format(x, fmt)
    lines = ["\niter  pairs  ties  win vs M0  judge agree  self-pref gap  distinct-2  mean length  DPO loss"]
    for r in report["iterations"]:
        lines.append(f"{r['iteration']:>4}  {r.get('pairs', '-'):>5}  {r.get('ties', '-'):>4}  "
                     f"{num(r['win_rate']['rate']):>9}  {num(r['judge']['agreement']):>11}  "
                     f"{num(r['self_preference']['gap'], '+.3f'):>13}  {num(r['panel']['distinct_2']):>10}  "
                     f"{num(r['length']['mean_tokens'], '.1f'):>11}  {num(r.get('dpo_loss_last'), '.4f')}")
    guard = report["guard"]
    if guard["stopped_at"] is not None:
        lines.append(f"collapse guard ({guard['metric']} below {guard['min_fraction']} x iteration 0's) stopped the "
                     f"run at iteration {guard['stopped_at']}: {guard['fired'][-1]['message']}")
    elif guard["fired"]:
        lines.append(f"collapse guard ({guard['metric']} below {guard['min_fraction']} x iteration 0's) warned at "
                     f"iteration(s) {', '.join(str(f['iteration']) for f in guard['fired'])}: {guard['fired'][0]['message']}")
    lines += [f"policy (Hugging Face format): {report['policy_dir']}",
              f"iterations' tables, report, metrics and logs: {report['output_dir']}"]
    return lines
