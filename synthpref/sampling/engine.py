"""EngineActor: one vLLM engine in one Ray actor, serving samplers and judges alike.

The actor renders chat messages with the model's own chat template, checks every prompt against the
context window before it enters a batch (one over-long prompt makes vLLM reject the whole batch), and
returns a result or an error per request. On CPU it pins the engine's OpenMP threads to the cores it
was given (vLLM's default put every engine on core 0).
"""
from __future__ import annotations

import gc
import os
import time
from typing import Any

from synthpref.models.loading import chat_prompt_ids
from synthpref.models.precision import dtype_name, resolve_dtype
from synthpref.cluster.worker_logs import to_log_file
from synthpref.config import EngineConfig
from synthpref.sampling import reaper, weight_receiver


def cpu_engine_env(cores: str | None, kv_cache_gib: float) -> dict[str, str]:
    """Environment a CPU engine needs before it starts: its cores and its KV-cache size."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(max(1, int(round(kv_cache_gib))))}
    if cores:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cores
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return env


def pin_threads(cores: str) -> None:
    """Restrict every thread of this process (and so the threads it starts later) to `cores`: with the
    engine core in this process, its OpenMP threads then stay on the cores this replica was given."""
    from synthpref.cluster.placement import parse_cores
    allowed = set(parse_cores(cores))
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []:
        try:
            os.sched_setaffinity(int(tid), allowed)
        except OSError:                      # a thread that ended meanwhile
            pass


def shared_prefix_order(prompts: list, params: list, keys: list, groups: list) -> tuple[list, list, list]:
    """Reorder a batch so the first request of each prefix group (e.g. the (a, b) order of a pair) comes
    before every second one ((b, a)). vLLM schedules first come first served and reuses only KV blocks
    already computed, so the second order then finds the shared instructions and conversation in the
    prefix cache; adjacent in one scheduler step, the two would both compute them."""
    seen: dict = {}
    phase = []
    for g in groups:
        phase.append(seen.get(g, 0) if g is not None else 0)
        if g is not None:
            seen[g] = seen.get(g, 0) + 1
    order = sorted(range(len(prompts)), key=lambda k: (phase[k], k))
    return [prompts[k] for k in order], [params[k] for k in order], [keys[k] for k in order]


def sampled_logprobs(logprobs, token_ids: list[int]) -> list[float] | None:
    """The engine's log-probability of each token it produced (vLLM's raw, temperature-1 values), from
    the per-position dicts `SamplingParams(logprobs=0)` returns; None when it returned none."""
    if not logprobs or len(logprobs) != len(token_ids):
        return None
    return [float(position[t].logprob) for position, t in zip(logprobs, token_ids)]


class EngineActor:
    """Wraps `vllm.LLM`. Methods take plain lists of request dicts and never raise for one bad request."""

    def __init__(self, model: str, engine: EngineConfig, cores: str | None = None, logprobs_k: int = 20,
                 weights: dict | None = None, weight_version: int = 0, sleep_mode: bool = False):
        to_log_file("engine")
        self.model = model
        self.on_gpu = engine.num_gpus > 0 or engine.tensor_parallel_size > 1
        if not self.on_gpu:
            os.environ.update(cpu_engine_env(cores, engine.kv_cache_gib))
        in_process = engine.in_process
        in_process = (not self.on_gpu) if in_process is None else bool(in_process)
        # read by vLLM when the engine is built: 0 keeps EngineCore in this process (no spawned children)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
        if in_process and cores and not self.on_gpu:
            pin_threads(cores)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM

        self.dtype = resolve_dtype(engine.dtype, self.on_gpu)
        kwargs: dict[str, Any] = dict(
            model=model, max_model_len=engine.max_model_len, dtype=self.dtype,
            enforce_eager=engine.enforce_eager, seed=engine.seed,
            enable_prefix_caching=engine.enable_prefix_caching,
            max_logprobs=logprobs_k,
            tensor_parallel_size=engine.tensor_parallel_size,
            worker_extension_cls=weight_receiver.EXTENSION,
        )
        self.sleep_mode = sleep_mode and self.on_gpu
        if self.sleep_mode:                          # colocated with a trainer: free the GPU during updates
            kwargs["enable_sleep_mode"] = True
        if engine.weight_transfer == "nccl":       # vLLM's weight-transfer engine in every worker
            kwargs.update(weight_receiver.engine_kwargs())
        chunked = engine.chunked_prefill
        if chunked is not None or not self.on_gpu:
            kwargs["enable_chunked_prefill"] = bool(chunked)   # off on CPU unless asked: see EngineConfig
        if self.on_gpu:
            kwargs["gpu_memory_utilization"] = engine.gpu_memory_utilization
            if engine.tensor_parallel_size > 1:
                kwargs["distributed_executor_backend"] = "ray"
        self.llm = LLM(**kwargs)
        self.dtype = self._running_dtype()
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = engine.max_model_len
        self.cores = cores
        self._reaper = reaper.watch_children()
        self.served = 0                      # requests answered, for load-balance checks
        self.weight_version = 0              # 0: the weights the engine was built from
        if weights is not None:              # a replacement replica joins at the group's latest weights
            self.load_weights(weights, weight_version)

    # -- helpers -------------------------------------------------------------------------------
    def _running_dtype(self) -> str:
        """The dtype vLLM resolved and runs (it may differ from the one asked for, e.g. "auto" on GPU)."""
        return dtype_name(self.llm.llm_engine.model_config.dtype)

    def info(self) -> dict:
        import ray
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "model": self.model,
                "max_model_len": self.max_model_len, "served": self.served,
                "cores": self.cores, "dtype": self.dtype, "engine_pids": self._reaper.pids if self._reaper else [],
                "weight_version": self.weight_version}

    def load_weights(self, state: dict, version: int) -> dict:
        """Serve new weights (name -> full tensor, e.g. a trainer's gather) from now on, as `version`."""
        stats = weight_receiver.load_into_engine(self.llm, state)
        self.weight_version = version
        return {**stats, "version": version, "pid": os.getpid()}

    def nccl_join(self, host: str, port: int, world_size: int, rank_offset: int) -> bool:
        """Join the trainer's NCCL weight-transfer group (GPU engines built with weight_transfer: nccl)."""
        weight_receiver.engine_init(self.llm, weight_receiver.init_info_for_engine(host, port, world_size, rank_offset))
        return True

    def nccl_receive(self, update_info: dict, version: int) -> int:
        """Receive one broadcast of the trainer's weights and serve them as `version`."""
        weight_receiver.engine_receive(self.llm, update_info)
        self.weight_version = version
        return version

    def sleep(self) -> bool:
        """Give the GPU memory back while a colocated trainer updates (vLLM sleep mode, level 1: weights
        offloaded to CPU, KV cache dropped). A no-op for engines built without sleep mode."""
        if self.sleep_mode:
            self.llm.sleep(level=1)
        return True

    def wake_up(self) -> bool:
        if self.sleep_mode:
            self.llm.wake_up()
        return True

    def first_parameter_sum(self) -> float:
        return self.llm.collective_rpc("first_parameter_sum")[0]

    def render(self, messages: list[dict]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)

    def single_token_ids(self, strings: list[str]) -> list[int]:
        """Token ids of the strings that encode to exactly one token (e.g. "A" and " A")."""
        ids = []
        for s in strings:
            enc = self.tokenizer.encode(s, add_special_tokens=False)
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
        return ids

    def _prepare(self, requests: list[dict], room: list[int]) -> tuple[list, list[int], list[dict]]:
        """Tokenise; requests that do not fit get an error result and stay out of the batch."""
        results: list[dict] = [{} for _ in requests]
        prompts, index = [], []
        for i, (req, max_new) in enumerate(zip(requests, room)):
            try:
                ids = self.render(req["messages"])
            except Exception as exc:  # a template that cannot render this conversation
                results[i] = {"error": f"chat template failed: {exc}"}
                continue
            if len(ids) + max_new > self.max_model_len:
                results[i] = {"error": f"prompt_too_long: {len(ids)} prompt tokens + {max_new} new tokens "
                                       f"> max_model_len {self.max_model_len}", "prompt_tokens": len(ids)}
                continue
            prompts.append({"prompt_token_ids": ids})
            index.append(i)
        return prompts, index, results

    # -- work ----------------------------------------------------------------------------------
    def generate(self, requests: list[dict]) -> list[dict]:
        """Each request: messages, max_tokens, temperature, top_p, seed (ignore_eos: always generate
        max_tokens, for benchmarks). One completion each, with the exact token ids the engine produced (an
        EOS it stopped on included, none added to a completion cut at max_tokens) and their log-probs."""
        from vllm import SamplingParams

        self.served += len(requests)
        prompts, index, results = self._prepare(requests, [r["max_tokens"] for r in requests])
        params = [SamplingParams(n=1, max_tokens=requests[i]["max_tokens"],
                                 temperature=requests[i].get("temperature", 1.0),
                                 top_p=requests[i].get("top_p", 1.0), seed=requests[i].get("seed"),
                                 ignore_eos=requests[i].get("ignore_eos", False),
                                 logprobs=0)
                  for i in index]
        index, outputs, latency = self._generate(prompts, params, index, requests)
        for i, out in zip(index, outputs):
            comp = out.outputs[0]
            ids = list(comp.token_ids)
            results[i] = {"text": comp.text, "n_tokens": len(ids), "token_ids": ids,
                          "token_logprobs": sampled_logprobs(comp.logprobs, ids),
                          "logprob": comp.cumulative_logprob, "finish_reason": comp.finish_reason,
                          "prompt_tokens": len(out.prompt_token_ids), "latency_s": latency,
                          "weight_version": self.weight_version, "dtype": self.dtype}
        return results

    def _generate(self, prompts: list, params: list, keys: list[int], requests: list[dict]):
        """One vLLM batch in shared-prefix order; returns (request keys, outputs, seconds per request)."""
        prompts, params, keys = shared_prefix_order(prompts, params, keys, [requests[i].get("prefix_group") for i in keys])
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False) if prompts else []
        return keys, outputs, (time.perf_counter() - start) / max(1, len(prompts))

    def choice_logprobs(self, requests: list[dict]) -> list[dict]:
        """Next-token logprobs of each choice's tokens: one prefill, one token.

        Each request: messages, choices = {label: [strings]} (e.g. {"A": ["A", " A"], "B": [...]}).
        vLLM returns the raw logprob of exactly these tokens (`logprob_token_ids`); the result maps each
        label to the logprobs of its single-token spellings. `raw` is the argmax token.
        """
        from vllm import SamplingParams

        self.served += len(requests)
        prompts, index, results = self._prepare(requests, [1] * len(requests))
        batch, params, token_maps = [], [], {}
        for prompt, i in zip(prompts, index):
            token_map = {label: self.single_token_ids(strings) for label, strings in requests[i]["choices"].items()}
            missing = [label for label, ids in token_map.items() if not ids]
            if missing:
                results[i] = {"error": f"choices {missing} have no single-token encoding in this tokenizer"}
                continue
            token_maps[i] = token_map
            batch.append(prompt)
            params.append(SamplingParams(max_tokens=1, temperature=0.0,
                                         logprob_token_ids=sorted({t for ids in token_map.values() for t in ids})))
        keys, outputs, latency = self._generate(batch, params, list(token_maps), requests)
        for i, out in zip(keys, outputs):
            comp = out.outputs[0]
            top = comp.logprobs[0] if comp.logprobs else {}
            results[i] = {"logprobs": {label: [top[t].logprob for t in ids if t in top]
                                       for label, ids in token_maps[i].items()},
                          "raw": comp.text, "prompt_tokens": len(out.prompt_token_ids), "completion_tokens": 1,
                          "latency_s": latency, "weight_version": self.weight_version}
        return results

    def shutdown(self) -> bool:
        """Stop the engine and its worker processes; safe to call twice."""
        if getattr(self, "llm", None) is not None:
            engine = getattr(self.llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                try:
                    core.shutdown()
                except Exception:
                    pass
            del self.llm
            self.llm = None
            gc.collect()
        if self._reaper:
            self._reaper.kill_now()
        return True
