"""`synthpref rft`: iterative rejection-sampling fine-tuning (best-of-k, then SFT on the best).

Each iteration samples k completions per prompt from the current policy on the vLLM samplers, scores
them with the jury, keeps each prompt's best (optionally only above a threshold), fine-tunes the policy
on the survivors and loads the new weights into the samplers: RAFT (Dong et al. 2023, "RAFT: Reward
rAnked FineTuning"), ReST's Improve step (Gulcehre et al. 2023) and Llama 2's rejection sampling
(Touvron et al. 2023). Every iteration ends with a checkpoint; a rerun resumes after the last one.
Each iteration's samples get a diversity panel; the collapse guard compares it with iteration 1's (the
starting policy's samples) and warns or ends the run when the watched measure has fallen too far.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from synthpref.algorithms import rft_steps as steps
from synthpref.config import RFTConfig
from synthpref.data.pairs import group_by_prompt
from synthpref.data.prompts import load_prompts, prompts_for_round, round_seed
from synthpref.data.quarantine import write_quarantine
from synthpref.data.schema import JUDGMENTS, PREFERENCES, SAMPLES, SFT, content_id, to_table
from synthpref.data.shards import atomic_write_bytes, atomic_write_table
from synthpref.errors import no_usable_rows
from synthpref.judging.jury import jury_cpus
from synthpref.judging.preferences import judge_pointwise
from synthpref.judging.preflight import preflight
from synthpref.models.loading import load_tokenizer, tokenizer_or_error
from synthpref.models.precision import describe as describe_dtypes
from synthpref.models.precision import lower_precision_note
from synthpref.monitor.console import say
from synthpref.monitor.collapse_guard import check_collapse
from synthpref.monitor.diversity import distinct_n, panel, prefixed, unprefixed, word_counts
from synthpref.monitor.metrics import progress
from synthpref.runtime.job import JobRuntime
from synthpref.training.weight_sender import weight_sender
from synthpref.training.batches import sft_batches


class RFTRun:
    """The workers of one run, each owned by the job: policy trainer, frozen reference, samplers, jury."""

    def __init__(self, job: JobRuntime):
        from synthpref.judging.jury import Jury
        from synthpref.sampling.group import SamplerGroup
        from synthpref.training.group import TrainerGroup

        cfg = self.cfg = job.cfg
        self.metrics = job.metrics
        self.tokenizer = load_tokenizer(cfg.policy.model)
        # the trainer ranks build their engines while the samplers start
        self.policy = job.own(TrainerGroup(cfg.policy.model, "policy", cfg.train, cfg.seed, wait=False))
        self.reference = (job.own(TrainerGroup(cfg.policy.model, "reference", cfg.train, cfg.seed, wait=False,
                                               world_size=1)) if cfg.kl_prompts else None)
        self.sampler = job.own(SamplerGroup(cfg.policy.model, cfg.policy.engine, cfg.policy.pool,
                                            cfg.policy.chunk_size, events=job.log))
        for group in (self.policy, self.reference):
            if group is not None:
                group.ready()
        self.jury = job.own(Jury(cfg.judging, events=job.log))
        self.push_weights = weight_sender(self.policy, self.sampler, cfg.policy.engine)

    def dtypes(self) -> dict[str, str]:
        """The dtype each part runs: trainer ranks (policy, reference), sampler engines, judges."""
        parts = {"policy_trainer": self.policy.dtype, "sampler": self.sampler.dtype()}
        if self.reference is not None:
            parts["reference_trainer"] = self.reference.dtype
        return {**parts, **self.jury.dtypes()}

    # -- the steps of one iteration --------------------------------------------------------------
    def sample(self, prompts, seed: int, k: int, on_done=None) -> tuple[dict, list]:
        p = self.cfg.policy
        rows, errors = self.sampler.sample(prompts, k, p.max_tokens, p.temperature, p.top_p, seed,
                                           policy_name=p.model, on_done=on_done)
        return group_by_prompt(rows, [r.prompt_id for r in prompts]), errors

    def fine_tune(self, rows: list[dict], iteration: int, quarantined: list[dict], step: int,
                  ids_of: dict | None = None) -> tuple[int, dict]:
        t = self.cfg.train
        size = t.micro_batch * t.world_size
        losses = []
        for epoch in range(1, t.epochs + 1):
            batches = sft_batches(self.tokenizer, rows, t.max_len, size, round_seed(self.cfg.seed, "rft", iteration) + epoch,
                                        quarantined if epoch == 1 else [], ids_of)
            bar = progress(len(batches), f"iteration {iteration} SFT epoch {epoch}", "step", self.cfg.progress)
            for batch in batches:
                step += 1
                stats = self.policy.train("train_sft", batch)
                losses.append(stats["loss"])
                self.metrics.scalars("sft", step, {"iteration": iteration, **stats})
                bar.set_postfix(loss=f"{stats['loss']:.4f}")
                bar.update(1)
            bar.close()
        return step, {"sft_steps": len(losses), "sft_loss_first": losses[0] if losses else None,
                      "sft_loss_last": losses[-1] if losses else None}

    def sync(self, version: int) -> dict:
        """Gather the policy's full weights and load them into every sampler engine as `version`."""
        stats = self.push_weights(version)                     # total_s: gather + transfer + engine load
        if set(stats["engine_versions"]) != {version}:
            raise RuntimeError(f"weight sync: engines report versions {stats['engine_versions']}, expected {version}")
        return stats

    def kl_to_start(self, prompts) -> dict:
        """KL(current policy || starting policy) on the fixed prompts, from one sample per prompt (the same
        seeds every iteration), and a digest of those samples (it changes when the served weights do)."""
        if self.reference is None or not prompts:
            return {"kl_to_start": None, "kl_sample_digest": None}
        samples_of, _ = self.sample(prompts, self.cfg.seed, 1)
        drawn = [samples_of[p.prompt_id][0] if samples_of.get(p.prompt_id) else {"text": ""} for p in prompts]
        texts = [s["text"] for s in drawn]
        batch = steps.kl_batch(self.tokenizer, prompts, drawn, self.cfg.train.max_len)
        kl = None if batch is None else steps.kl_estimate(self.policy.forward("forward_logprobs", batch),
                                                          self.reference.forward("forward_logprobs", batch))
        return {"kl_to_start": kl, "kl_sample_digest": content_id(texts)}


def run_rft(cfg: RFTConfig) -> dict:
    """Iterations of sample, score, keep the best, fine-tune, sync; a rerun resumes after the last one."""
    with JobRuntime(cfg, "rft") as job:
        preflight(cfg.judging)
        tokenizer_or_error(cfg.policy.model, "policy.model")
        prompts, quarantined, _ = load_prompts(cfg.data, cfg.policy)
        write_quarantine(job.out / "quarantine.jsonl", quarantined)
        if not prompts:
            raise no_usable_rows("usable prompts", cfg.data.path, len(quarantined),
                                 f"listed in {job.out / 'quarantine.jsonl'}")
        conversations = {p.prompt_id: p.messages for p in prompts}
        t = cfg.train
        job.start_ray(int(t.world_size * t.num_cpus + t.num_cpus + cfg.policy.engine.num_cpus * cfg.policy.pool.most
                          + jury_cpus(cfg.judging) + 1))
        run = RFTRun(job)
        history = list(job.state.get("history", []))
        version, step = job.state.finished, job.state.get("sft_step", 0)
        job.metrics.rewind(version, ("iteration",))          # an iteration cut short is done (and recorded) again
        job.metrics.rewind(step, ("sft",))
        if version:
            run.policy.load_checkpoint(job.out / "checkpoints", f"iter{version}")
            run.sync(version)
        dtypes = run.dtypes()
        say(f"precision: {describe_dtypes(dtypes)}")
        models = {"policy_trainer": cfg.policy.model, "sampler": cfg.policy.model, "reference_trainer": cfg.policy.model,
                  **{f"judge:{j.id}": j.model for j in cfg.judging.judges if j.model}}
        note = lower_precision_note(dtypes, models)
        if note:
            say(note)
        job.log({"event": "start", "dtypes": dtypes, "prompts": len(prompts), "quarantined": len(quarantined),
                 "trainer_nodes": run.policy.nodes,
                 "resumed_after_iteration": version})
        guard = job.state.get("guard") or new_guard_state(cfg)
        stopped = guard["action"] == "stop" and guard["fired_at"] is not None
        if stopped:
            say(f"this run was stopped at iteration {guard['fired_at']}: {guard['message']}; writing its report")
        reference = starting_vocabulary(job.out) if version else None
        for iteration in (range(version + 1, cfg.iterations + 1) if not stopped else ()):
            record, step = one_iteration(run, prompts, conversations, prompts[:cfg.kl_prompts], iteration, step, job.out,
                                         reference)
            reference = reference if reference is not None else starting_vocabulary(job.out)
            fired = guard_check(cfg, record, history[0] if history else record, guard)
            history.append(record)
            run.policy.save_checkpoint(job.out / "checkpoints", f"iter{iteration}")
            job.state.mark(iteration, sft_step=step, history=history, guard=guard)   # the first claims the folder
            if fired:
                stopped = cfg.guard.action == "stop"
                say(("stopping: " if stopped else "warning: ") + fired)
                job.log({"event": "collapse_guard", "iteration": iteration, "message": fired, "action": cfg.guard.action})
                if stopped:
                    break
        run.policy.save_pretrained(job.out / "policy")
        report = {"output_dir": str(job.out), "policy_dir": str(job.out / "policy"), "dtypes": dtypes,
                  "iterations": history, "quarantined": len(quarantined), "guard": guard}
        atomic_write_bytes(job.out / "report.json", json.dumps(report, indent=2).encode())
        job.log({"event": "end", "iterations": len(history)})
    return report


def starting_vocabulary(out: Path) -> Counter:
    """Word counts of iteration 1's samples (the starting policy's): rare_mass's reference, read back from
    their table so a resumed run has it too."""
    table = pq.read_table(out / "iterations" / f"{1:04d}" / "samples.parquet", columns=["text"])
    return word_counts(table.column("text").to_pylist())


def new_guard_state(cfg: RFTConfig) -> dict:
    """What the run state and report.json keep of the collapse guard: its rule, the first firing (iteration
    and message) and every iteration it fired at."""
    g = cfg.guard
    return {"metric": g.metric, "min_fraction": g.min_fraction, "action": g.action, "fired_at": None, "message": None,
            "fired": []}


def guard_check(cfg: RFTConfig, record: dict, first: dict, guard: dict) -> str | None:
    """The collapse guard on this iteration's panel against iteration 1's (`first`); notes a firing in the
    record and in `guard` (the run's guard state), and returns its message (None when it did not fire)."""
    if cfg.guard.action == "off":
        return None
    verdict = check_collapse(unprefixed(record), unprefixed(first), cfg.guard.metric, cfg.guard.min_fraction,
                             f"iteration {record['iteration']}")
    record["guard_fired"] = verdict.fired
    if not verdict.fired:
        return None
    guard["fired"] = [*guard["fired"], record["iteration"]]
    if guard["fired_at"] is None:
        guard["fired_at"], guard["message"] = record["iteration"], verdict.message
    return verdict.message


def one_iteration(run: RFTRun, prompts, conversations, kl_set, iteration: int, step: int, out: Path,
                  reference: Counter | None = None) -> tuple[dict, int]:
    """Sample, score, keep the best, fine-tune, sync; write the iteration's tables; return its metrics.
    `reference`: the starting policy's word counts for rare_mass (None: this iteration's own, iteration 1)."""
    cfg, started = run.cfg, time.perf_counter()
    batch = prompts_for_round(prompts, iteration, cfg.prompts_per_iteration)
    bar = progress(len(batch) * cfg.policy.samples_per_prompt * (1 + len(cfg.judging.judges)),
                   f"iteration {iteration}/{cfg.iterations} sample + score", "req", cfg.progress)
    samples_of, errors = run.sample(batch, round_seed(cfg.seed, "rft", iteration), cfg.policy.samples_per_prompt,
                                    on_done=bar.update)
    judged = judge_pointwise(samples_of, conversations, run.jury, on_done=bar.update)
    bar.close()
    judgments, prefs = judged.rows, judged.preferences
    scores = {sid: score for choice in judged.choices.values() for sid, score in choice.scores.items()}
    kept, kept_counts = steps.keep_best(samples_of, scores, cfg.keep_threshold)
    sft = steps.sft_rows(kept, conversations, iteration)
    bad: list[dict] = []
    step, sft_stats = run.fine_tune(sft, iteration, bad, step, {s["sample_id"]: s.get("token_ids") for s in kept})
    sync = run.sync(iteration)
    samples = [s for ss in samples_of.values() for s in ss]
    texts = [s["text"] for s in samples]
    diversity = panel(texts, reference if reference is not None else word_counts(texts))
    record = {"iteration": iteration, **steps.score_stats(samples_of, scores),
              "kept_fraction": kept_counts.kept / max(1, kept_counts.prompts), **kept_counts.__dict__,
              "samples": len(samples), "sampling_errors": len(errors), "sft_quarantined": len(bad),
              f"distinct_{cfg.distinct_n}": distinct_n(texts, cfg.distinct_n), **prefixed(diversity),
              "sampled_version": sorted({s["policy"] for s in samples}), **sft_stats,
              **run.kl_to_start(kl_set), "sync_s": sync["total_s"], "sync_bytes": sync["bytes"],
              "engine_load_s": sync["engine_load_s"], "weight_version": iteration,
              "iteration_s": time.perf_counter() - started}
    folder = out / "iterations" / f"{iteration:04d}"
    atomic_write_table(folder / "samples.parquet", to_table(samples, SAMPLES))
    atomic_write_table(folder / "judgments.parquet", to_table(judgments, JUDGMENTS))
    atomic_write_table(folder / "sft.parquet", to_table(sft, SFT))
    atomic_write_table(folder / "preferences.parquet", to_table(prefs, PREFERENCES))
    write_quarantine(folder / "quarantine.jsonl", errors + bad)    # empty when none (a redone iteration too)
    run.metrics.scalars("iteration", iteration, {k: v for k, v in record.items() if not isinstance(v, (list, str))})
    return record, step


def summary_lines(report: dict) -> list[str]:
    """What `synthpref rft` prints at the end: one line per iteration, the guarded diversity measure of each
    and whether the collapse guard fired, then where the policy is."""
    def num(x, fmt=".3f"):
        return "n/a" if x is None else format(x, fmt)
    lines = ["\niteration  mean score  best score  kept  SFT loss first -> last  KL to start"]
    for r in report["iterations"]:
        lines.append(f"{r['iteration']:>9}  {num(r['mean_score']):>10}  {num(r['best_score']):>10}  "
                     f"{r['kept']:>4}  {num(r['sft_loss_first']):>8} -> {num(r['sft_loss_last']):<8}  "
                     f"{num(r['kl_to_start'], '.4f'):>11}")
    guard = report.get("guard") or {}
    if guard:
        values = " -> ".join(num(r.get(f"div_{guard['metric']}")) for r in report["iterations"])
        lines.append(f"{guard['metric']} of each iteration's samples: {values}")
    if guard.get("fired_at") is not None:
        if guard["action"] == "stop":
            lines.append(f"collapse guard stopped the run at iteration {guard['fired_at']}: {guard['message']}")
        else:
            at = ", ".join(str(i) for i in guard["fired"])
            lines.append(f"collapse guard warned at iteration{'s' if len(guard['fired']) > 1 else ''} {at}; "
                         f"the first time: {guard['message']}")
    lines += [f"policy (Hugging Face format): {report['policy_dir']}",
              f"iterations' tables, report, metrics and logs: {report['output_dir']}"]
    return lines
