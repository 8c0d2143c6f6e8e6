"""End-to-end RL step throughput, measured side by side in one run: synthpref's `run_ppo` vs TRL 1.16.

  1. RLOO: synthpref (estimator rloo, KL k1 summed per sequence and taken off the reward) vs TRL's RLOOTrainer
     (which does the same with its beta; its clipped ratio is per sequence, synthpref's per token: same work).
  2. GRPO: synthpref (estimator grpo, k3 KL in the loss, token-mean loss) vs TRL's GRPOTrainer (beta in the
     loss as k3, loss_type dapo = token-mean, rewards scaled by the group std).
Same tiny Llama (synthpref.models.tiny's defaults, or --size 25m), the demo prompts (conversational for TRL), 16
prompts x 8 completions per step, 16 new tokens at temperature 1, beta 0.05, lr 1e-3 (constant), one
clipped update of all 128 completions per step (num_iterations 1), fp32 pinned everywhere, the same reward
function on both sides (tests.rule_judges:low_id_rate, TRL's reward-function signature). TRL runs in a child
process with 2 torch threads; synthpref's trainers are Ray actors (--train-cpus threads each) beside one vLLM
CPU engine. TRL tries its vLLM colocate mode first and falls back to transformers' generate (the output says
which, and why). A step is everything between two updates: sampling, reward, old/reference log-probs, the
update and (synthpref; TRL with vLLM) the weight sync. Step 1 is the warm-up on both sides and is left out:
completions/s = completions of steps 2..N / their wall time (synthpref: the step_s of its metrics; TRL: a
callback's on_step_begin..on_step_end). Startup (Ray, engines, DeepSpeed, model loads) is shown apart.
Timings are printed, never asserted; these machines are noisy, read the ratios.

    .venv/bin/python bench/rl_throughput.py [--steps 8] [--size tiny|25m] [--skip rloo|grpo] [--trl-backend auto]
                                            [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
THREADS = 2
REWARD = "tests.rule_judges:low_id_rate"
SIZES = {"tiny": {}, "25m": {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "intermediate_size": 1376}}
PHASES = ("generate", "reward", "old_logprobs", "reference", "values", "update", "sync")


def prompt_rows(args) -> list[dict]:
    from synthpref.data.demo_prompts import demo_prompts
    return demo_prompts(args.prompts * args.steps)           # every prompt once over the run (the set repeats)


def synthpref_run(kind: str, model: str, data: str, work: Path, args) -> dict:
    """run_ppo in this process on a YAML config; per-step figures from its metrics.jsonl."""
    import yaml

    from synthpref.algorithms.ppo import run_ppo
    from synthpref.config import PPOConfig, load_config
    kl = {"coef": args.beta, "placement": "reward", "estimator": "k1"} if kind == "rloo" else \
         {"coef": args.beta, "placement": "loss", "estimator": "k3"}
    batch = args.prompts * args.k
    tree = {"output_dir": str(work / f"sp-{kind}"), "seed": args.seed, "steps": args.steps, "estimator": kind,
            "prompts_per_step": args.prompts, "save_every": 10 ** 6, "mini_batch": batch, "ppo_epochs": 1,
            "progress": False, "kl": kl, "data": {"path": data},
            "policy": {"model": model, "samples_per_prompt": args.k, "max_tokens": args.max_tokens, "temperature": 1.0,
                       "engine": {"max_model_len": 512, "dtype": "float32"}},
            "judging": {"mode": "pointwise", "judges": [{"id": "reward", "type": "function", "function": REWARD}]},
            "train": {"lr": args.lr, "dtype": "float32", "max_len": 512, "micro_batch": batch, "num_cpus": args.train_cpus}}
    path = work / f"sp-{kind}.yaml"
    path.write_text(yaml.safe_dump(tree))
    start = time.perf_counter()
    report = run_ppo(load_config(PPOConfig, path))
    total = time.perf_counter() - start
    records = [json.loads(line) for line in (Path(tree["output_dir"]) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("event") == "ppo"]
    timed = steps[1:]
    secs = sum(r["step_s"] for r in timed)
    return {"completions_per_s": sum(r["samples"] for r in timed) / secs, "timed_steps": len(timed), "seconds": secs,
            "outside_steps_s": total - sum(r["step_s"] for r in steps), "dtypes": report["dtypes"],
            "phases_s": {p: (sum(r[f"time_{p}_s"] for r in timed) / len(timed) if f"time_{p}_s" in timed[0] else None)
                         for p in PHASES},
            "step_s": secs / len(timed), "steps_s": [r["step_s"] for r in steps],
            "reward_first_last": (steps[0]["reward_raw"], steps[-1]["reward_raw"])}


def trl_child(args) -> None:
    """In the child process: one TRL trainer run; figures to args.out as JSON."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    import trl
    from tests.rule_judges import low_id_rate
    torch.set_num_threads(THREADS)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    vllm = args.trl_backend == "vllm"
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in prompt_rows(args)])
    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.prompts * args.k,
                  num_generations=args.k, max_completion_length=args.max_tokens, beta=args.beta,
                  learning_rate=args.lr, lr_scheduler_type="constant", temperature=1.0, num_iterations=1,
                  bf16=False, fp16=False, use_cpu=True, model_init_kwargs={"dtype": torch.float32},
                  max_steps=args.steps, logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True,
                  seed=args.seed, use_vllm=vllm, **({"vllm_mode": "colocate", "vllm_max_model_length": 512} if vllm else {}))
    if args.trl_child == "rloo":
        config, cls = trl.RLOOConfig(**common), trl.RLOOTrainer
    else:
        config, cls = trl.GRPOConfig(**common, loss_type="dapo", scale_rewards="group"), trl.GRPOTrainer
    marks: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            marks.append((time.perf_counter(), 0.0))

        def on_step_end(self, *a, **k):
            marks[-1] = (marks[-1][0], time.perf_counter())
    start = time.perf_counter()
    trainer = cls(model=args.model, reward_funcs=low_id_rate, args=config, train_dataset=data, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)
    assert trainer.model.dtype == torch.float32, trainer.model.dtype
    trainer.train()
    total = time.perf_counter() - start
    steps = [b - a for a, b in marks]
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    secs = sum(steps[1:])
    Path(args.out).write_text(json.dumps({
        "completions_per_s": (len(steps) - 1) * args.prompts * args.k / secs, "timed_steps": len(steps) - 1,
        "seconds": secs, "step_s": secs / (len(steps) - 1), "steps_s": steps, "outside_steps_s": total - sum(steps),
        "reward_first_last": (rewards[0], rewards[-1]), "dtype": str(trainer.model.dtype), "threads": torch.get_num_threads()}))


def trl_run(kind: str, model: str, work: Path, args, backend: str) -> dict:
    """A TRL run in a child process (vLLM's colocated engine cannot be torn down cleanly in-process);
    {"error": ...} with the last error line of its log when it fails."""
    out, log = work / f"trl-{kind}-{backend}.json", work / f"trl-{kind}-{backend}.log"
    cmd = [sys.executable, __file__, "--trl-child", kind, "--trl-backend", backend, "--model", model, "--out", str(out)]
    cmd += [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("steps", "prompts", "k", "max_tokens", "beta", "lr", "seed")]
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, timeout=args.trl_timeout).returncode
        except subprocess.TimeoutExpired:
            return {"error": f"ran past --trl-timeout {args.trl_timeout} s (log {log})"}
    if rc == 0 and out.exists():
        return json.loads(out.read_text())
    lines = [ln.strip() for ln in log.read_text().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    hint = next((ln[ln.index("TRL currently"):] for ln in lines if "TRL currently supports vLLM" in ln), "")
    return {"error": (errors or lines or ["no output"])[-1][:300] + f" (exit {rc}; log {log})" + (f"; {hint}" if hint else "")}


def print_tables(r: dict) -> None:
    from synthpref.models.precision import machine_line
    print(f"\n{machine_line(r['machine'])}")
    print(f"dtype: float32 pinned on both sides (trainers and samplers; 'auto' would pick {r['machine']['auto_dtype']} here)")
    size = SIZES[r["size"]]
    print(f"Llama hidden {size.get('hidden_size', 128)}, {size.get('num_layers', 2)} layers; {r['prompts']} prompts x "
          f"{r['k']} completions per step, {r['max_tokens']} new tokens, beta {r['beta']}, lr {r['lr']}, "
          f"{r['steps']} steps (step 1 = warm-up, left out)")
    print(f"TRL {r['trl']} generation backend: {r['trl_backend']}")
    for reason in r.get("trl_vllm_failed", []):
        print(f"  TRL vLLM colocate failed: {reason}")
    print(f"synthpref: 1 vLLM CPU engine + policy/reference trainers of {r['train_cpus']} threads; TRL: {THREADS} threads\n")
    rows, header = [], ("algorithm", "synthpref compl/s", "TRL compl/s", "synthpref/TRL", "target", "outside steps s: sp / TRL")
    for kind in ("rloo", "grpo"):
        if kind not in r:
            continue
        s, t = r[kind]["synthpref"], r[kind]["trl"]
        if "error" in t:
            rows.append((kind.upper(), f"{s['completions_per_s']:.1f}", "failed", "", ">= 2x", t["error"]))
            continue
        ratio = s["completions_per_s"] / t["completions_per_s"]
        rows.append((kind.upper(), f"{s['completions_per_s']:.1f}", f"{t['completions_per_s']:.1f}", f"{ratio:.2f}x",
                     ">= 2x: " + ("met" if ratio >= 2 else "missed"), f"{s['outside_steps_s']:.0f} / {t['outside_steps_s']:.0f}"))
    table(header, rows)
    kinds = [k for k in ("rloo", "grpo") if k in r]
    if not kinds:
        return
    print("\nsynthpref per-phase time, mean s per timed step (old_logprobs and reference run while the reward is computed)")
    rows = []
    for p in PHASES:
        cells = []
        for k in kinds:
            v, step = r[k]["synthpref"]["phases_s"][p], r[k]["synthpref"]["step_s"]
            cells.append("- (no critic)" if v is None else f"{v:.3f} ({v / step:.0%})")
        rows.append((p, *cells))
    rows.append(("step", *(f"{r[k]['synthpref']['step_s']:.3f}" for k in kinds)))
    rows.append(("sync share of a step (target <= 10%)", *(
        (lambda sh: f"{sh:.1%}: " + ("met" if sh <= 0.10 else "missed"))(r[k]["synthpref"]["phases_s"]["sync"]
                                                                          / r[k]["synthpref"]["step_s"]) for k in kinds)))
    table(("phase", *(k.upper() for k in kinds)), rows)


def table(header, rows) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(str(cell).ljust(w) for cell, w in zip(row, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="RL steps a run (the first is the warm-up)")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step")
    parser.add_argument("--k", type=int, default=8, help="completions per prompt (the group)")
    parser.add_argument("--max-tokens", type=int, default=16, help="new tokens per completion")
    parser.add_argument("--beta", type=float, default=0.05, help="KL coefficient, both sides")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (constant), both sides")
    parser.add_argument("--seed", type=int, default=0, help="model and sampling seed")
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES), help="tiny: build_tiny_model's defaults "
                        "(hidden 128, 2 layers, 2 heads); 25m: STACK.md's size (hidden 512, 8 layers, 8 heads)")
    parser.add_argument("--train-cpus", type=int, default=THREADS, help="threads of each synthpref trainer rank")
    parser.add_argument("--trl-backend", default="auto", choices=["auto", "vllm", "transformers"],
                        help="TRL generation: auto tries vLLM colocate, then transformers' generate")
    parser.add_argument("--trl-timeout", type=int, default=900, help="seconds one TRL run may take")
    parser.add_argument("--skip", nargs="*", default=[], choices=["rloo", "grpo"], help="algorithms to leave out")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--trl-child", choices=["rloo", "grpo"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps: need >= 2 (step 1 is the warm-up)")
    if args.trl_child:
        return trl_child(args)

    import trl

    from synthpref.models.precision import machine
    from synthpref.models.tiny import build_tiny_model
    work = Path(tempfile.mkdtemp(prefix="rl_throughput-"))
    model = str(build_tiny_model(work / "policy", seed=args.seed, **SIZES[args.size]))
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in prompt_rows(args)))
    r: dict = {**{k: getattr(args, k) for k in ("size", "prompts", "k", "max_tokens", "beta", "lr", "steps",
                                                "train_cpus")}, "trl": trl.__version__, "machine": machine()}
    backend = "transformers" if args.trl_backend == "transformers" else "vllm"
    for kind in ("rloo", "grpo"):
        if kind in args.skip:
            continue
        r[kind] = {"synthpref": synthpref_run(kind, model, str(data), work, args)}
        t = trl_run(kind, model, work, args, backend)
        if "error" in t and backend == "vllm" and args.trl_backend == "auto":
            r.setdefault("trl_vllm_failed", []).append(f"{kind}: {t['error']}")
            backend = "transformers"                           # the same code path for GRPO: not tried again
            t = trl_run(kind, model, work, args, backend)
        r[kind]["trl"] = t
    r["trl_backend"] = ("vLLM colocate (use_vllm=True, vllm_mode='colocate')" if backend == "vllm"
                        else "transformers generate (use_vllm=False)")
    print_tables(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2, default=str))


if __name__ == "__main__":
    main()
