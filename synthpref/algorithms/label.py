"""Label: sample k completions per prompt, pair them, judge every pair in both orders, aggregate the
jury, write preferences.

The job is cut into deterministic shards of prompts; each finished shard is written atomically and
recorded in the manifest, so rerunning the same command resumes where it stopped without duplicates.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from synthpref.algorithms.label_io import (Shard, fingerprint, load_prompts, plan_shards, preference_row,
                                           preflight, prompt_row, summarise, write_quarantine)
from synthpref.config import LabelConfig
from synthpref.data.pairs import given_samples, group_by_prompt, make_pairs
from synthpref.data.schema import JUDGMENTS, PREFERENCES, PROMPTS, SAMPLES, to_table
from synthpref.data.shards import ShardStore, atomic_write_bytes
from synthpref.errors import no_usable_rows
from synthpref.judging.verdicts import FAILED, TIE
from synthpref.monitor.metrics import MetricsLog, progress


def cpus_needed(cfg: LabelConfig, needs_sampler: bool) -> int:
    """Logical CPUs a local Ray needs to host every replica at its maximum (0: no actor at all)."""
    def most(pool) -> int:
        return pool.max_replicas or pool.replicas
    total = most(cfg.policy.pool) * cfg.policy.engine.num_cpus if needs_sampler else 0
    total += sum(most(j.pool) * j.engine.num_cpus for j in cfg.judging.judges if j.type in ("vllm", "reward_model"))
    actors = needs_sampler or any(j.type != "function" for j in cfg.judging.judges)
    return max(2, int(total + 0.999)) if actors else 0


@contextmanager
def workers(cfg: LabelConfig, needs_sampler: bool, events=None):
    """Start Ray, the sampler pool (if any prompt needs sampling) and the jury's pools; always shut them down."""
    from synthpref.cluster.ray_setup import init_ray
    from synthpref.judging.jury import Jury
    from synthpref.sampling.group import SamplerGroup

    cpus = cpus_needed(cfg, needs_sampler)
    started_ray = init_ray(cfg.ray, min_cpus=cpus) if cpus else False
    sampler = jury = None
    try:
        if needs_sampler:
            sampler = SamplerGroup(cfg.policy.model, cfg.policy.engine, cfg.policy.pool, cfg.policy.chunk_size, events)
        jury = Jury(cfg.judging, events=events)
        yield sampler, jury
    finally:
        for part in (jury, sampler):
            if part is not None:
                part.shutdown()
        if started_ray:
            import ray
            ray.shutdown()


def sample_shard(shard: Shard, sampler, cfg: LabelConfig, on_done=None) -> tuple[dict[str, list[dict]], list[dict]]:
    """Every prompt's completions (ready ones, or k sampled), in prompt order, and sampling errors."""
    samples = [s for row in shard.rows if row.completions is not None
               for s in given_samples(row.prompt_id, row.completions)]
    to_sample = [r for r in shard.rows if r.completions is None]
    errors: list[dict] = []
    if to_sample:
        p = cfg.policy
        sampled, errors = sampler.sample(to_sample, p.samples_per_prompt, p.max_tokens, p.temperature, p.top_p,
                                         cfg.seed, on_done=on_done)
        source_of = {r.prompt_id: r.source for r in to_sample}
        for error in errors:
            error["source"] = source_of[error["prompt_id"]]
        samples.extend(sampled)
    return group_by_prompt(samples, [r.prompt_id for r in shard.rows]), errors


def judge_pairwise(samples_of: dict, conversations: dict, jury, cfg: LabelConfig, counts: dict,
                   on_done=None) -> tuple[list, list, dict]:
    """Pair each prompt's completions, judge every pair (both orders, every judge), keep the decided ones."""
    pairs, counts["identical_pairs"] = make_pairs(samples_of, cfg.judging.max_pairs_per_prompt)
    rows, decisions, stats = jury.judge_pairs(pairs, conversations, on_done)
    counts["pairs"] = len(pairs)
    judges, prefs = jury.describe(), []
    for pair in pairs:
        decision, votes = decisions[pair.pair_id]
        if decision.consistent is not None:
            counts["checked_pairs"] += 1
            counts["consistent_pairs"] += int(decision.consistent)
        if decision.winner == FAILED:
            counts["failed_pairs"] += 1
        elif decision.winner == TIE:
            counts["ties"] += 1
        else:
            prefs.append(preference_row(cfg, pair, decision, votes, conversations[pair.prompt_id], judges))
    return rows, prefs, stats


def judge_pointwise(samples_of: dict, conversations: dict, jury, cfg: LabelConfig, counts: dict,
                    on_done=None) -> tuple[list, list, dict]:
    """Score every completion with every judge; each prompt's best vs worst becomes a preference."""
    rows, choices, stats = jury.score_samples(samples_of, conversations, on_done)
    judges, prefs = jury.describe(), []
    for pid, samples in samples_of.items():
        if len(samples) < 2:
            continue
        counts["pairs"] += 1
        choice = choices[pid]
        if choice.outcome == FAILED:
            counts["failed_pairs"] += 1
        elif choice.outcome == TIE:
            counts["ties"] += 1
        else:
            by_id = {s["sample_id"]: s for s in samples}
            prefs.append(preference_row(cfg, None, choice, None, conversations[pid], judges,
                                        chosen=by_id[choice.best], rejected=by_id[choice.worst]))
    return rows, prefs, stats


def running_dtypes(sampler, jury) -> dict[str, str]:
    """The dtype each engine pool of the job runs, as its replicas report it."""
    dtypes = {"sampler": sampler.dtype()} if sampler is not None and sampler.dtype() else {}
    return {**dtypes, **jury.dtypes()}


def label_shard(shard: Shard, sampler, jury, cfg: LabelConfig, on_done=None) -> tuple[dict, dict]:
    """One shard: sample, judge, decide. Returns its four tables and its counts. `on_done(n)` is told
    of every n finished engine or judge requests (for a live progress bar)."""
    samples_of, sampling_errors = sample_shard(shard, sampler, cfg, on_done)
    samples = [s for group in samples_of.values() for s in group]
    conversations = {r.prompt_id: r.messages for r in shard.rows}
    counts = {"prompts": len(shard.rows), "samples": len(samples), "sampling_errors": sampling_errors,
              "unpaired_prompts": sum(1 for group in samples_of.values() if len(group) < 2),
              "pairs": 0, "identical_pairs": 0, "ties": 0, "failed_pairs": 0, "consistent_pairs": 0,
              "checked_pairs": 0}
    judge = judge_pairwise if cfg.judging.mode == "pairwise" else judge_pointwise
    rows, prefs, stats = judge(samples_of, conversations, jury, cfg, counts, on_done)
    counts.update({
        "preferences": len(prefs), "judgments": len(rows),
        "failed_verdicts": sum(1 for r in rows if r["verdict"] == FAILED),
        "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in rows),
        "completion_tokens": sum(r["completion_tokens"] or 0 for r in rows),
        "chosen_longer": sum(1 for p in prefs if p["length_delta"] > 0),
        "judges": stats["judges"], "judge_agreement": stats["agreement"],
        "dtypes": running_dtypes(sampler, jury),
    })
    tables = {"prompts": to_table([prompt_row(r) for r in shard.rows], PROMPTS),
              "samples": to_table(samples, SAMPLES), "judgments": to_table(rows, JUDGMENTS),
              "preferences": to_table(prefs, PREFERENCES)}
    return tables, counts


def label_shards(todo: list[Shard], cfg: LabelConfig, store: ShardStore, metrics: MetricsLog) -> None:
    """Run every unfinished shard on one set of workers, writing each as soon as it is done."""
    needs_sampler = any(r.completions is None for s in todo for r in s.rows)
    with workers(cfg, needs_sampler, metrics.log) as (sampler, jury):
        bar = progress(total=sum(len(s.rows) for s in todo), desc="labelling prompts", unit="prompt",
                       enabled=cfg.progress)
        metrics.log({"event": "dtypes", **running_dtypes(sampler, jury)})
        requests = progress(total=None, desc="engine requests", unit="req", enabled=cfg.progress, position=1)
        totals: dict = {}
        for shard in todo:
            start = time.perf_counter()
            tables, counts = label_shard(shard, sampler, jury, cfg, on_done=requests.update)
            store.write_shard(shard.shard_id, shard.index, tables, counts)
            seconds = time.perf_counter() - start
            bar.update(len(shard.rows))
            totals = {k: totals.get(k, 0) + counts[k] for k in ("preferences", "ties", "failed_pairs")}
            bar.set_postfix(totals)
            metrics.log({"event": "shard", "shard": shard.index, "seconds": round(seconds, 3),
                         "labels_per_s": round(counts["judgments"] / seconds, 3) if seconds else None,
                         **{k: v for k, v in counts.items() if k not in ("judges", "judge_agreement", "sampling_errors")}})
        requests.close()
        bar.close()
        pools = ([sampler.pool] if sampler else []) + list(jury.pools.values())
        metrics.log({"event": "pools", "pools": {p.name: p.stats for p in pools}})


def run_label(cfg: LabelConfig) -> dict:
    """The whole job; returns the summary that is also written to summary.json."""
    preflight(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, quarantined, n_read = load_prompts(cfg)
    shards = plan_shards(rows, cfg.data.shard_size)
    store = ShardStore(out, fingerprint(cfg))
    store.forget_other_shards({s.shard_id for s in shards})
    todo = [s for s in shards if not store.is_done(s.shard_id)]
    metrics = MetricsLog(out / "metrics.jsonl")
    metrics.log({"event": "start", "prompts": len(rows), "quarantined": len(quarantined),
                 "shards": len(shards), "shards_to_run": len(todo)})
    if todo:
        label_shards(todo, cfg, store, metrics)
    write_quarantine(out / "quarantine.jsonl", quarantined, store, shards)
    summary = summarise(cfg, store, shards, quarantined, n_read, skipped=len(shards) - len(todo))
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    metrics.log({"event": "end", **summary["counts"]})
    if not rows:
        raise no_usable_rows("usable prompts", cfg.data.path, len(quarantined), f"listed in {out / 'quarantine.jsonl'}")
    return summary
