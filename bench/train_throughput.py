"""Training throughput, measured side by side in one run: synthpref's trainer groups vs TRL 1.16.

Same tiny Llama (STACK.md's 25M size by default: hidden 512, 8 layers, 8 heads), same hh-rlhf human pairs
(only those whose longer side fits --max-len: nobody truncates), pairs per step, epochs, lr (constant; AdamW,
weight decay 0, clip 1.0), fp32, 2 threads a side (TRL in this process; a synthpref group is a Ray actor
with 2 CPUs, hence 2 threads):
  1. Bradley-Terry reward training, pairs/s: TrainerGroup(role="reward").train("train_bt") vs TRL's
     RewardTrainer (one-logit sequence classifier made from the causal LM, conversational dataset).
  2. DPO, pairs/s: TrainerGroup(role="policy").train("train_dpo"), chosen and rejected as two rows (shared_prompt
     off: what the job did before it packed each pair's prompt once) vs TRL's DPOTrainer, which runs its
     reference model every step; synthpref's reference log-probs come from a frozen reference group in a
     pass before training, and that pass's time counts in synthpref's time.
  2b. DPO through the job, pairs/s: the real `synthpref dpo` job (run_dpo, in this process, joining the
     bench's Ray) on the same pairs, written as a prompt/chosen/rejected JSONL with one spare pair appended
     for the held-out share the job requires (eval_fraction 0.0001: the split holds out that last pair), vs
     the same TRL DPOTrainer run. Startup (tokenizer, data, building the groups, Ray) is left out as it is
     for TRL: the steps are timed from the job's own metrics.jsonl ("train" records, one per optimizer step,
     wall-clock "time"), from the end of the first step to the end of the last, leaving out the gaps
     between epochs (held-out evaluation and the epoch-end checkpoint, neither in TRL's timing). The job logs
     no event around its reference pass, so the bench wraps dpo_data.fill_reference to stamp the end of each
     reference batch (nothing else changes): the time from the end of the first batch (the warm-up) to the
     end of the last counts in synthpref's time. That pass also covers the one held-out pair, and overlaps
     the policy group's build (the job's design), both counted against synthpref.
  3. Weight sync as a share of one RFT training step: trainer.full_state_dict_ref() + SamplerGroup.sync_weights
     into one vLLM CPU engine vs one SFT phase (--sft-rows rows by train_sft) and vs one optimizer step.
synthpref batches pairs of similar length (length_sorted_batches: little padding) and scores chosen and
rejected in one forward pass; the job (2b) packs each pair as one row holding its prompt once (a 4D attention
mask keeps rejected from seeing chosen: training/pair_packing.py), row 2 as two rows; the order of those
batches is shuffled (seeded, anew each epoch) so training stays SGD-like. TRL draws random batches (its default sampler) and pads each to its longest row.
Timing: wall clock from the end of the first optimizer step (the warm-up) to the end of the last, both
sides; pairs/s counts the pairs of the timed steps. For DPO the reference forward of that first batch is
likewise the warm-up; the reference pass over the other batches is timed. Read the ratios: machines are noisy.

TRL's DPOTrainer runs with bf16=False, fp16=False, gradient_checkpointing=False (TRL 1.16 defaults both
bf16 and checkpointing on), optim adamw_torch, constant lr, no warm-up, its reference model in fp32; the
bench checks these on the built trainer and prints them.

    .venv/bin/python bench/train_throughput.py [--pairs 128] [--batch-size 8] [--json out.json] [--quick]
        [--skip bt dpo dpo-job] [--skip-sync]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-test-dev.jsonl"
THREADS = 2


def load_pairs(tok, args) -> tuple[list[tuple], tuple | None]:
    """The first pairs (prompt messages, chosen, rejected) whose conversations fit max_len, a multiple of
    the batch size so every step has the same number of pairs; and the next fitting pair (None if the data
    has no more), the `synthpref dpo` job's held-out pair."""
    from synthpref.data.readers import PromptRow, read_prompts
    from synthpref.models.loading import conversation_ids
    if not DATA.exists():
        sys.exit(f"error: {DATA} is missing: put the hh-rlhf harmless JSONL (chosen/rejected transcripts) there")
    pairs = []
    for row in read_prompts(str(DATA)):
        if not isinstance(row, PromptRow) or not row.completions:
            continue
        chosen, rejected = row.completions[:2]
        if all(len(conversation_ids(tok, row.messages + [{"role": "assistant", "content": c}])) <= args.max_len
               for c in (chosen, rejected)):
            pairs.append((row.messages, chosen, rejected))
        if len(pairs) == args.pairs + 1:
            break
    kept = min(len(pairs), args.pairs) // args.batch_size * args.batch_size
    if not kept:
        sys.exit(f"error: no pair of {DATA} fits --max-len {args.max_len}")
    return pairs[:kept], (pairs[kept] if len(pairs) > kept else None)


def epoch_batches(lengths: list[int], args, epochs: int) -> list[list[int]]:
    """Length-sorted batches, their order shuffled anew each epoch (seeded)."""
    from synthpref.training.batches import length_sorted_batches
    out = []
    for epoch in range(epochs):
        batches = length_sorted_batches(lengths, args.batch_size)
        random.Random(args.seed + epoch).shuffle(batches)
        out += batches
    return out


def pair_batch(rows_c, rows_r, pad_id: int, labels: bool, stats: dict | None = None) -> dict:
    """chosen_* / rejected_* tensors of one batch; counts real and padded tokens (one width for both)."""
    from synthpref.training.batches import collate
    out = {}
    for side, rows in (("chosen", rows_c), ("rejected", rows_r)):
        out.update({f"{side}_{k}": v for k, v in collate(rows, pad_id).items() if labels or k != "labels"})
    if stats is not None:
        width = max(out["chosen_input_ids"].shape[1], out["rejected_input_ids"].shape[1])
        stats["tokens"] += int(out["chosen_attention_mask"].sum() + out["rejected_attention_mask"].sum())
        stats["padded"] += 2 * len(rows_c) * width
    return out


def timed_loop(batches: list, step) -> tuple[float, int]:
    """Runs step(batch) over all batches; seconds from the end of the first step to the end of the last,
    and the pairs of the steps after the first."""
    t_first = None
    for batch in batches:
        step(batch)
        t_first = t_first or time.perf_counter()
    return time.perf_counter() - t_first, sum(len(b) for b in batches[1:])


def synthpref_bt(model: str, tok, pairs, args) -> dict:
    from synthpref.models.loading import conversation_ids
    from synthpref.training.batches import Encoded
    from synthpref.training.group import TrainerGroup
    enc = [[Encoded(ids, ids) for ids in (conversation_ids(tok, p + [{"role": "assistant", "content": c}])
                                           for c in (ch, rj))] for p, ch, rj in pairs]
    batches = epoch_batches([max(len(c.input_ids), len(r.input_ids)) for c, r in enc], args, args.epochs)
    group = TrainerGroup(model, role="reward", micro_batch=args.batch_size, lr=args.lr, seed=args.seed, num_cpus=THREADS)
    stats = {"tokens": 0, "padded": 0}
    try:
        secs, n = timed_loop(batches, lambda b: group.train(
            "train_bt", pair_batch([enc[i][0] for i in b], [enc[i][1] for i in b], tok.pad_token_id, False, stats)))
    finally:
        group.shutdown()
    return {"pairs_per_s": n / secs, "seconds": secs, "pairs_timed": n, **stats}


def synthpref_dpo(model: str, tok, pairs, args) -> dict:
    import torch

    from synthpref.training.batches import encode
    from synthpref.training.group import TrainerGroup
    enc = [(encode(tok, p, ch, args.max_len), encode(tok, p, rj, args.max_len)) for p, ch, rj in pairs]
    batches = epoch_batches([max(len(c.input_ids), len(r.input_ids)) for c, r in enc], args, args.epochs)
    stats = {"tokens": 0, "padded": 0}

    def tensors(b, counts=None):
        return pair_batch([enc[i][0] for i in b], [enc[i][1] for i in b], tok.pad_token_id, True, counts)
    ref_lp: dict[int, list[float]] = {}
    reference = TrainerGroup(model, role="reference", micro_batch=args.batch_size, seed=args.seed, num_cpus=THREADS)
    policy = TrainerGroup(model, role="policy", micro_batch=args.batch_size, lr=args.lr, seed=args.seed, num_cpus=THREADS)
    try:
        first, rest = batches[0], [b for b in batches[:len(batches) // args.epochs] if b is not batches[0]]
        ref_lp.update(zip(first, reference.forward("forward_pair_logprobs", tensors(first), False)))   # warm-up
        start = time.perf_counter()
        for b in rest:
            ref_lp.update(zip(b, reference.forward("forward_pair_logprobs", tensors(b), False)))
        ref_s = time.perf_counter() - start
        reference.shutdown()

        def step(b):
            batch = tensors(b, stats)
            batch["ref_chosen"] = torch.tensor([ref_lp[i][0] for i in b])
            batch["ref_rejected"] = torch.tensor([ref_lp[i][1] for i in b])
            policy.train("train_dpo", batch, {"beta": args.beta, "shared_prompt": False})
        train_s, n = timed_loop(batches, step)
    finally:
        policy.shutdown()
    return {"pairs_per_s": n / (ref_s + train_s), "seconds": ref_s + train_s, "ref_pass_s": ref_s,
            "train_s": train_s, "pairs_timed": n, **stats}


JOB_EVAL_FRACTION = 0.0001     # the job needs a held-out share > 0; this small, only the appended spare pair is held


def synthpref_dpo_job(model: str, pairs, spare, args) -> dict:
    """The `synthpref dpo` job in this process on the pairs (+ the spare, held out); timed from its
    metrics.jsonl and the reference batches' ends (see the docstring)."""
    import shutil

    from synthpref.algorithms.dpo import run_dpo
    from synthpref.config import DPOConfig, load_config
    from synthpref.training import dpo_data
    work = Path(tempfile.mkdtemp(prefix="dpo-job-"))
    data, out = work / "pairs.jsonl", work / "out"
    rows = pairs + ([spare] if spare else [])
    data.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in rows))
    overrides = [f"output_dir={out}", f"model={model}", f"data.path={data}", f"seed={args.seed}", "progress=false",
                 f"eval_fraction={JOB_EVAL_FRACTION}", f"dpo.beta={args.beta}", "dpo.loss=sigmoid", "save_every=0",
                 "keep_checkpoints=1", f"train.micro_batch={args.batch_size}", "train.world_size=1",
                 f"train.lr={args.lr}", "train.weight_decay=0.0", f"train.epochs={args.epochs}",
                 f"train.max_len={args.max_len}", "train.dtype=float32", f"train.num_cpus={THREADS}"]
    ref_ends: list[float] = []
    fill = dpo_data.fill_reference

    def stamped(group, todo, batch_size, pad, cache=None, on_done=None, *rest):
        def done(n):
            ref_ends.append(time.perf_counter())
            if on_done:
                on_done(n)
        return fill(group, todo, batch_size, pad, cache, done if group is not None else on_done, *rest)
    dpo_data.fill_reference = stamped
    start = time.perf_counter()
    try:
        report = run_dpo(load_config(DPOConfig, None, overrides))
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    finally:
        dpo_data.fill_reference = fill
        shutil.rmtree(work, ignore_errors=True)
    steps = [r for r in records if r.get("event") == "train"]
    timed = [(a, b) for a, b in zip(steps, steps[1:]) if a["epoch"] == b["epoch"]]    # not across an epoch end
    train_s = sum(b["time"] - a["time"] for a, b in timed)
    if report["train_pairs"] != len(pairs):          # quarantined pairs, or a bench pair held out: say so
        print(f"note: the job trained on {report['train_pairs']} of the {len(pairs)} pairs ({report['quarantined']} "
              f"quarantined, {report['held_out']['pairs']} held out); pairs/s counts {args.batch_size} a step",
              file=sys.stderr)
    n = len(timed) * args.batch_size
    ref_s = ref_ends[-1] - ref_ends[0] if len(ref_ends) > 1 else 0.0
    return {"pairs_per_s": n / (ref_s + train_s), "seconds": ref_s + train_s, "ref_pass_s": ref_s,
            "ref_batches_timed": max(0, len(ref_ends) - 1), "train_s": train_s, "steps_timed": len(timed),
            "pairs_timed": n, "train_pairs": report["train_pairs"], "held_out_pairs": report["held_out"]["pairs"],
            "quarantined": report["quarantined"], "dtypes": report["dtypes"], "job_wall_s": wall}


def trl_run(trainer, args) -> dict:
    """trainer.train() timed by a callback (see the docstring); real and padded tokens from the collator."""
    from transformers import TrainerCallback
    ends: list[float] = []
    stats = {"tokens": 0, "padded": 0}

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())
    collator = trainer.data_collator

    def counting(examples):
        out = collator(examples)
        stats["tokens"] += int(out["attention_mask"].sum())
        stats["padded"] += out["input_ids"].numel()
        return out
    trainer.data_collator = counting
    trainer.add_callback(Clock())
    trainer.train()
    secs, n = ends[-1] - ends[0], (len(ends) - 1) * args.batch_size
    return {"pairs_per_s": n / secs, "seconds": secs, "pairs_timed": n, "steps": len(ends), **stats}


def trl_train(kind: str, model: str, pairs, args) -> dict:
    """TRL's RewardTrainer ("bt": a one-logit classifier made from the causal LM) or DPOTrainer ("dpo": its
    reference model runs every step) on the pairs as a conversational dataset, same settings as synthpref."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(model)
    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, seed=args.seed,
                  num_train_epochs=args.epochs, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
                  weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", bf16=False, fp16=False,
                  gradient_checkpointing=False, max_length=args.max_len, report_to=[], save_strategy="no",
                  eval_strategy="no", logging_strategy="no", dataloader_num_workers=0, dataloader_pin_memory=False,
                  use_cpu=True, disable_tqdm=True)
    data = Dataset.from_list([{"prompt": p, "chosen": [{"role": "assistant", "content": c}],
                               "rejected": [{"role": "assistant", "content": r}]} for p, c, r in pairs])
    if kind == "bt":
        net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, dtype=torch.float32)
        net.config.pad_token_id = tok.pad_token_id
        trainer = RewardTrainer(model=net, args=RewardConfig(**common), train_dataset=data, processing_class=tok)
    else:
        net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        config = DPOConfig(**common, beta=args.beta, precompute_ref_log_probs=False)
        trainer = DPOTrainer(model=net, args=config, train_dataset=data, processing_class=tok)
    assert len(trainer.train_dataset) == len(pairs), "TRL dropped pairs"
    a = trainer.args
    settings = {"bf16": a.bf16, "fp16": a.fp16, "gradient_checkpointing": a.gradient_checkpointing,
                "optim": getattr(a.optim, "value", a.optim),
                "lr_scheduler": getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type),
                "warmup_steps": a.warmup_steps, "weight_decay": a.weight_decay, "max_grad_norm": a.max_grad_norm,
                "dtype": str(trainer.model.dtype).removeprefix("torch.")}
    if kind == "dpo":
        settings["reference_dtype"] = str(trainer.ref_model.dtype).removeprefix("torch.")
        settings["precompute_ref_log_probs"] = a.precompute_ref_log_probs
    assert not (a.bf16 or a.fp16 or a.gradient_checkpointing), settings
    assert settings["dtype"] == settings.get("reference_dtype", "float32") == "float32", settings
    assert (settings["lr_scheduler"], settings["optim"], a.warmup_steps) == ("constant", "adamw_torch", 0), settings
    return {**trl_run(trainer, args), "settings": settings}


def measure_sync(model: str, tok, pairs, args) -> dict:
    """SFT phase of --sft-rows rows (after a warm-up step; one step = the median step) vs gather + sync
    into one vLLM CPU engine (median of --sync-reps)."""
    from synthpref.config import EngineConfig, PoolConfig
    from synthpref.sampling.group import SamplerGroup
    from synthpref.training.batches import collate, encode
    from synthpref.training.group import TrainerGroup
    rows = [encode(tok, p, r, args.max_len) for p, c, rj in pairs for r in (c, rj)][:args.sft_rows]
    batches = epoch_batches([len(r.input_ids) for r in rows], args, 1)
    policy = TrainerGroup(model, role="policy", micro_batch=args.batch_size, lr=args.lr, seed=args.seed, num_cpus=THREADS)
    sampler, steps, totals, infos = None, [], [], []
    try:
        policy.train_sft(collate([rows[i] for i in batches[0]], tok.pad_token_id))          # warm-up
        for b in batches:
            start = time.perf_counter()
            policy.train_sft(collate([rows[i] for i in b], tok.pad_token_id))
            steps.append(time.perf_counter() - start)
        sampler = SamplerGroup(model, EngineConfig(max_model_len=1024), PoolConfig(replicas=1))
        for version in range(1, args.sync_reps + 1):
            start = time.perf_counter()
            infos.append(sampler.sync_weights(policy.full_state_dict_ref(), version))
            totals.append(time.perf_counter() - start)
    finally:
        if sampler:
            sampler.shutdown()
        policy.shutdown()
    return {"sft_rows": len(rows), "sft_steps": len(batches), "sft_phase_s": sum(steps), "sft_steps_s": steps,
            "sft_step_s": statistics.median(steps), "sync_s": statistics.median(totals), "sync_first_s": totals[0],
            "sync_load_s": statistics.median(i["sync_s"] for i in infos),
            "engine_load_s": statistics.median(i["engine_load_s"] for i in infos), "sync_bytes": infos[0]["bytes"]}


def print_table(r: dict) -> None:
    rows = []
    for key, name in (("bt", "Bradley-Terry reward training: synthpref vs TRL RewardTrainer"),
                      ("dpo", "DPO, TrainerGroup direct (reference pass counted) vs TRL DPOTrainer"),
                      ("dpo_job", "DPO, `synthpref dpo` job (reference pass counted) vs TRL DPOTrainer")):
        if key in r:
            s, t = r[key]["synthpref"], r[key]["trl"]
            rows.append((name, f"{s['pairs_per_s']:.2f} / {t['pairs_per_s']:.2f} pairs/s",
                         f"{s['pairs_per_s'] / t['pairs_per_s']:.2f}x"))
            if "tokens" in s:
                rows.append(("  padding share: synthpref / TRL", f"{1 - s['tokens'] / s['padded']:.0%} / "
                             f"{1 - t['tokens'] / t['padded']:.0%} of {s['tokens']} / {t['tokens']} real tokens", ""))
            if "ref_pass_s" in s:
                rows.append(("  synthpref reference pass / steps; TRL steps", f"{s['ref_pass_s']:.2f} / "
                             f"{s['train_s']:.2f} s; {t['seconds']:.2f} s", ""))
            if key == "dpo_job":
                rows.append(("  job wall time (Ray joined, not started) / timed part",
                             f"{s['job_wall_s']:.1f} / {s['seconds']:.1f} s; {s['train_pairs']} pairs trained, "
                             f"{s['held_out_pairs']} held out", ""))
                if "dpo" in r:
                    d = r["dpo"]["synthpref"]
                    rows.append(("  `synthpref dpo` job vs direct TrainerGroup", f"{s['pairs_per_s']:.2f} / "
                                 f"{d['pairs_per_s']:.2f} pairs/s", f"{s['pairs_per_s'] / d['pairs_per_s']:.2f}x"))
    if "sync" in r:
        y = r["sync"]
        rows.append((f"weight sync vs one RFT SFT phase ({y['sft_rows']} rows, {y['sft_steps']} steps)",
                     f"{y['sync_s']:.3f} / {y['sft_phase_s']:.3f} s", f"{y['sync_s'] / y['sft_phase_s']:.1%}"))
        rows.append(("weight sync vs one optimizer step", f"{y['sync_s']:.3f} / {y['sft_step_s']:.3f} s",
                     f"{y['sync_s'] / y['sft_step_s']:.2f}x"))
        rows.append(("  bytes synced; engine load / sync_weights / first sync", f"{y['sync_bytes'] / 2**20:.1f} MiB; "
                     f"{y['engine_load_s']:.3f} / {y['sync_load_s']:.3f} / {y['sync_first_s']:.3f} s", ""))
    from synthpref.models.precision import machine_line
    print(f"\n{machine_line(r['machine'])}; trainers pinned to fp32 on both sides")
    trl_dpo = next((r[k]["trl"]["settings"] for k in ("dpo", "dpo_job") if k in r), None)
    if trl_dpo:
        print("TRL DPOTrainer: " + ", ".join(f"{k} {v}" for k, v in trl_dpo.items()))
    if "dpo_job" in r:
        print(f"`synthpref dpo` job dtypes: {r['dpo_job']['synthpref']['dtypes']}")
    print(f"Llama hidden {r['hidden']}, {r['layers']} layers, {r['heads']} heads, fp32; {r['pairs']} pairs, "
          f"batch {r['batch_size']}, max_len {r['max_len']}, {r['epochs']} epoch(s), {THREADS} threads a side\n")
    header = ("measure", "figures (synthpref / other)", "ratio")
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(3)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=128, help="preference pairs (rounded down to a multiple of the batch size)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step (SFT: rows per step)")
    parser.add_argument("--max-len", type=int, default=512, help="max tokens of one side of a pair; longer pairs are skipped")
    parser.add_argument("--epochs", type=int, default=1, help="epochs over the pairs, both sides")
    parser.add_argument("--lr", type=float, default=1e-5, help="learning rate (constant), both sides")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta, both sides")
    parser.add_argument("--sft-rows", type=int, default=64, help="rows of the RFT SFT phase timed against a weight sync")
    parser.add_argument("--sync-reps", type=int, default=3, help="weight syncs timed (median reported)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden size of the tiny Llama")
    parser.add_argument("--layers", type=int, default=8, help="layers of the tiny Llama")
    parser.add_argument("--heads", type=int, default=8, help="attention heads (hidden / heads >= 32)")
    parser.add_argument("--seed", type=int, default=0, help="model, head and batch-order seed")
    parser.add_argument("--skip", nargs="*", default=[], choices=["bt", "dpo", "dpo-job"],
                        help="rows to leave out (dpo: the direct TrainerGroup DPO; dpo-job: the `synthpref dpo` job)")
    parser.add_argument("--skip-sync", action="store_true", help="leave out the weight-sync row (no vLLM engine)")
    parser.add_argument("--quick", action="store_true", help="smoke run: hidden 128, 2 layers, 2 heads, 16 pairs, "
                                                             "batch 4, 16 SFT rows")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.layers, args.heads, args.pairs, args.batch_size, args.sft_rows = 128, 2, 2, 16, 4, 16

    import ray
    import torch

    from synthpref.cluster.ray_setup import init_ray
    from synthpref.config import RayConfig
    from synthpref.models.loading import load_tokenizer
    from synthpref.models.precision import machine
    from synthpref.models.tiny import build_tiny_model
    torch.set_num_threads(THREADS)
    model = str(build_tiny_model(Path(tempfile.mkdtemp()) / "m", seed=args.seed, hidden_size=args.hidden,
                                 num_layers=args.layers, num_heads=args.heads, intermediate_size=
                                 1376 if args.hidden == 512 else None))
    tok = load_tokenizer(model)
    pairs, spare = load_pairs(tok, args)
    r: dict = {**{k: getattr(args, k) for k in ("hidden", "layers", "heads", "batch_size", "max_len", "epochs", "lr")},
               "pairs": len(pairs), "trl": __import__("trl").__version__, "machine": machine()}
    init_ray(RayConfig(num_cpus=4))
    try:
        if "bt" not in args.skip:
            r["bt"] = {"synthpref": synthpref_bt(model, tok, pairs, args), "trl": trl_train("bt", model, pairs, args)}
        if "dpo" not in args.skip:
            r["dpo"] = {"synthpref": synthpref_dpo(model, tok, pairs, args)}
        if "dpo-job" not in args.skip:
            r["dpo_job"] = {"synthpref": synthpref_dpo_job(model, pairs, spare, args)}
        if "dpo" not in args.skip or "dpo-job" not in args.skip:
            trl_dpo = trl_train("dpo", model, pairs, args)          # one TRL run, the reference of both DPO rows
            for key in ("dpo", "dpo_job"):
                if key in r:
                    r[key]["trl"] = trl_dpo
        if not args.skip_sync:
            r["sync"] = measure_sync(model, tok, pairs, args)
    finally:
        ray.shutdown()
    assert torch.get_num_threads() == THREADS, torch.get_num_threads()
    print_table(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
