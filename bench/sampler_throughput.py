"""SamplerGroup against raw vLLM, and vLLM's two engine modes, interleaved in one run (read the ratios:
these machines are noisy).

The same sampling work for every contender (25M Llama of STACK.md, fresh prompts each repetition,
2 completions per prompt, 32 new tokens, temperature 1, a seed per request, the sampled tokens' log-probs
returned, as the samplers need for RL): raw `vllm.LLM` in this process with vLLM's default separate
engine-core process (`mp`) and with the engine core in this process (`inproc`), and SamplerGroup (one
engine actor on the same cores, through Ray) in each mode. The contenders take turns, in rotated order,
for every repetition; the table gives each one's median tokens/s with the spread (min-max) and the
ratios. With --dtypes both, the whole comparison runs in float32 and in bfloat16 (where the CPU has
AVX512-BF16 or AMX), because the better mode differs with how fast the model's compute is.

    .venv/bin/python bench/sampler_throughput.py [--reps 5] [--prompts 64] [--dtypes float32 bfloat16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from judge_throughput import fresh_pairs  # noqa: E402  (the same fresh ~190-token prompts)

NEW_TOKENS, K = 32, 2


class Prompt:                                   # a prompt row as the sampler reads it
    def __init__(self, pid, messages):
        self.prompt_id, self.messages = pid, messages


def raw_engine(model: str, dtype: str, in_process: bool):
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
    from vllm import LLM
    llm = LLM(model=model, max_model_len=1024, dtype=dtype, enforce_eager=True, enable_prefix_caching=True,
              enable_chunked_prefill=False, max_logprobs=20, seed=0)        # as EngineActor builds a CPU engine
    os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING")
    return llm


def raw_run(llm, rep: int, prompts: int) -> int:
    from vllm import SamplingParams

    from synthpref.models.loading import chat_prompt_ids
    tok = llm.get_tokenizer()
    ids = [{"prompt_token_ids": chat_prompt_ids(tok, conv)} for conv, _, _ in fresh_pairs(500 + rep, prompts)]
    params = [SamplingParams(max_tokens=NEW_TOKENS, temperature=1.0, top_p=1.0, seed=1000 * rep + j, logprobs=0)
              for j in range(len(ids) * K)]
    outs = llm.generate([p for p in ids for _ in range(K)], params, use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outs)


def sampler_run(group, rep: int, prompts: int) -> int:
    rows, errors = group.sample([Prompt(f"q{rep}-{i}", conv) for i, (conv, _, _) in enumerate(fresh_pairs(500 + rep, prompts))],
                                k=K, max_tokens=NEW_TOKENS, temperature=1.0, top_p=1.0, base_seed=rep)
    assert not errors, errors[:1]
    return sum(r["n_tokens"] for r in rows)


def compare(model: str, dtype: str, reps: int, prompts: int) -> dict[str, list[float]]:
    """tokens/s of every contender for each repetition, taking turns."""
    from synthpref.config import EngineConfig, PoolConfig
    from synthpref.sampling.group import SamplerGroup

    os.environ.update({"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                       "VLLM_CPU_KVCACHE_SPACE": "1"})
    runners = {}
    for mode in ("mp", "inproc"):
        llm = raw_engine(model, dtype, mode == "inproc")
        runners[f"raw vLLM {mode}"] = (lambda rep, llm=llm: raw_run(llm, rep, prompts), llm)
        group = SamplerGroup(model, EngineConfig(max_model_len=1024, dtype=dtype, kv_cache_gib=1, cpu_cores="0-1",
                                                 in_process=mode == "inproc"), PoolConfig(replicas=1))
        runners[f"SamplerGroup {mode}"] = (lambda rep, g=group: sampler_run(g, rep, prompts), group)
    names = list(runners)
    for name in names:                                   # warm-up: first batches compile and allocate
        runners[name][0](-1)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            start = time.perf_counter()
            tokens = runners[name][0](rep)
            rates[name].append(tokens / (time.perf_counter() - start))
    for name, (_, part) in runners.items():
        if name.startswith("SamplerGroup"):
            part.shutdown()
        else:
            part.llm_engine.engine_core.shutdown()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions per contender (median reported)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts per repetition (2 completions each)")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"], help="dtypes to compare in")
    args = parser.parse_args()

    from synthpref.cluster.ray_setup import init_ray
    from synthpref.config import RayConfig
    from synthpref.models.precision import machine, machine_line, resolve_dtype
    from synthpref.models.tiny import build_tiny_model

    model = str(build_tiny_model(Path(tempfile.mkdtemp()) / "m25", seed=0, hidden_size=512, num_layers=8,
                                 num_heads=8, intermediate_size=1376))
    bf16_ok = resolve_dtype("auto", False) == "bfloat16"
    init_ray(RayConfig(num_cpus=4))
    print(f"\n{machine_line(machine())}")
    print(f"25M Llama, {args.prompts} prompts x {K} completions x {NEW_TOKENS} tokens per repetition, "
          f"median of {args.reps} interleaved repetitions (spread min-max), tokens/s")
    for dtype in args.dtypes:
        if dtype == "bfloat16" and not bf16_ok:
            print("\nbfloat16: skipped (this CPU has neither AVX512-BF16 nor AMX)")
            continue
        rates = compare(model, dtype, args.reps, args.prompts)
        med = {name: statistics.median(v) for name, v in rates.items()}
        print(f"\ndtype {dtype}")
        for name, values in rates.items():
            print(f"  {name:<22} {med[name]:8.1f}   ({min(values):.1f}-{max(values):.1f})")
        for a, b in (("SamplerGroup inproc", "raw vLLM inproc"), ("SamplerGroup mp", "raw vLLM mp"),
                     ("SamplerGroup inproc", "raw vLLM mp"), ("raw vLLM inproc", "raw vLLM mp")):
            print(f"  {a} / {b}: {med[a] / med[b]:.2f}x")
        best = max(("SamplerGroup inproc", "SamplerGroup mp"), key=med.get)
        print(f"  best SamplerGroup mode: {best.split()[-1]} -> {med[best] / max(med['raw vLLM mp'], med['raw vLLM inproc']):.2f}x "
              f"the best raw vLLM (target >= 0.95x)")


if __name__ == "__main__":
    main()
