"""`synthpref label`: sample k completions per prompt, pair them, judge every pair in both orders with a
jury, aggregate, and write preferences (RLAIF, Lee et al. 2023; juries, Verga et al. 2024).

The prompts are cut into deterministic shards; each finished shard is written atomically and recorded
in the manifest, so rerunning the same command resumes where it stopped without duplicates.
"""
from __future__ import annotations

import json
import time

from synthpref.config import LabelConfig
from synthpref.data.pairs import given_samples, group_by_prompt
from synthpref.data.prompts import load_prompts
from synthpref.data.quarantine import sampling_failures, write_quarantine
from synthpref.data.schema import JUDGMENTS, PREFERENCES, PROMPTS, SAMPLES, to_table
from synthpref.data.shards import Shard, ShardStore, atomic_write_bytes, plan_shards
from synthpref.errors import no_usable_rows
from synthpref.judging.jury import jury_cpus, needs_actors
from synthpref.judging.preferences import judge
from synthpref.judging.preflight import TEMPLATE_JUDGES, preflight
from synthpref.judging.verdicts import FAILED
from synthpref.models.precision import lower_precision_note
from synthpref.monitor.console import say
from synthpref.monitor import ray_metrics
from synthpref.monitor.metrics import progress
from synthpref.monitor.summary import ShardCounts, sampling_errors, summarise
from synthpref.runtime.job import JobRuntime


def run_label(cfg: LabelConfig) -> dict:
    """The whole job; returns the summary that is also written to summary.json."""
    with JobRuntime(cfg, "label", tensorboard=False, template_hashes=template_hashes(cfg)) as job:
        preflight(cfg.judging)
        rows, quarantined, n_read = load_prompts(cfg.data, cfg.policy)
        shards = plan_shards(rows, cfg.data.shard_size)
        store = ShardStore(job.out)
        store.forget_other_shards({s.shard_id for s in shards})
        todo = [s for s in shards if not store.is_done(s.shard_id)]
        job.log({"event": "start", "prompts": len(rows), "quarantined": len(quarantined),
                 "shards": len(shards), "shards_to_run": len(todo)})
        if todo:
            label_shards(job, todo, store)
        write_quarantine(job.out / "quarantine.jsonl", quarantined + sampling_failures(sampling_errors(store, shards)))
        summary = summarise(cfg, store, shards, quarantined, n_read, skipped=len(shards) - len(todo))
        atomic_write_bytes(job.out / "summary.json", json.dumps(summary, indent=2).encode())
        job.log({"event": "end", **summary["counts"]})
    if not rows:
        raise no_usable_rows("usable prompts", cfg.data.path, len(quarantined), f"listed in {job.out / 'quarantine.jsonl'}")
    return summary


def template_hashes(cfg: LabelConfig) -> list[str]:
    """A template or a constitution given as a YAML file may change under the same name: its content hash
    is part of the run."""
    from synthpref.judging.constitution import load_constitution
    from synthpref.judging.templates import get_template
    constitutional = bool(cfg.judging.constitution)
    try:
        hashes = [get_template(j.template, cfg.judging.mode, j.verdict, constitutional).hash
                  for j in cfg.judging.judges if j.type in TEMPLATE_JUDGES]
        return hashes + ([f"constitution:{load_constitution(cfg.judging.constitution).hash}"] if constitutional else [])
    except Exception:           # an unknown template or constitution: preflight names the key
        return []


def label_shards(job: JobRuntime, todo: list[Shard], store: ShardStore) -> None:
    """Run every unfinished shard on one set of workers, writing each as soon as it is done."""
    cfg = job.cfg
    needs_sampler = any(r.completions is None for s in todo for r in s.rows)
    sampler, jury = start_workers(job, needs_sampler)
    dtypes = running_dtypes(sampler, jury)
    job.log({"event": "dtypes", **dtypes})
    note = lower_precision_note(dtypes, {"sampler": cfg.policy.model,
                                         **{f"judge:{j.id}": j.model for j in cfg.judging.judges if j.model}})
    if note:
        say(note)
    bar = progress(total=sum(len(s.rows) for s in todo), desc="labelling prompts", unit="prompt", enabled=cfg.progress)
    requests = progress(total=None, desc="engine requests", unit="req", enabled=cfg.progress, position=1)
    totals: dict = {}
    judge_totals: dict = {}
    for shard in todo:
        start = time.perf_counter()
        tables, counts, extra = label_shard(shard, sampler, jury, cfg, on_done=requests.update)
        job.state.claim()                               # the folder holds this run from its first shard on
        store.write_shard(shard.shard_id, shard.index, tables, {**counts.__dict__, **extra})
        seconds = time.perf_counter() - start
        bar.update(len(shard.rows))
        totals = {k: totals.get(k, 0) + getattr(counts, k) for k in ("preferences", "ties", "failed_pairs")}
        bar.set_postfix(totals)
        job.log({"event": "shard", "shard": shard.index, "seconds": round(seconds, 3),
                 "labels_per_s": round(counts.judgments / seconds, 3) if seconds else None,
                 **counts.__dict__, "dtypes": extra["dtypes"]})
        export_judge_totals(cfg, judge_totals, extra["judges"])
    requests.close()
    bar.close()
    pools = ([sampler.pool] if sampler else []) + list(jury.pools.values())
    job.log({"event": "pools", "pools": {p.name: p.stats for p in pools}})


def export_judge_totals(cfg: LabelConfig, totals: dict, shard_judges: dict) -> None:
    """Each judge's running totals (votes, failures, flips, tokens, retries and, for priced judges, USD) as
    live metrics of its pool (`judge:ID`), for an operator's dashboard."""
    prices = {j.id: j for j in cfg.judging.judges}
    for jid, stats in shard_judges.items():
        total = totals.setdefault(jid, {})
        for key in ("votes", "failed", "flips", "prompt_tokens", "completion_tokens", "retries"):
            total[key] = total.get(key, 0) + stats.get(key, 0)
        jc = prices.get(jid)
        if jc is not None and (jc.usd_per_1m_prompt_tokens or jc.usd_per_1m_completion_tokens):
            total["usd"] = (total["prompt_tokens"] * (jc.usd_per_1m_prompt_tokens or 0)
                            + total["completion_tokens"] * (jc.usd_per_1m_completion_tokens or 0)) / 1e6
        ray_metrics.export("judge", total, pool=f"judge:{jid}")


def start_workers(job: JobRuntime, needs_sampler: bool):
    """Ray (if any judge or the sampler needs actors), the sampler pool, the jury's pools."""
    from synthpref.judging.jury import Jury
    from synthpref.sampling.group import SamplerGroup

    cfg = job.cfg
    cpus = cpus_needed(cfg, needs_sampler)
    if cpus:
        job.start_ray(cpus)
    sampler = job.own(SamplerGroup(cfg.policy.model, cfg.policy.engine, cfg.policy.pool, cfg.policy.chunk_size,
                                   job.log)) if needs_sampler else None
    return sampler, job.own(Jury(cfg.judging, events=job.log))


def cpus_needed(cfg: LabelConfig, needs_sampler: bool) -> int:
    """Logical CPUs a local Ray needs to host every replica at its maximum (0: no actor at all)."""
    total = cfg.policy.pool.most * cfg.policy.engine.num_cpus if needs_sampler else 0
    total += jury_cpus(cfg.judging)
    actors = needs_sampler or needs_actors(cfg.judging)
    return max(2, int(total + 0.999)) if actors else 0


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


def running_dtypes(sampler, jury) -> dict[str, str]:
    """The dtype each engine pool of the job runs, as its replicas report it."""
    dtypes = {"sampler": sampler.dtype()} if sampler is not None and sampler.dtype() else {}
    return {**dtypes, **jury.dtypes()}


def label_shard(shard: Shard, sampler, jury, cfg: LabelConfig, on_done=None) -> tuple[dict, ShardCounts, dict]:
    """One shard: sample, judge, decide. Returns its four tables, its counts and its other records.
    `on_done(n)` is told of every n finished engine or judge requests (for a live progress bar)."""
    samples_of, errors = sample_shard(shard, sampler, cfg, on_done)
    samples = [s for group in samples_of.values() for s in group]
    judged = judge(samples_of, {r.prompt_id: r.messages for r in shard.rows}, jury, on_done)
    rows, prefs = judged.rows, judged.preferences
    counts = ShardCounts(
        **judged.counts.__dict__, prompts=len(shard.rows), samples=len(samples),
        unpaired_prompts=sum(1 for group in samples_of.values() if len(group) < 2), judgments=len(rows),
        failed_verdicts=sum(1 for r in rows if r["verdict"] == FAILED),
        prompt_tokens=sum(r["prompt_tokens"] or 0 for r in rows),
        completion_tokens=sum(r["completion_tokens"] or 0 for r in rows),
        chosen_longer=sum(1 for p in prefs if p["length_delta"] > 0))
    extra = {"sampling_errors": errors, "judges": judged.stats["judges"], "judge_agreement": judged.stats["agreement"],
             "principles": judged.stats.get("principles", {}),
             "dtypes": running_dtypes(sampler, jury)}
    tables = {"prompts": to_table([prompt_row(r) for r in shard.rows], PROMPTS),
              "samples": to_table(samples, SAMPLES), "judgments": to_table(rows, JUDGMENTS),
              "preferences": to_table(prefs, PREFERENCES)}
    return tables, counts, extra


def prompt_row(row) -> dict:
    return {"prompt_id": row.prompt_id, "messages": row.messages, "source": row.source,
            "meta": json.dumps(row.meta, ensure_ascii=False, default=str)}
