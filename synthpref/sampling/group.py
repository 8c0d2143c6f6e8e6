"""EngineGroup: N engine actors behind least-loaded dispatch; SamplerGroup: k completions per prompt."""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import Callable

import ray

from synthpref.cluster import core_plan, engine_actor_options
from synthpref.config import EngineConfig
from synthpref.data.schema import content_id
from synthpref.sampling.engine import EngineActor


class EngineGroup:
    """N EngineActors of one model. `map` splits requests into chunks and keeps every engine busy,
    sending each next chunk to the engine with the fewest requests outstanding."""

    def __init__(self, model: str, engine: EngineConfig, num_engines: int = 1, max_inflight_chunks: int = 2):
        self.model = model
        self.engine = engine
        on_cpu = engine.num_gpus == 0 and engine.tensor_parallel_size == 1
        cores = core_plan(num_engines, engine.cpu_cores) if on_cpu else [None] * num_engines
        remote_cls = ray.remote(EngineActor)
        engine_dict = dataclasses.asdict(engine)
        self.actors = [remote_cls.options(**engine_actor_options(engine)).remote(model, engine_dict, cores[i])
                       for i in range(num_engines)]
        self.max_inflight_chunks = max_inflight_chunks
        self.infos = ray.get([a.info.remote() for a in self.actors])

    def map(self, method: str, requests: list[dict], chunk_size: int,
            on_done: Callable[[int], None] | None = None) -> list[dict]:
        """Run `method` over all requests; results come back in request order."""
        results: list[dict | None] = [None] * len(requests)
        pending = deque((start, requests[start:start + chunk_size]) for start in range(0, len(requests), chunk_size))
        load = [0] * len(self.actors)                       # requests outstanding per actor
        inflight: dict = {}                                 # ref -> (actor index, start, size)
        while pending or inflight:
            while pending:
                free = [i for i in range(len(self.actors))
                        if sum(1 for a, _, _ in inflight.values() if a == i) < self.max_inflight_chunks]
                if not free:
                    break
                target = min(free, key=lambda i: load[i])
                start, chunk = pending.popleft()
                ref = getattr(self.actors[target], method).remote(chunk)
                inflight[ref] = (target, start, len(chunk))
                load[target] += len(chunk)
            done, _ = ray.wait(list(inflight), num_returns=1)
            for ref in done:
                target, start, size = inflight.pop(ref)
                load[target] -= size
                out = ray.get(ref)
                results[start:start + size] = out
                if on_done:
                    on_done(size)
        return results  # type: ignore[return-value]

    def call_all(self, method: str, *args) -> list:
        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def shutdown(self) -> None:
        """Stop every engine (no orphaned vLLM processes), then end the actors."""
        refs = [a.shutdown.remote() for a in self.actors]
        try:
            ray.get(refs, timeout=120)
        except Exception:
            pass
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def sample_seed(base_seed: int, prompt_id: str, index: int) -> int:
    return int(content_id(base_seed, prompt_id, index), 16) % (2 ** 31)


class SamplerGroup:
    """k completions per prompt from a group of vLLM engines, with a recorded seed for each."""

    def __init__(self, model: str, engine: EngineConfig, num_engines: int = 1, chunk_size: int = 32):
        self.group = EngineGroup(model, engine, num_engines)
        self.model = model
        self.chunk_size = chunk_size

    def sample(self, prompts: list, k: int, max_tokens: int, temperature: float, top_p: float,
               base_seed: int, policy_name: str | None = None,
               on_done: Callable[[int], None] | None = None) -> tuple[list[dict], list[dict]]:
        """Returns (sample rows, errors). Each prompt has `prompt_id` and `messages`."""
        requests, keys = [], []
        for p in prompts:
            for j in range(k):
                seed = sample_seed(base_seed, p.prompt_id, j)
                requests.append({"messages": p.messages, "max_tokens": max_tokens, "temperature": temperature,
                                 "top_p": top_p, "seed": seed})
                keys.append((p.prompt_id, j, seed))
        outputs = self.group.map("generate", requests, self.chunk_size, on_done)
        rows, errors = [], []
        for (prompt_id, j, seed), out in zip(keys, outputs):
            if "error" in out:
                errors.append({"prompt_id": prompt_id, "index": j, "error": out["error"]})
                continue
            rows.append({"prompt_id": prompt_id, "sample_id": content_id(prompt_id, j, seed),
                         "policy": policy_name or self.model, "text": out["text"], "n_tokens": out["n_tokens"],
                         "logprob": out["logprob"], "finish_reason": out["finish_reason"], "seed": seed})
        return rows, errors

    def shutdown(self) -> None:
        self.group.shutdown()
