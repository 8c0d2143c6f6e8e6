"""Engine pools (replicas of EngineActor) and SamplerGroup: k completions per prompt from a pool."""
from __future__ import annotations

import dataclasses
from typing import Callable

import ray

from synthpref.cluster import core_plan, engine_placement, omp_binding_env
from synthpref.config import EngineConfig, PoolConfig
from synthpref.data.schema import content_id
from synthpref.pool import ReplicaPool, Spawned
from synthpref.sampling.engine import EngineActor


def engine_spawner(model: str, engine: EngineConfig, max_replicas: int, actor_cls=EngineActor) -> Callable[[int], Spawned]:
    """A function that starts the engine replica of one slot. CPU engines get the slot's own cores, so N
    engines on N cores run in parallel (vLLM's default binding puts them all on core 0)."""
    on_cpu = engine.num_gpus == 0 and engine.tensor_parallel_size == 1
    cores = core_plan(max_replicas, engine.cpu_cores) if on_cpu else [None] * max_replicas
    remote_cls = ray.remote(actor_cls)
    engine_dict = dataclasses.asdict(engine)

    def spawn(slot: int) -> Spawned:
        opts, demand, release = engine_placement(engine)
        slot_cores = cores[slot % len(cores)]
        if slot_cores and engine.in_process is not False:          # in-process CPU engine: pin its OpenMP threads
            opts["runtime_env"] = {"env_vars": omp_binding_env(slot_cores)}
        actor = remote_cls.options(**opts).remote(model, engine_dict, slot_cores)
        return Spawned(actor, demand, release)
    return spawn


def engine_pool(name: str, model: str, engine: EngineConfig, pool: PoolConfig | None = None,
                events: Callable[[dict], None] | None = None) -> ReplicaPool:
    pool = pool or PoolConfig()
    return ReplicaPool(name, engine_spawner(model, engine, pool.max_replicas or pool.replicas), pool, events)


def sample_seed(base_seed: int, prompt_id: str, index: int) -> int:
    return int(content_id(base_seed, prompt_id, index), 16) % (2 ** 31)


class SamplerGroup:
    """k completions per prompt from a group of vLLM engines, with a recorded seed for each."""

    def __init__(self, model: str, engine: EngineConfig, pool: PoolConfig | None = None, chunk_size: int = 256,
                 events: Callable[[dict], None] | None = None):
        self.pool = engine_pool("sampler", model, engine, pool, events)
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
                                 "top_p": top_p, "seed": seed, "prefix_group": p.prompt_id})
                keys.append((p.prompt_id, j, seed))
        outputs = self.pool.run("generate", requests, self.chunk_size, on_done)
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
        self.pool.shutdown()
