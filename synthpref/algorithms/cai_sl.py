"""Constitutional AI's SL phase (Bai et al. 2022, arXiv 2212.08073), a job of its own in `OUTPUT/sl`:

1. answer: the policy answers every red-team prompt (and a share of ordinary, helpful prompts);
2. critique and revise, `rounds` times: each red-team answer is critiqued against a principle drawn at
   random and rewritten (sampling/revisions.py); every round is kept with its principle;
3. tables: the SFT table (prompt, final revision; or every round's), the preferences table (final
   revision preferred to the original answer, which `synthpref dpo` takes as it is);
4. fine-tune the policy on the SFT table (DeepSpeed ranks on Ray) and save it in Hugging Face format.

Each round is written atomically when it is done and each SFT epoch is checkpointed, so a rerun resumes
at the first unfinished round or epoch.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from synthpref.config import CAISLConfig
from synthpref.data.prompts import load_prompts, round_seed
from synthpref.data.quarantine import write_quarantine
from synthpref.data.readers import Quarantined
from synthpref.data.schema import CRITIQUES, PREFERENCES, PROMPTS, SAMPLES, SFT, content_id, to_table
from synthpref.data.shards import atomic_write_bytes, atomic_write_table
from synthpref.errors import no_usable_rows
from synthpref.judging.constitution import load_constitution
from synthpref.models.loading import tokenizer_or_error
from synthpref.models.precision import describe as describe_dtypes
from synthpref.monitor.console import say
from synthpref.monitor.metrics import progress
from synthpref.runtime.job import JobRuntime
from synthpref.sampling.revisions import apply_round, critique_round, few_shot_turns
from synthpref.training.batches import sft_batches


def run_cai_sl(cfg: CAISLConfig) -> dict:
    """Answer, critique and revise for `sl.rounds` rounds, write the tables, fine-tune on the revisions."""
    constitution = load_constitution(cfg.constitution)
    with JobRuntime(cfg, "cai-sl", constitution_hash=constitution.hash) as job:
        tokenizer = tokenizer_or_error(cfg.policy.model, "policy.model")
        red, quarantined, _ = load_prompts(cfg.data, cfg.policy)
        helpful = helpful_prompts(cfg, {r.prompt_id for r in red}, quarantined)
        if not red:
            write_quarantine(job.out / "quarantine.jsonl", [q.to_json() for q in quarantined])
            raise no_usable_rows("usable red-team prompts", cfg.data.path, len(quarantined),
                                 f"listed in {job.out / 'quarantine.jsonl'}")
        t = cfg.sl.train
        job.start_ray(int(cfg.policy.engine.num_cpus * cfg.policy.pool.most + t.world_size * t.num_cpus + 1))
        answers, rounds = generate(job, cfg, constitution, red, helpful)
        tables = write_tables(job.out, cfg, red, helpful, answers, rounds)
        bad = [q.to_json() for q in quarantined] + tables["quarantine"]
        write_quarantine(job.out / "quarantine.jsonl", bad)
        if not tables["sft"]:
            raise no_usable_rows("prompts with a kept revision or a helpful answer to fine-tune on", cfg.data.path,
                                 len(bad), f"listed in {job.out / 'quarantine.jsonl'}")
        sft = fine_tune(job, cfg, tokenizer, tables["sft"], bad)
        write_quarantine(job.out / "quarantine.jsonl", bad)
        report = {"output_dir": str(job.out), "policy_dir": str(job.out / "policy"), "constitution": constitution.name,
                  "constitution_hash": constitution.hash, "red_team_prompts": len(red), "helpful_prompts": len(helpful),
                  "rounds": cfg.sl.rounds, **tables["counts"], "principles": tables["principles"],
                  "sft": sft, "quarantined": len(bad),
                  "outputs": {name: str(job.out / name) for name in ("prompts.parquet", "samples.parquet",
                              "critiques.parquet", "sft", "preferences", "policy", "quarantine.jsonl")}}
        atomic_write_bytes(job.out / "report.json", json.dumps(report, indent=2).encode())
        job.log({"event": "end", **tables["counts"], "sft_loss_first": sft["loss_first"], "sft_loss_last": sft["loss_last"]})
    return report


def helpful_prompts(cfg: CAISLConfig, red_ids: set, quarantined: list) -> list:
    """Ordinary prompts answered without critique: helpful_fraction of the SFT rows, as far as there are some."""
    if not cfg.sl.helpful.path or cfg.sl.helpful_fraction <= 0:
        return []
    want = round(len(red_ids) * cfg.sl.helpful_fraction / (1 - cfg.sl.helpful_fraction))
    rows, bad, _ = load_prompts(cfg.sl.helpful, cfg.policy)
    quarantined.extend(bad)
    kept = []
    for row in rows:
        if row.prompt_id in red_ids:            # the same conversation is already a red-team prompt
            quarantined.append(Quarantined(row.source, "duplicate", "this helpful prompt is also a red-team prompt"))
        else:
            kept.append(row)
    return kept[:want]


class Sampler:
    """The policy's engines, started on first use (a resumed run whose rounds are all done starts none)."""

    def __init__(self, job: JobRuntime, cfg: CAISLConfig):
        self.job, self.cfg, self.group = job, cfg, None

    def __call__(self, turns: list, kind: str) -> dict:
        """{turn id: (text, error)} for a batch of turns; kind "answer" | "critique" | "revision"."""
        from synthpref.sampling.group import SamplerGroup
        p = self.cfg.policy
        if self.group is None:
            self.group = self.job.own(SamplerGroup(p.model, p.engine, p.pool, p.chunk_size, self.job.log))
        max_tokens = self.cfg.sl.critique_max_tokens if kind == "critique" else p.max_tokens
        rows, errors = self.group.sample(turns, 1, max_tokens, self.cfg.sl.temperature, p.top_p, self.cfg.seed)
        out = {r["prompt_id"]: (r["text"], None) for r in rows}
        out.update({e["prompt_id"]: (None, e["error"]) for e in errors})
        self.samples = rows
        return out

    def close(self) -> None:
        """Give the engines' CPUs back before fine-tuning."""
        if self.group is not None:
            self.group.shutdown()


def generate(job: JobRuntime, cfg: CAISLConfig, constitution, red: list, helpful: list) -> tuple[list[dict], list[list]]:
    """Round 0 (the answers, as sample rows) and rounds 1..R (critique rows), each cut into shards of
    data.shard_size prompts: a shard a previous run finished is read back, any other is made and written
    atomically (OUTPUT/rounds/NN/part-KKKKK.parquet), so a kill loses at most the shard in flight."""
    sampler = Sampler(job, cfg)
    conversations = {r.prompt_id: r.messages for r in red + helpful}
    prefix = few_shot_turns(constitution, constitution.few_shot) if cfg.sl.few_shot else []
    size = cfg.data.shard_size
    job.metrics.rewind(-1, ("sl_round",))            # each round is recorded once, whichever run made it
    bar = progress((cfg.sl.rounds + 1) * -(-len(red) // size) + -(-len(helpful) // size),
                   "answer, critique and revise", "shard", cfg.progress)

    def shards(round_: int, items: list, make, schema) -> list[dict]:
        rows = []
        for k in range(0, len(items), size):
            path = job.out / "rounds" / f"{round_:02d}" / f"part-{k // size:05d}.parquet"
            if path.exists():
                rows += pq.read_table(path).to_pylist()
            else:
                job.state.claim()
                made = make(items[k:k + size])
                atomic_write_table(path, to_table(made, schema))
                rows += made
            bar.update(1)
        return rows

    def answer(chunk: list) -> list[dict]:
        sampler(chunk, "answer")
        return sampler.samples

    answers = shards(0, red + helpful, answer, SAMPLES)
    job.log({"event": "sl_round", "step": 0, "round": 0, "answers": len(answers),
             "failed": len(red) + len(helpful) - len(answers)})
    answer_of = {a["prompt_id"]: a["text"] for a in answers}
    latest = {r.prompt_id: answer_of[r.prompt_id] for r in red if r.prompt_id in answer_of}
    rounds = []
    for round_ in range(1, cfg.sl.rounds + 1):
        rows = shards(round_, list(latest), lambda ids: critique_round(
            sampler, constitution, prefix, conversations, {pid: latest[pid] for pid in ids}, round_, cfg.seed),
            CRITIQUES)
        job.log({"event": "sl_round", "step": round_, "round": round_, "prompts": len(rows),
                 "kept": sum(r["kept"] for r in rows), "empty": sum(r["reason"] == "empty_revision" for r in rows),
                 "failed": sum(bool(r["reason"]) and r["reason"] != "empty_revision" for r in rows)})
        latest = apply_round(latest, rows)
        rounds.append(rows)
    bar.close()
    sampler.close()
    job.log({"event": "sl_answers", "red_team_answered": len(latest), "unanswered": len(red) + len(helpful) - len(answer_of)})
    return answers, rounds


def write_tables(out: Path, cfg: CAISLConfig, red: list, helpful: list, answers: list[dict], rounds: list[list]) -> dict:
    """prompts, samples (the answers), critiques (every round), sft (TRL prompt/completion) and preferences
    (TRL prompt/chosen/rejected: final revision over the original answer), plus what was quarantined."""
    answer_of = {a["prompt_id"]: a for a in answers}
    prompt_rows = [{"prompt_id": r.prompt_id, "messages": r.messages, "source": r.source,
                    "meta": json.dumps({**r.meta, "kind": kind}, ensure_ascii=False, default=str)}
                   for kind, group in (("red_team", red), ("helpful", helpful)) for r in group]
    critiques = [row for rows in rounds for row in rows]
    rounds_of: dict[str, list[dict]] = {}
    for row in critiques:
        rounds_of.setdefault(row["prompt_id"], []).append(row)
    sft, prefs, bad = [], [], []
    policy = cfg.policy.model
    for r in helpful:
        if r.prompt_id in answer_of:
            a = answer_of[r.prompt_id]
            sft.append({"prompt_id": r.prompt_id, "sample_id": a["sample_id"], "prompt": r.messages,
                        "completion": [{"role": "assistant", "content": a["text"]}], "score": None, "iteration": 0,
                        "policy": policy})
    for r in red:
        if r.prompt_id not in answer_of:
            bad.append({"prompt_id": r.prompt_id, "source": r.source, "reason": "answer_failed",
                        "detail": "the policy gave no answer to this prompt (see logs)"})
            continue
        mine = sorted(rounds_of.get(r.prompt_id, []), key=lambda row: row["round"])
        kept = [row for row in mine if row["kept"]]
        original = answer_of[r.prompt_id]["text"]
        if not kept:
            bad.append({"prompt_id": r.prompt_id, "source": r.source, "reason": "no_revision",
                        "detail": "; ".join(f"round {row['round']}: {row['reason']}" for row in mine)})
            continue
        for row in (kept if cfg.sl.sft_every_round else kept[-1:]):
            sft.append({"prompt_id": r.prompt_id, "sample_id": row["revision_id"], "prompt": r.messages,
                        "completion": [{"role": "assistant", "content": row["revision"]}], "score": None,
                        "iteration": row["round"], "policy": policy})
        final = kept[-1]["revision"]
        if final.strip() == original.strip():
            bad.append({"prompt_id": r.prompt_id, "source": r.source, "reason": "identical_pair",
                        "detail": "the final revision equals the original answer: no preference"})
            continue
        prefs.append(revision_preference(r, original, final, mine))
    atomic_write_table(out / "prompts.parquet", to_table(prompt_rows, PROMPTS))
    atomic_write_table(out / "samples.parquet", to_table(answers, SAMPLES))
    atomic_write_table(out / "critiques.parquet", to_table(critiques, CRITIQUES))
    atomic_write_table(out / "sft" / "part-00000.parquet", to_table(sft, SFT))
    atomic_write_table(out / "preferences" / "part-00000.parquet", to_table(prefs, PREFERENCES))
    principles: dict[str, dict] = {}
    for row in critiques:
        p = principles.setdefault(row["principle"], {"drawn": 0, "kept": 0})
        p["drawn"] += 1
        p["kept"] += int(row["kept"])
    counts = {"answers": len(answers), "critique_rounds": len(critiques), "kept_revisions": sum(r["kept"] for r in critiques),
              "sft_rows": len(sft), "preferences": len(prefs)}
    return {"sft": sft, "quarantine": bad, "counts": counts, "principles": dict(sorted(principles.items()))}


def revision_preference(prompt, original: str, final: str, rounds: list[dict]) -> dict:
    """A preference row: the final revision chosen over the original answer (the open CAI recipe's pairs)."""
    provenance = {"source": "cai-sl", "principles": [r["principle"] for r in rounds],
                  "kept_rounds": [r["round"] for r in rounds if r["kept"]]}
    return {"prompt_id": prompt.prompt_id, "pair_id": content_id(prompt.prompt_id, "revision-pair"),
            "prompt": prompt.messages, "chosen": [{"role": "assistant", "content": final}],
            "rejected": [{"role": "assistant", "content": original}], "score_chosen": None, "score_rejected": None,
            "confidence": None, "n_votes": 0, "agreement": None, "position_consistent": None,
            "length_delta": len(final) - len(original), "provenance": json.dumps(provenance, ensure_ascii=False)}


def fine_tune(job: JobRuntime, cfg: CAISLConfig, tokenizer, rows: list[dict], bad: list[dict]) -> dict:
    """SFT of the policy on the table, epoch by epoch (checkpointed: a rerun resumes after the last finished
    one); saved to OUTPUT/policy in Hugging Face format."""
    from synthpref.training.group import TrainerGroup
    t = cfg.sl.train
    policy = job.own(TrainerGroup(cfg.policy.model, "policy", t, cfg.seed))
    done = job.state.finished
    if done:
        policy.load_checkpoint(job.out / "checkpoints", f"epoch{done}")
    say(f"precision: {describe_dtypes({'policy_trainer': policy.dtype})}")
    losses = list(job.state.get("losses", []))
    size = t.micro_batch * t.world_size
    sft_batches(tokenizer, rows, t.max_len, size, 0, bad)                 # too-long rows: quarantined on every run
    for epoch in range(done + 1, t.epochs + 1):
        batches = sft_batches(tokenizer, rows, t.max_len, size, round_seed(cfg.seed, "cai-sl", epoch), [])
        job.metrics.rewind((epoch - 1) * len(batches), ("sft",))          # a cut-short epoch is done again
        bar = progress(len(batches), f"SFT on revisions, epoch {epoch}/{t.epochs}", "step", cfg.progress)
        for n, batch in enumerate(batches, 1):
            stats = policy.train("train_sft", batch)
            job.metrics.scalars("sft", (epoch - 1) * len(batches) + n, {"epoch": epoch, **stats})
            losses.append(stats["loss"])
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
            bar.update(1)
        bar.close()
        policy.save_checkpoint(job.out / "checkpoints", f"epoch{epoch}")
        job.state.mark(epoch, losses=losses)
        shutil.rmtree(job.out / "checkpoints" / f"epoch{epoch - 1}", ignore_errors=True)   # keep the latest only
    policy.save_pretrained(job.out / "policy")
    return {"steps": len(losses), "epochs": t.epochs, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "dtype": policy.dtype}
