"""Scale on paper: how to split 8, 64 or 512 GPUs between sampler engines and judge replicas for the label
job, what that labels per hour and costs per label, and the engine / trainer split of the online loops.

Nothing here is measured on these CPU machines; every input is a flag with its default's source:
  --policy-tok-s 12500   output tokens/s of one 8B policy engine (Llama 3.1 8B, BF16, 1x H100 80GB, vLLM,
                          FlashInfer): morphllm.com/vllm-benchmarks (2026), third-party
  --judge-decode-tok-s 460  output tokens/s of a 70B judge (Llama 3.1 70B FP8, 1x H100, batch 64): same page
  --judge-prefill-ratio 10  ASSUMED, not sourced: a judge engine reads prompt tokens this many times faster
                          than it writes output tokens (prefill is compute-bound and batched); measure yours
                          with bench/judge_throughput.py on the target GPU and pass it
  --judge-tp 1            GPUs per judge replica (70B FP8 fits one H100)
  --pool-efficiency 1.0   measured: a SamplerGroup replica delivers 1.00x (fp32) and 1.04x (bf16) of raw
                          vLLM's throughput (bench/sampler_throughput.py, docs/benchmarks.md); replicas on
                          their own GPUs are assumed independent (not measurable here)
  --gpu-hour-usd 2.5      an H100 hour on a cloud (assumption: list prices range 2-4 USD)
The label job's work per preference label (a pair judged in both orders by every judge): k completions
of --response-tokens each per prompt, k (k - 1) / 2 pairs per prompt; each judge call reads the prompt
and both responses (--prompt-tokens + 2 --response-tokens) and writes one token (logprob verdicts) or
--verdict-tokens (text verdicts).

    .venv/bin/python bench/sizing.py [--markdown] [--gpus 8 64 512] [flags above]
"""
from __future__ import annotations

import argparse
import math


def per_label(args) -> dict:
    """Sampled output tokens, judge calls, and judge prompt / output tokens per preference label."""
    pairs = args.k * (args.k - 1) / 2
    calls = 2 * args.judges                                   # both orders, every judge
    return {"sampled_tokens": args.k * args.response_tokens / pairs, "judge_calls": calls,
            "judge_prompt_tokens": calls * (args.prompt_tokens + 2 * args.response_tokens),
            "judge_output_tokens": calls * (1 if args.verdict == "logprob" else args.verdict_tokens)}


def judge_seconds_per_label(args, work: dict) -> float:
    """GPU-seconds of one judge replica's time per label (prefill at ratio x decode speed, then decode)."""
    prefill = args.judge_decode_tok_s * args.judge_prefill_ratio
    return work["judge_prompt_tokens"] / prefill + work["judge_output_tokens"] / args.judge_decode_tok_s


def label_split(gpus: int, args) -> dict:
    """The split of `gpus` into 1-GPU sampler engines and judge replicas of judge_tp GPUs with the most
    labels per hour (the slower side limits), and its cost per label."""
    work = per_label(args)
    best = None
    for replicas in range(1, gpus // args.judge_tp + 1):
        engines = gpus - replicas * args.judge_tp
        if engines < 1:
            break
        sample_rate = engines * args.policy_tok_s * args.pool_efficiency / work["sampled_tokens"]
        judge_rate = replicas * args.pool_efficiency / judge_seconds_per_label(args, work)
        rate = min(sample_rate, judge_rate) * 3600
        if best is None or rate > best["labels_per_hour"]:
            best = {"gpus": gpus, "engines": engines, "judge_replicas": replicas, "labels_per_hour": rate,
                    "bound": "sampling" if sample_rate < judge_rate else "judging"}
    best["usd_per_label"] = gpus * args.gpu_hour_usd / best["labels_per_hour"]
    return best


def loop_split(gpus: int) -> dict:
    """Online loops (rft, ppo, self-reward) on nodes of 8 GPUs: half of each node samples (and, in
    self-reward, judges) on 1-GPU engines, half trains as ZeRO-3 ranks, as in configs/train/*-8gpu.yaml."""
    engines = gpus // 2
    return {"gpus": gpus, "engines": engines, "trainer_ranks": gpus - engines, "nodes": math.ceil(gpus / 8)}


def table(args) -> str:
    lines = ["| GPUs | sampler engines | judge replicas (x TP) | trainer ranks (online loops) | labels / hour | "
             "USD / label | bound by |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for gpus in args.gpus:
        s, loop = label_split(gpus, args), loop_split(gpus)
        lines.append(f"| {gpus} | {s['engines']} | {s['judge_replicas']} (x {args.judge_tp}) | "
                     f"{loop['trainer_ranks']} (+ {loop['engines']} engines) | {s['labels_per_hour']:,.0f} | "
                     f"{s['usd_per_label']:.6f} | {s['bound']} |")
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, nargs="+", default=[8, 64, 512])
    p.add_argument("--policy-tok-s", type=float, default=12500.0)
    p.add_argument("--judge-decode-tok-s", type=float, default=460.0)
    p.add_argument("--judge-prefill-ratio", type=float, default=10.0)
    p.add_argument("--judge-tp", type=int, default=1)
    p.add_argument("--judges", type=int, default=1, help="judges in the jury")
    p.add_argument("--verdict", choices=["logprob", "text"], default="logprob")
    p.add_argument("--verdict-tokens", type=int, default=256, help="text verdicts: tokens per judge answer")
    p.add_argument("--k", type=int, default=4, help="completions per prompt")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--response-tokens", type=int, default=512)
    p.add_argument("--pool-efficiency", type=float, default=1.0)
    p.add_argument("--gpu-hour-usd", type=float, default=2.5)
    p.add_argument("--markdown", action="store_true", help="print only the table (what docs/cluster.md shows)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    if not args.markdown:
        work = per_label(args)
        print(f"per label: {work['sampled_tokens']:.0f} sampled tokens, {work['judge_calls']} judge calls reading "
              f"{work['judge_prompt_tokens']:.0f} and writing {work['judge_output_tokens']:.0f} tokens "
              f"({judge_seconds_per_label(args, work):.3f} judge-replica seconds)\n")
    print(table(args))


if __name__ == "__main__":
    main()
