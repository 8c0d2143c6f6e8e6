"""Judge throughput, measured side by side in one run (read the ratios: these machines are noisy).

At the 25M-parameter size of STACK.md (Llama, hidden 512, 8 layers), with fresh prompts every
repetition (so no run reads another's prefix cache):
  raw in-process vLLM (both-order logprob verdicts; sampling; `vllm.LLM` with its default separate engine
  process, and for sampling also with the engine core in-process as synthpref runs CPU engines)  vs  the
  same work through JudgePool and SamplerGroup on Ray; both-order logprob labels vs a naive single-order 64-token text verdict on the
  same engine; two engines on the two cores vs one; and an HTTP judge against a loopback server with
  injected latency, 1 vs 16 requests in flight (25 rounds each, so the steady state is measured).

    .venv/bin/python bench/judge_throughput.py [--pairs 64] [--reps 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# words the tiny tokenizer encodes as one token each, so token counts are like a real tokenizer's
WORDS = ("a about and answer assistant at bake better bread brown capital carbon clearly dawn day dioxide do "
         "dog eat every flour fold food for fox from grey harm healthy hello helpful how in into is it judge "
         "jumps knead lazy length let light longer make model must not of one or over oxygen plants poem "
         "question quick response rise salt sea sentence short sleep staying stones story sugar sunlight the").split()


def fresh_texts(seed: int, n: int, words: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + f" ({seed}-{i})" for i in range(n)]


def fresh_pairs(rep: int, n: int):
    """n (conversation, a, b) triples never seen before (rep keys the text): a ~190-token conversation and
    two ~55-token responses, so a judge prompt is ~400 tokens as in STACK.md."""
    questions = fresh_texts(1000 + rep, n, 180)
    a, b = fresh_texts(2000 + rep, n, 50), fresh_texts(3000 + rep, n, 50)
    return [([{"role": "user", "content": q}], x, y) for q, x, y in zip(questions, a, b)]


def best_rate(fn, reps: int, work: float) -> float:
    """Units per second: `fn(rep)` runs one repetition on fresh inputs; the median of `reps`."""
    rates = []
    for rep in range(reps):
        start = time.perf_counter()
        fn(rep)
        rates.append(work / (time.perf_counter() - start))
    return statistics.median(rates)


def judge_messages(pairs, both_orders: bool = True):
    from synthpref.judging import templates
    tpl = templates.PAIRWISE_LOGPROB
    out = []
    for conv, a, b in pairs:
        out.append(templates.pairwise_messages(tpl, conv, a, b))
        if both_orders:
            out.append(templates.pairwise_messages(tpl, conv, b, a))
    return out


def measure_raw(model: str, args) -> dict:
    """In-process vLLM on both cores: both-order logprob verdicts and sampling, as one batch each."""
    os.environ.update({"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                       "VLLM_CPU_KVCACHE_SPACE": "2"})
    from vllm import LLM, SamplingParams

    from synthpref.models.loading import chat_prompt_ids
    from synthpref.models.precision import resolve_dtype
    llm = LLM(model=model, max_model_len=1024, dtype=resolve_dtype("auto", False), enforce_eager=True,
              enable_prefix_caching=True, enable_chunked_prefill=False, max_logprobs=20)   # as EngineActor on CPU
    tok = llm.get_tokenizer()
    ids = [tok.encode(s, add_special_tokens=False)[0] for s in ("A", "B")]

    def logprob(rep):
        prompts = [{"prompt_token_ids": chat_prompt_ids(tok, m)} for m in judge_messages(fresh_pairs(rep, args.pairs))]
        llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids), use_tqdm=False)

    def sample(rep):
        prompts = [{"prompt_token_ids": chat_prompt_ids(tok, conv)} for conv, _, _ in fresh_pairs(100 + rep, args.pairs)]
        params = [SamplingParams(max_tokens=32, temperature=1.0, seed=j, ignore_eos=True) for j in range(2)]
        llm.generate([p for p in prompts for _ in range(2)], [params[j] for _ in prompts for j in range(2)], use_tqdm=False)
    out = {"raw_logprob": best_rate(logprob, args.reps, args.pairs),
           "raw_sample": best_rate(sample, args.reps, args.pairs * 2 * 32)}
    llm.llm_engine.engine_core.shutdown()
    del llm
    # the same sampling with vLLM's engine core in this process, as synthpref's CPU engines run it
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    llm = LLM(model=model, max_model_len=1024, dtype=resolve_dtype("auto", False), enforce_eager=True,
              enable_prefix_caching=True, enable_chunked_prefill=False, max_logprobs=20)
    out["raw_sample_inproc"] = best_rate(sample, args.reps, args.pairs * 2 * 32)
    llm.llm_engine.engine_core.shutdown()
    del llm
    os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING")
    return out


def measure_pools(model: str, args) -> dict:
    import ray

    from synthpref.config import EngineConfig, JudgeConfig, PoolConfig, RayConfig
    from synthpref.judging.backends import ModelJudge, PairRequest
    from synthpref.sampling.group import SamplerGroup, engine_pool
    from synthpref.cluster.ray_setup import init_ray

    init_ray(RayConfig(num_cpus=4))
    out = {}
    engine = EngineConfig(max_model_len=1024, kv_cache_gib=2)
    pool = engine_pool("judge", model, engine, PoolConfig(replicas=1))           # cores "0-1"
    judge = ModelJudge(JudgeConfig(id="j", model=model, verdict="logprob"), "pairwise", pool)

    def both_orders(rep):
        reqs = []
        for k, (conv, a, b) in enumerate(fresh_pairs(200 + rep, args.pairs)):
            reqs += [PairRequest(f"p{k}", "ab", conv, a, b), PairRequest(f"p{k}", "ba", conv, b, a)]
        rows = judge.judge_pairs(reqs)
        assert all(r["verdict"] != "FAILED" for r in rows), rows[0]

    def naive_text(rep):
        from synthpref.judging import templates
        reqs = [{"messages": templates.pairwise_messages(templates.PAIRWISE_TEXT, conv, a, b), "max_tokens": 64,
                 "temperature": 0.0, "ignore_eos": True} for conv, a, b in fresh_pairs(300 + rep, args.pairs)]
        pool.run("generate", reqs, chunk_size=256)
    out["pool_logprob"] = best_rate(both_orders, args.reps, args.pairs)
    out["pool_naive_text"] = best_rate(naive_text, args.reps, args.pairs)
    pool.shutdown()

    def sampler_rate(replicas: int, cores: str) -> float:
        group = SamplerGroup(model, EngineConfig(max_model_len=1024, kv_cache_gib=2, cpu_cores=cores),
                             PoolConfig(replicas=replicas))             # default chunking: an even share each

        class P:                                                    # a prompt row as the sampler reads it
            def __init__(self, pid, messages):
                self.prompt_id, self.messages = pid, messages

        def sample(rep):
            prompts = [P(f"q{rep}-{i}", conv) for i, (conv, _, _) in enumerate(fresh_pairs(400 + rep, args.pairs))]
            group.sample(prompts, k=2, max_tokens=32, temperature=1.0, top_p=1.0, base_seed=rep)
        try:
            return best_rate(sample, args.reps, args.pairs * 2 * 32)
        finally:
            group.shutdown()
    out["sampler_1_engine_2_cores"] = sampler_rate(1, "auto")        # one engine on cores 0-1
    out["sampler_2_engines"] = sampler_rate(2, "auto")               # cores 0 and 1
    out["sampler_1_engine_1_core"] = sampler_rate(1, "0")
    ray.shutdown()
    return out


def measure_http(args) -> dict:
    """HTTP judge replicas against a server that sleeps `latency` per request and does no work."""
    import ray

    from synthpref.cluster.ray_setup import init_ray
    from synthpref.config import EndpointConfig, JudgeConfig, PoolConfig, RayConfig
    from synthpref.judging.backends import ModelJudge, PairRequest
    from synthpref.judging.http_client import http_spawner
    from synthpref.cluster.pool import ReplicaPool
    from tests.helpers import free_port

    port, latency = free_port(), 0.2
    server = subprocess.Popen([sys.executable, str(REPO / "bench" / "fake_openai_server.py"), str(port), str(latency)])
    try:
        import httpx
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        init_ray(RayConfig(num_cpus=2))
        rates = {}
        for replicas, concurrency in ((1, 1), (1, 16), (4, 4)):
            inflight = replicas * concurrency
            jc = JudgeConfig(id="http", type="http", verdict="logprob", chunk_size=concurrency,
                             endpoint=EndpointConfig(base_url=f"http://127.0.0.1:{port}/v1", model="fake",
                                                     concurrency=concurrency))
            pool_cfg = PoolConfig(replicas=replicas, max_inflight=2)      # the next chunk waits in the replica
            pool = ReplicaPool("http", http_spawner(jc, None, 2), pool_cfg)
            judge = ModelJudge(jc, "pairwise", pool)
            n = 25 * inflight                           # 25 rounds of requests in flight: the steady state

            def run(rep):
                reqs = [PairRequest(f"p{i}", "ab", conv, a, b) for i, (conv, a, b) in enumerate(fresh_pairs(500 + rep, n))]
                assert all(r["verdict"] != "FAILED" for r in judge.judge_pairs(reqs))
            rates[(replicas, concurrency)] = best_rate(run, args.reps, n)
            pool.shutdown()
        ray.shutdown()
        return {"http_1": rates[(1, 1)], "http_16": rates[(1, 16)], "http_4x4": rates[(4, 4)], "latency_s": latency}
    finally:
        server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64, help="pairs (and prompts) per repetition")
    parser.add_argument("--reps", type=int, default=2, help="repetitions per measurement (median reported)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--skip", nargs="*", default=[], choices=["raw", "pools", "http"], help="parts to leave out")
    args = parser.parse_args()

    from synthpref.models.precision import machine, resolve_dtype
    from synthpref.models.tiny import build_tiny_model
    model = str(build_tiny_model(Path(tempfile.mkdtemp()) / "m25", seed=0, hidden_size=512, num_layers=8,
                                 num_heads=8, intermediate_size=1376))
    r: dict = {"machine": machine(), "dtype": resolve_dtype("auto", False), "pairs": args.pairs, "reps": args.reps}
    if "raw" not in args.skip:
        r.update(measure_raw(model, args))
    if "pools" not in args.skip:
        r.update(measure_pools(model, args))
    if "http" not in args.skip:
        r.update(measure_http(args))
    print_table(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


def print_table(r: dict) -> None:
    rows = []

    def add(name, num, den, target, unit):
        if num in r and den in r:
            ratio = r[num] / r[den]
            rows.append((name, f"{r[num]:.2f} / {r[den]:.2f} {unit}", f"{ratio:.2f}x", f">= {target}x",
                         "met" if ratio >= target else "MISSED"))
    add("both-order logprob labels vs naive 64-token text verdict", "pool_logprob", "pool_naive_text", 2.0, "pairs/s")
    add("JudgePool (Ray) vs raw vLLM, both-order logprob", "pool_logprob", "raw_logprob", 0.9, "pairs/s")
    add("SamplerGroup (Ray) vs raw vLLM, sampling", "sampler_1_engine_2_cores", "raw_sample", 0.9, "tok/s")
    add("SamplerGroup (Ray) vs raw vLLM, engine core in-process", "sampler_1_engine_2_cores", "raw_sample_inproc", 0.9, "tok/s")
    add("raw vLLM: engine core in-process vs vLLM's default", "raw_sample_inproc", "raw_sample", 1.0, "tok/s")
    add("two engines on two cores vs one engine on one core", "sampler_2_engines", "sampler_1_engine_1_core", 1.6, "tok/s")
    add("two engines on two cores vs one engine on both cores", "sampler_2_engines", "sampler_1_engine_2_cores", 1.0, "tok/s")
    if "http_16" in r:
        eff = r["http_16"] / r["http_1"] / 16
        rows.append(("HTTP judge: 16 vs 1 requests in flight (efficiency)", f"{r['http_16']:.1f} / {r['http_1']:.2f} labels/s",
                     f"{eff:.2f}", ">= 0.9", "met" if eff >= 0.9 else "MISSED"))
        eff4 = r["http_4x4"] / r["http_1"] / 16
        rows.append(("HTTP judge: 4 replicas x 4 in flight vs 1 (efficiency)", f"{r['http_4x4']:.1f} / {r['http_1']:.2f} labels/s",
                     f"{eff4:.2f}", ">= 0.9", "met" if eff4 >= 0.9 else "MISSED"))
    from synthpref.models.precision import machine_line
    print(f"\n{machine_line(r['machine'])}")
    print(f"25M Llama, dtype {r['dtype']}, {r['pairs']} pairs per repetition, median of {r['reps']}, fresh prompts each\n")
    widths = [max(len(row[i]) for row in rows + [("measure", "figures", "ratio", "target", "")]) for i in range(5)]
    header = ("measure", "figures", "ratio", "target", "")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
