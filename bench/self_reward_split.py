"""Where a self-rewarding iteration's time goes: `synthpref self-reward` (run_self_reward, in this process)
for --iterations iterations on a Llama built on the spot (random weights), prompts from demo_prompts, the
policy judging its own candidates with text verdicts (--judge-samples of them averaged, 3 in the paper)
and, in a second run, with logprob verdicts (one next-token distribution per candidate).

Each iteration's record in report["iterations"] times its steps: sample_s (the policy samples --k candidates
per prompt), judge_s (it scores them on the same engines), train_s (reference log-probs of the pairs, then
DPO), sync_s (the new weights into the engines) and iteration_s (all of one_iteration: the rest is pair
selection, encoding and writing the tables). The table prints each in seconds and as a share of iteration_s.
Outside iteration_s, and not shown: each iteration's measurement (held-out samples, --eval-prompts of them)
and the checkpoint.

A random model seldom writes a well-formed "[[N]]" verdict: most text verdicts fail to parse, the candidates
with none parsing are unscored, and with no scored pair there is nothing to train on (train_s ~ 0). The
bench counts the failures from iterations/NNNN/judgments.parquet and says so; the logprob run always scores
(an expected total over the digits 0-5), so it shows the train and sync shares. Both trainer and engine run
fp32 (train.dtype and policy.engine.dtype pinned). Timings are printed, never asserted.

    .venv/bin/python bench/self_reward_split.py [--size tiny|25m] [--iterations 2] [--prompts 16] [--k 4]
        [--max-tokens 256] [--judge-max-tokens 256] [--judge-samples 3] [--verdicts text logprob] [--quick]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SIZES = {"tiny": {}, "25m": {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "intermediate_size": 1376}}
PARTS = ("sample_s", "judge_s", "train_s", "sync_s")


def run(verdict: str, model: str, work: Path, args) -> dict:
    """One self-reward run; its per-iteration times and verdict counts."""
    import pyarrow.parquet as pq

    from synthpref.algorithms.self_reward import run_self_reward
    from synthpref.config import from_dict, validate
    from synthpref.config.self_reward import SelfRewardConfig
    from synthpref.data.demo_prompts import demo_prompts
    data = work / "prompts.jsonl"
    rows = demo_prompts(args.prompts * args.iterations + args.eval_prompts)
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = work / f"self-reward-{verdict}"
    tree = {"output_dir": str(out), "seed": args.seed, "progress": False, "iterations": args.iterations,
            "prompts_per_iteration": args.prompts, "data": {"path": str(data)}, "guard": {"action": "off"},
            "self_judge": {"verdict": verdict, "samples": args.judge_samples, "temperature": 0.7,
                           "max_tokens": args.judge_max_tokens},
            "eval": {"prompts": args.eval_prompts, "samples_per_prompt": 1},
            "policy": {"model": model, "samples_per_prompt": args.k, "max_tokens": args.max_tokens, "temperature": 0.7,
                       "top_p": 0.9, "engine": {"max_model_len": 2048, "dtype": "float32"}},
            "train": {"dtype": "float32", "num_cpus": args.train_cpus, "micro_batch": args.batch_size, "max_len": 1024}}
    start = time.perf_counter()
    report = run_self_reward(validate(from_dict(SelfRewardConfig, tree)))
    wall = time.perf_counter() - start
    iterations = []
    for rec in report["iterations"]:
        if "iteration_s" not in rec:          # the last record only measures the final policy
            continue
        table = pq.read_table(out / "iterations" / f"{rec['iteration']:04d}" / "judgments.parquet").to_pylist()
        singles = [s for row in table for s in (json.loads(row["raw"]).get("scores", []) if verdict == "text"
                                                and args.judge_samples > 1 and row["raw"] else [])]
        iterations.append({**{k: rec[k] for k in ("iteration", *PARTS, "iteration_s", "pairs", "ties", "unscored",
                                                  "dpo_steps", "trained_pairs")},
                           "candidates": len(table), "failed": sum(row["verdict"] != "SCORE" for row in table),
                           "single_verdicts": len(singles), "single_failed": sum(s is None for s in singles)})
    shutil.rmtree(out, ignore_errors=True)
    return {"verdict": verdict, "judge_samples": args.judge_samples if verdict == "text" else 1,
            "dtypes": report["dtypes"], "wall_s": wall, "iterations": iterations}


def print_table(r: dict) -> None:
    from synthpref.models.precision import machine_line
    size = SIZES[r["size"]]
    print(f"\n{machine_line(r['machine'])}")
    print(f"dtype: float32 pinned (train.dtype, policy.engine.dtype; 'auto' would pick {r['machine']['auto_dtype']} "
          f"here); dtypes reported: {r['runs'][0]['dtypes'] if r['runs'] else '-'}")
    print(f"Llama hidden {size.get('hidden_size', 128)}, {size.get('num_layers', 2)} layers (random weights); "
          f"{r['prompts']} prompts x {r['k']} candidates of <= {r['max_tokens']} tokens per iteration; judge answers "
          f"<= {r['judge_max_tokens']} tokens; DPO micro-batch {r['batch_size']}; trainer {r['train_cpus']} CPUs\n")
    header = ("verdict", "iter", "sample s", "judge s", "train s", "sync s", "rest s", "iteration s",
              "sample / judge / train / sync share", "pairs (ties, unscored)", "failed verdicts")
    rows = []
    for run_ in r["runs"]:
        name = f"{run_['verdict']} x{run_['judge_samples']}"
        for it in run_["iterations"]:
            total = it["iteration_s"]
            rest = total - sum(it[k] for k in PARTS)
            failed = f"{it['failed']}/{it['candidates']} candidates"
            if it["single_verdicts"]:
                failed += f"; {it['single_failed']}/{it['single_verdicts']} single verdicts"
            rows.append((name, str(it["iteration"]), *(f"{it[k]:.2f}" for k in PARTS), f"{rest:.2f}", f"{total:.2f}",
                         " / ".join(f"{it[k] / total:.0%}" for k in PARTS),
                         f"{it['pairs']} ({it['ties']}, {it['unscored']})", failed))
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    for run_ in r["runs"]:
        its = run_["iterations"]
        failed, total = sum(i["failed"] for i in its), sum(i["candidates"] for i in its)
        print(f"\n{run_['verdict']} verdicts: {failed} of {total} candidates unscored (no verdict parsed); "
              f"{sum(i['dpo_steps'] for i in its)} DPO steps in all; job wall time {run_['wall_s']:.1f} s "
              f"(Ray start, engine and trainer builds, measurements and checkpoints included)")
        if run_["verdict"] == "text" and total and failed / total > 0.5:
            print("  most text verdicts failed to parse: a random model seldom ends with [[N]], so few or no pairs "
                  "are formed and train_s / sync_s say little; read the logprob run for those shares")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES), help="tiny: build_tiny_model's defaults "
                        "(hidden 128, 2 layers, 2 heads); 25m: STACK.md's size (hidden 512, 8 layers, 8 heads)")
    parser.add_argument("--iterations", type=int, default=2, help="self-rewarding iterations a run")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per iteration")
    parser.add_argument("--k", type=int, default=4, help="candidates sampled per prompt")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens per candidate (the job's default)")
    parser.add_argument("--judge-max-tokens", type=int, default=256, help="tokens per text verdict (the job's default)")
    parser.add_argument("--judge-samples", type=int, default=3, help="text verdicts per candidate, averaged")
    parser.add_argument("--verdicts", nargs="+", default=["text", "logprob"], choices=["text", "logprob"])
    parser.add_argument("--eval-prompts", type=int, default=2, help="held-out prompts each iteration measures")
    parser.add_argument("--batch-size", type=int, default=8, help="DPO pairs per optimizer step")
    parser.add_argument("--train-cpus", type=int, default=2, help="CPUs (threads) of the trainer rank")
    parser.add_argument("--seed", type=int, default=0, help="model and run seed")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 prompts x 2 candidates of 16 tokens, "
                                                             "judge answers of 16 tokens, 1 held-out prompt")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.k, args.max_tokens, args.judge_max_tokens, args.eval_prompts = 4, 2, 16, 16, 1

    from synthpref.models.precision import machine
    from synthpref.models.tiny import build_tiny_model
    work = Path(tempfile.mkdtemp(prefix="self_reward_split-"))
    try:
        model = str(build_tiny_model(work / "policy", seed=args.seed, **SIZES[args.size]))
        r: dict = {**{k: getattr(args, k) for k in ("size", "iterations", "prompts", "k", "max_tokens",
                                                    "judge_max_tokens", "judge_samples", "batch_size", "train_cpus")},
                   "machine": machine(), "runs": [run(v, model, work, args) for v in args.verdicts]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2, default=str))


if __name__ == "__main__":
    main()
