"""`synthpref ppo`: reinforcement learning from AI feedback with a KL penalty to the starting policy.

Each step samples a group of completions per prompt from the current policy on the vLLM samplers and
rewards them with the jury: a reward model trained on synthetic labels (RLAIF, Lee et al. 2023), judges'
expected ratings read from their score tokens (direct RLAIF, same paper), functions, or a weighted mix.
While the judges work, the trainers compute the old, reference and critic values of the same tokens.
The reward is shaped by the KL to the reference (Ziegler et al. 2019; Ouyang et al. 2022); advantages
come from GAE with a critic (PPO, Schulman et al. 2017) or a group baseline (RLOO, Ahmadian et al.
2024; GRPO, Shao et al. 2024); `ppo_epochs` of clipped updates follow, and the new weights are loaded
into the samplers. Every `monitor.every` steps a held-out prompt set is scored by the training reward
and a gold jury (Gao et al. 2022), and its samples get a diversity panel that the collapse guard compares
with the starting policy's (Alemohammad et al. 2023). Checkpoints every `save_every` steps; a rerun
resumes after the last.
"""
from __future__ import annotations

import time
from collections import Counter

import torch

from synthpref.algorithms import ppo_steps as steps
from synthpref.algorithms.ppo_monitor import OverOptimisation
from synthpref.algorithms.ppo_parts import PPOParts, checkpoint, resume
from synthpref.algorithms.ppo_report import step_tables, write_report
from synthpref.config import ConfigError, PPOConfig
from synthpref.data.prompts import load_prompts, prompts_for_round
from synthpref.data.quarantine import write_quarantine
from synthpref.errors import no_usable_rows
from synthpref.judging.jury import jury_cpus
from synthpref.judging.preflight import preflight
from synthpref.judging.rewards import score_completions
from synthpref.models.loading import tokenizer_or_error
from synthpref.models.precision import lower_precision_note
from synthpref.monitor.collapse_guard import check_collapse
from synthpref.monitor.console import say
from synthpref.monitor.diversity import panel, prefixed, unprefixed, word_counts
from synthpref.monitor.metrics import progress
from synthpref.runtime.job import JobRuntime
from synthpref.training.advantages import explained_variance
from synthpref.training.batches import select_rows
from synthpref.training.kl import kl_controller

SUMMARY_KEYS = ("step", "reward_raw", "kl", "response_length", "gold", "eval_proxy", "trained_rows", "dropped",
                "first_ratio_max_dev", "engine_trainer_logprob_gap_max", "step_s")


def run_ppo(cfg: PPOConfig, sampler=None) -> dict:
    """Steps of sample, reward, score tokens, advantages, update, sync; `sampler`: an existing SamplerGroup
    to use (not owned: it gets its base weights back at the end)."""
    with JobRuntime(cfg, "ppo") as job:
        preflight(cfg.judging)
        if cfg.monitor.gold is not None:
            preflight(cfg.monitor.gold)
        tokenizer_or_error(cfg.policy.model, "policy.model")
        prompts, quarantined, _ = load_prompts(cfg.data, cfg.policy)
        write_quarantine(job.out / "quarantine.jsonl", quarantined)
        if cfg.monitor.every and len(prompts) <= cfg.monitor.prompts:
            raise ConfigError(f"monitor.prompts: {cfg.monitor.prompts} held-out prompts leave none of the "
                              f"{len(prompts)} usable prompts of {cfg.data.path} to train on; lower it or add prompts")
        held_out = prompts[-cfg.monitor.prompts:] if cfg.monitor.every else []
        train_prompts = prompts[:len(prompts) - len(held_out)]
        if not train_prompts:
            raise no_usable_rows("usable prompts", cfg.data.path, len(quarantined), f"listed in {job.out / 'quarantine.jsonl'}")
        t = cfg.train
        gold_cpus = jury_cpus(cfg.monitor.gold) if cfg.monitor.gold is not None else 0
        job.start_ray(int(3 * t.world_size * t.num_cpus + cfg.policy.engine.num_cpus * cfg.policy.pool.most
                          + jury_cpus(cfg.judging) + gold_cpus + 1))
        parts = PPOParts(job, sampler)
        conversations = {p.prompt_id: p.messages for p in prompts}
        done, state = resume(job, parts)
        kl_ctl = kl_controller(state.get("kl_coef", cfg.kl.coef), cfg.kl.target, cfg.kl.horizon)
        running = steps.RunningStats(**state.get("running", {}))
        monitor = OverOptimisation.restore(cfg.monitor.patience, state.get("monitor"))
        say(f"precision: {parts.describe_dtypes()}")
        note = lower_precision_note(parts.dtypes(), parts.models())
        if note:
            say(note)
        job.log({"event": "start", "dtypes": parts.dtypes(), "prompts": len(train_prompts), "held_out": len(held_out),
                 "quarantined": len(quarantined), "resumed_after_step": done})
        stopped, summaries = state.get("stopped"), list(state.get("summaries", []))
        if stopped:
            say(f"this run was stopped at step {done}: {stopped}; writing its report")
        diversity = job.state.get("diversity") if done else None
        if cfg.monitor.every and diversity is None and not stopped:
            diversity = starting_diversity(parts, held_out)
        job.state.claim()                             # the step tables are this run's first output
        bar = progress(cfg.steps, "PPO steps", "step", cfg.progress)
        bar.update(done)
        for step in (range(done + 1, cfg.steps + 1) if not stopped else ()):
            record = one_step(parts, prompts_for_round(train_prompts, step, cfg.prompts_per_step), conversations, step,
                              kl_ctl, running)
            if cfg.monitor.every and step % cfg.monitor.every == 0:
                stopped = evaluate(parts, held_out, conversations, step, monitor, record, diversity)
            summaries.append({k: record.get(k) for k in SUMMARY_KEYS})
            bar.set_postfix(reward=f"{record['reward_raw']:.3f}" if record["reward_raw"] is not None else "n/a",
                            kl=f"{record['kl']:.3f}")
            bar.update(1)
            if step % cfg.save_every == 0 or step == cfg.steps or stopped:
                checkpoint(job, parts, step, kl_coef=kl_ctl.value, running=running.__dict__, monitor=monitor.state(),
                           summaries=summaries, stopped=stopped, diversity=diversity)
            if stopped:
                break
        bar.close()
        report = write_report(job, parts, summaries, monitor, stopped, diversity)
        parts.give_back_shared_sampler()
    return report


def one_step(parts: PPOParts, batch_prompts, conversations, step: int, kl_ctl, running) -> dict:
    """One RL step; returns its metrics record (also logged)."""
    cfg, started, spans = parts.cfg, time.perf_counter(), {}
    mark = time.time()
    samples, errors = parts.sample(batch_prompts, step)
    spans["generate"] = (mark, time.time())
    dropped: dict[str, str] = {e["sample_id"]: f"sampling: {e['error']}" for e in errors}
    rollouts = steps.build_rollouts(parts.tokenizer, conversations, samples, cfg.train.max_len, dropped,
                                    need_engine_logprobs=cfg.old_logprobs == "engine" or bool(cfg.tis_cap))
    if rollouts is None:
        raise RuntimeError(f"step {step}: no completion could be trained on ({len(dropped)} dropped: "
                           f"{sorted(set(dropped.values()))[:3]})")
    fused = steps.old_from_update(cfg, len(rollouts.samples), kl_ctl.value)   # one update: its own log-probs are old
    waits = parts.start_token_forwards(rollouts.tensors, old=not fused)     # old log-probs, reference, values ...
    mark = time.time()
    rewards = score_completions(parts.jury, rollouts.samples, conversations)   # ... the judges score
    spans["reward"] = (mark, time.time())
    token = {}
    for name, wait in waits.items():
        rows, spans[name] = wait()
        token[name] = torch.stack(rows)
    for sid, reason in rewards.failed.items():
        dropped[sid] = f"reward: {reason}"
    rewarded = [i for i, s in enumerate(rollouts.samples) if s["sample_id"] in rewards.value]
    record = {"step": step, "samples": len(samples), "sampling_errors": len(errors),
              "reward_failed": len(rewards.failed)}
    if not rewarded:
        raise RuntimeError(f"step {step}: every completion lost its reward ({len(rewards.failed)} judge failures, "
                           f"e.g. {next(iter(rewards.failed.values()), '')})")
    sub = steps.Rollouts([rollouts.samples[i] for i in rewarded], select_rows(rollouts.tensors, rewarded))
    token = select_rows(token, rewarded)
    raw = [rewards.value[s["sample_id"]] for s in sub.samples]
    shaped = steps.shape_rewards(raw, sub.samples, cfg.reward, running)
    old = token.get("old_logprobs")
    old_logp = sub.tensors["engine_logp"] if cfg.old_logprobs == "engine" else old
    mask = sub.mask
    kl_tok = steps.kl_tokens(old, token.get("reference"), cfg.kl.estimator, mask)
    adv = steps.compute_advantages(cfg, sub, shaped, kl_tok, kl_ctl.value, token.get("values"))
    record["dropped_groups"] = adv.dropped_groups
    for i in sorted(set(range(len(sub.samples))) - set(adv.keep)):
        dropped[sub.samples[i]["sample_id"]] = "group_too_small: fewer than two completions of its prompt have a reward"
    record["dropped"] = len(dropped)
    if not adv.keep:
        raise RuntimeError(f"step {step}: no completion is left to train on ({len(dropped)} dropped, e.g. "
                           f"{next(iter(dropped.values()), '')})")
    update_rows = adv.keep
    tensors = {**sub.tensors, **({"old_logp": old_logp} if old_logp is not None else {}), "advantages": adv.advantages,
               **({"ref_logp": token["reference"]} if "reference" in token else {}),
               **({"returns": adv.returns, "old_values": token["values"]} if adv.returns is not None else {})}
    mark = time.time()
    update = parts.update(tensors, update_rows, step, kl_ctl.value, old_is_current=fused)
    spans["update"] = (mark, time.time())
    mark = time.time()
    sync = parts.sync(step)
    spans["sync"] = (mark, time.time())
    n_tokens = int(mask.sum())
    gap = ((old - sub.tensors["engine_logp"]).abs() * mask * sub.tensors["engine_logp_ok"].unsqueeze(-1)
           if old is not None else None)
    record.update({
        "reward_raw": sum(raw) / len(raw), "reward_shaped": sum(shaped) / len(shaped),
        "kl": (float(steps.kl_tokens(old, token["reference"], "k1", mask).sum(-1).mean()) if old is not None
               else update["kl_k1_seq"]), "kl_coef": kl_ctl.value, "response_length": float(mask.sum(-1).mean()),
        "eos_fraction": sum(s["finish_reason"] == "stop" for s in sub.samples) / len(sub.samples),
        "trained_rows": len(update_rows), "tokens": n_tokens,
        **({"engine_trainer_logprob_gap_max": float(gap.max()), "engine_trainer_logprob_gap_mean": float(gap.sum() / max(1, n_tokens))}
           if gap is not None else {}),
        **update, "sync_s": sync["total_s"],
        **({"explained_variance": explained_variance(token["values"], adv.returns, mask)} if adv.returns is not None else {}),
    })
    kl_ctl.update(record["kl"], len(sub.samples))
    record["step_s"] = time.perf_counter() - started
    generated = sum(s["n_tokens"] or 0 for s in samples)           # every sampled token, trained or not
    record["tokens_per_s"] = generated / max(1e-9, spans["generate"][1] - spans["generate"][0])
    for name, (a, b) in spans.items():
        record[f"time_{name}_s"] = b - a
    parts.metrics.scalars("ppo", step, {k: v for k, v in record.items() if isinstance(v, (int, float))})
    parts.metrics.log({"event": "ppo_phases", "step": step, "spans": spans})
    step_tables(parts.job.out, step, samples, rewards, raw, shaped, sub, dropped)
    return record


def starting_diversity(parts: PPOParts, held_out) -> dict:
    """The collapse guard's baseline, drawn once before step 1: the diversity panel of the starting policy's
    greedy samples of the held-out prompts, whose word counts are rare_mass's reference; with the guard's
    firings, it is kept in the run state."""
    samples, _ = parts.sample(held_out, 0, greedy=True)
    texts = [s["text"] for s in samples]
    reference = word_counts(texts)
    return {"baseline": panel(texts, reference), "reference": dict(reference), "fired_at": None, "message": None,
            "fired": []}


def evaluate(parts: PPOParts, held_out, conversations, step: int, monitor: OverOptimisation, record: dict,
             diversity: dict):
    """Greedy samples of the held-out prompts scored by the training reward and the gold jury, KL to the
    reference, length and the diversity panel; returns a stop message when the over-optimisation monitor
    or the collapse guard says to stop, else None."""
    cfg = parts.cfg
    samples, _ = parts.sample(held_out, step, greedy=True)
    dropped: dict = {}
    rollouts = steps.build_rollouts(parts.tokenizer, conversations, samples, cfg.train.max_len, dropped)
    if rollouts is None:
        return None
    proxy = score_completions(parts.jury, rollouts.samples, conversations).value
    gold = score_completions(parts.gold, rollouts.samples, conversations).value if parts.gold is not None else {}
    kl = parts.eval_kl(rollouts)
    mean = lambda d: sum(d.values()) / len(d) if d else None  # noqa: E731
    entry = {"proxy": mean(proxy), "gold": mean(gold), "kl": kl,
             "length": sum(s["n_tokens"] for s in rollouts.samples) / len(rollouts.samples)}
    verdict = monitor.record(step, **entry)
    now = prefixed(panel([s["text"] for s in samples], Counter(diversity["reference"])))
    monitor.history[-1].update(now)                        # report.json's evaluations carry the panel
    collapse = guard_check(cfg, now, diversity, step)
    record.update({"gold": entry["gold"], "eval_proxy": entry["proxy"]})
    parts.metrics.scalars("eval", step, {k: v for k, v in {**entry, **now, "diverging_streak": verdict["streak"],
                                                           "collapse_guard_fired": int(collapse is not None)}.items()
                                         if v is not None})
    if verdict["new_best"]:
        parts.save_best_policy()
        parts.job.log({"event": "best_gold", "step": step, "gold": entry["gold"]})
    if verdict["diverging"]:
        message = monitor.message()
        say(("stopping: " if cfg.monitor.action == "stop" else "warning: ") + message)
        parts.job.log({"event": "over_optimisation", "step": step, "message": message, "action": cfg.monitor.action})
        if cfg.monitor.action == "stop":
            return message
    return collapse if cfg.guard.action == "stop" else None


def guard_check(cfg: PPOConfig, now: dict, diversity: dict, step: int) -> str | None:
    """The collapse guard on this evaluation's panel (`div_` keys) against the starting policy's: says and
    notes a firing in `diversity` (the run state's), returns its message (None when it did not fire)."""
    if cfg.guard.action == "off":
        return None
    verdict = check_collapse(unprefixed(now), diversity["baseline"], cfg.guard.metric,
                             cfg.guard.min_fraction, f"step {step}")
    if not verdict.fired:
        return None
    diversity["fired"] = [*diversity["fired"], step]
    if diversity["fired_at"] is None:
        diversity["fired_at"], diversity["message"] = step, verdict.message
    say(("stopping: " if cfg.guard.action == "stop" else "warning: ") + verdict.message)
    return verdict.message
