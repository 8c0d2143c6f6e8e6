"""`synthpref dpo`: offline DPO (Rafailov et al. 2023, "Direct Preference Optimization") or IPO (Azar et
al. 2023) on a preference table.

The reference model's log-probabilities of every pair are computed once, by a frozen reference group,
before training (and kept in reference_logprobs.parquet, so a rerun does not recompute them); the policy
then trains on length-sorted batches in a seeded order. Each epoch ends with held-out preference accuracy
and reward margins; given human-labelled pairs, the report adds the policy's agreement with them. A rerun
resumes after the last checkpoint; the policy is saved in Hugging Face format (LoRA adapters merged).
"""
from __future__ import annotations

import json
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq

from synthpref.config import ConfigError, DataConfig, DPOConfig
from synthpref.data.preference_rows import held_out_split, read_pairs
from synthpref.data.quarantine import write_quarantine
from synthpref.data.shards import atomic_write_bytes, atomic_write_table
from synthpref.errors import no_usable_rows
from synthpref.models.loading import pad_id, tokenizer_or_error
from synthpref.models.precision import describe as describe_dtypes
from synthpref.models.precision import lower_precision_note
from synthpref.monitor.console import say
from synthpref.monitor.metrics import progress
from synthpref.runtime.job import JobRuntime
from synthpref.training import dpo_data

STEP_EVENTS = ("train", "eval")


def read_preferences(cfg: DPOConfig, tokenizer, data: DataConfig, quarantined: list[dict]) -> tuple[list, int]:
    """Encoded pairs of `data`, each weighted by its label confidence when dpo.confidence_weighting is on;
    returns them and how many pairs had no confidence (weight 1)."""
    rows, bad = read_pairs(data)
    quarantined += bad
    missing = 0

    def weight_of(row):
        nonlocal missing
        value = row.meta.get("confidence")
        if value is None:
            missing += 1
            return 1.0
        try:
            return None if isinstance(value, bool) else float(value)       # "0.8" from a JSON file is fine
        except (TypeError, ValueError):
            return None
    return dpo_data.encode_rows(tokenizer, rows, cfg.train.max_len, quarantined,
                                weight_of if cfg.dpo.confidence_weighting else None), missing


def reference_pass(job: JobRuntime, cfg: DPOConfig, pairs: list, pad: int) -> None:
    """Every pair's reference log-probs: read back from reference_logprobs.parquet where a run already wrote
    them, the rest computed by a frozen reference group that is stopped as soon as it is done."""
    from synthpref.training.group import TrainerGroup

    path = job.out / "reference_logprobs.parquet"
    cache = {}
    if path.exists():
        t = pq.read_table(path).to_pydict()
        cache = {k: (c, r) for k, c, r in zip(t["key"], t["chosen"], t["rejected"])}
    todo, started = sum(p.key not in cache for p in pairs), time.perf_counter()
    if todo:
        group = TrainerGroup(cfg.reference or cfg.model, "reference", cfg.train, cfg.seed)
        try:
            bar = progress(todo, "reference log-probs", "pair", cfg.progress)
            cache = dpo_data.fill_reference(group, pairs, cfg.train.micro_batch * cfg.train.world_size,
                                            pad, cache, bar.update, cfg.dpo.shared_prompt)
            bar.close()
        finally:
            group.shutdown()
        keys = sorted(cache)
        atomic_write_table(path, pa.table({"key": keys, "chosen": [cache[k][0] for k in keys],
                                           "rejected": [cache[k][1] for k in keys]}))
    else:
        dpo_data.fill_reference(None, pairs, 1, 0, cache)
    job.log({"event": "reference_pass", "computed": todo, "cached": len(pairs) - todo,
             "seconds": time.perf_counter() - started})


def checkpoint(job: JobRuntime, policy, step: int, keep: int) -> None:
    """Model and optimizer state (DeepSpeed's format), then the step is marked done; the oldest go last."""
    root = job.out / "checkpoints"
    policy.save_checkpoint(root, f"step{step}")
    job.state.mark(step)
    tags = sorted((p for p in root.glob("step*") if p.is_dir()), key=lambda p: int(p.name[4:]))
    for old in tags[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def run_dpo(cfg: DPOConfig) -> dict:
    """Encode and split the pairs, compute the reference log-probs once, then train step by step."""
    from synthpref.training.group import TrainerGroup

    with JobRuntime(cfg, "dpo") as job:
        tokenizer = tokenizer_or_error(cfg.model, "model")
        if cfg.reference and tokenizer_or_error(cfg.reference, "reference").get_vocab() != tokenizer.get_vocab():
            raise ConfigError(f"reference: {cfg.reference} has another vocabulary than model {cfg.model}; DPO "
                              f"compares the two models' log-probs of the same tokens")
        quarantined: list[dict] = []
        pairs, unweighted = read_preferences(cfg, tokenizer, cfg.data, quarantined)
        human, human_bad = [], []
        if cfg.human_eval.path:
            human, _ = read_preferences(cfg, tokenizer, DataConfig(path=cfg.human_eval.path,
                                                                  limit=cfg.human_eval.limit), human_bad)
        judged_by_humans = {p.prompt_key for p in human}        # measured on: never trained on
        quarantined += [{"source": p.source, "reason": "held_out_overlap",
                         "detail": "its conversation is one of human_eval's pairs"} for p in pairs
                        if p.prompt_key in judged_by_humans]
        pairs = [p for p in pairs if p.prompt_key not in judged_by_humans]
        train, test = held_out_split(pairs, cfg.eval_fraction, cfg.seed)
        write_quarantine(job.out / "quarantine.jsonl", quarantined)
        if not train:
            held = f", all {len(pairs)} held out" if pairs else ""
            raise no_usable_rows("preference pairs to train on", f"{cfg.data.path}{held}", len(quarantined),
                                 f"listed in {job.out / 'quarantine.jsonl'}")
        t, d = cfg.train, cfg.dpo
        size, pad = t.micro_batch * t.world_size, pad_id(tokenizer)
        job.start_ray(int(2 * t.world_size * max(1, t.num_cpus)))
        job.state.claim()
        # on CPU the policy builds during the reference pass; GPU ranks wait for the reference group's GPUs
        policy = job.own(TrainerGroup(cfg.model, "policy", t, cfg.seed, wait=False)) if not t.num_gpus else None
        reference_pass(job, cfg, train + test + human, pad)
        policy = (policy or job.own(TrainerGroup(cfg.model, "policy", t, cfg.seed))).ready()
        done = job.state.finished
        if done:
            policy.load_checkpoint(job.out / "checkpoints", f"step{done}")
        job.metrics.rewind(done, STEP_EVENTS)
        dtypes = {"policy_trainer": policy.dtype}
        say(f"precision: {describe_dtypes(dtypes)}")
        note = lower_precision_note(dtypes, {"policy_trainer": cfg.model})
        if note:
            say(note)
        job.log({"event": "start", "dtypes": dtypes, "pairs": len(pairs), "train": len(train), "held_out": len(test),
                 "quarantined": len(quarantined), "unweighted": unweighted if d.confidence_weighting else None,
                 "resumed_after_step": done})
        per_epoch = len(dpo_data.batches(train, size, 0))
        total = per_epoch * t.epochs
        bar = progress(total, "DPO" if d.loss == "sigmoid" else "IPO", "step", cfg.progress)
        bar.update(done)
        order: dict[int, list] = {}
        for step in range(done + 1, total + 1):
            epoch, k = (step - 1) // per_epoch + 1, (step - 1) % per_epoch
            order.setdefault(epoch, dpo_data.batches(train, size, cfg.seed + epoch))
            batch = dpo_data.pair_tensors(train, order[epoch][k], pad, d.loss, d.confidence_weighting)
            stats = policy.train("train_dpo", batch, d.settings())
            job.metrics.scalars("train", step, {"epoch": epoch, **stats})
            bar.set_postfix(loss=f"{stats['loss']:.4f}", acc=f"{stats['accuracy']:.2f}")
            bar.update(1)
            if k == per_epoch - 1:
                held = dpo_data.preference_accuracy(policy, test, size, pad, d.beta, d.loss, d.shared_prompt)
                job.metrics.scalars("eval", step, {"epoch": epoch, "held_out_accuracy": held["accuracy"],
                                                   "held_out_margin": held["margin"]})
            if k == per_epoch - 1 or (cfg.save_every and step % cfg.save_every == 0):
                checkpoint(job, policy, step, cfg.keep_checkpoints)
        bar.close()
        report = {"output_dir": str(job.out), "policy_dir": str(job.out / "policy"), "dtypes": dtypes,
                  "loss": d.loss, "beta": d.beta, "pairs": len(pairs), "train_pairs": len(train), "steps": total,
                  "quarantined": len(quarantined), "unweighted_pairs": unweighted if d.confidence_weighting else None,
                  "lora": bool(t.lora_r),
                  "held_out": dpo_data.preference_accuracy(policy, test, size, pad, d.beta, d.loss, d.shared_prompt)}
        if cfg.human_eval.path:
            agreement = dpo_data.preference_accuracy(policy, human, size, pad, d.beta, d.loss, d.shared_prompt)
            report["human_agreement"] = {**agreement, "quarantined": len(human_bad), "path": cfg.human_eval.path}
        policy.save_pretrained(job.out / "policy")
        atomic_write_bytes(job.out / "report.json", json.dumps(report, indent=2).encode())
        job.log({"event": "end", **{k: v for k, v in report.items() if k != "output_dir"}})
    return report


def summary_lines(report: dict) -> list[str]:
    """What `synthpref dpo` prints at the end."""
    def num(x):
        return "n/a" if x is None else f"{x:.3f}"
    held = report["held_out"]
    lines = [f"\n{report['loss']} on {report['train_pairs']} pairs for {report['steps']} steps "
             f"({report['quarantined']} quarantined): held-out preference accuracy {num(held['accuracy'])}, "
             f"mean reward margin {num(held['margin'])} on {held['pairs']} pairs (chance 0.5)"]
    human = report.get("human_agreement")
    if human and human["accuracy"] is not None:
        lines.append(f"agreement with human labels: {human['accuracy']:.3f} on {human['pairs']} pairs")
    lines += [f"policy (Hugging Face format): {report['policy_dir']}",
              f"report, metrics and logs: {report['output_dir']}"]
    return lines
