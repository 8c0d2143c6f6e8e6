"""Engine pools (replicas of EngineActor) and SamplerGroup: k completions per prompt from a pool."""
from __future__ import annotations

import time
from typing import Callable

import ray

from synthpref.cluster.placement import core_plan, engine_placement, omp_binding_env
from synthpref.cluster.ray_setup import actor_env
from synthpref.config import EngineConfig, PoolConfig
from synthpref.data.schema import content_id
from synthpref.models.loading import for_workers
from synthpref.cluster.pool import ReplicaPool, Spawned
from synthpref.sampling.engine import EngineActor


def engine_spawner(model: str, engine: EngineConfig, max_replicas: int, actor_cls=EngineActor,
                   latest_weights: Callable[[], tuple | None] = lambda: None,
                   **actor_kwargs) -> Callable[[int], Spawned]:
    """A function that starts the engine replica of one slot. CPU engines get the slot's own cores, so N
    engines on N cores run in parallel (vLLM's default binding puts them all on core 0). A replica started
    after a weight sync (a replacement, a scale-up) loads `latest_weights()` = (object ref, version)."""
    model = for_workers(model)
    on_cpu = engine.num_gpus == 0 and engine.tensor_parallel_size == 1
    cores = core_plan(max_replicas, engine.cpu_cores) if on_cpu else [None] * max_replicas
    remote_cls = ray.remote(actor_cls)

    def spawn(slot: int) -> Spawned:
        opts, demand, release = engine_placement(engine)
        slot_cores = cores[slot % len(cores)]
        pinned = slot_cores and engine.in_process is not False      # in-process CPU engine: pin its OpenMP threads
        opts["runtime_env"] = actor_env(omp_binding_env(slot_cores) if pinned else None)
        latest = latest_weights()
        extra = (20, latest[0], latest[1]) if latest else ()
        actor = remote_cls.options(**opts).remote(model, engine, slot_cores, *extra, **actor_kwargs)
        return Spawned(actor, demand, release)
    return spawn


def engine_pool(name: str, model: str, engine: EngineConfig, pool: PoolConfig | None = None,
                events: Callable[[dict], None] | None = None,
                latest_weights: Callable[[], tuple | None] = lambda: None, **actor_kwargs) -> ReplicaPool:
    pool = pool or PoolConfig()
    spawn = engine_spawner(model, engine, pool.most, latest_weights=latest_weights, **actor_kwargs)
    return ReplicaPool(name, spawn, pool, events)


def sample_seed(base_seed: int, prompt_id: str, index: int) -> int:
    return int(content_id(base_seed, prompt_id, index), 16) % (2 ** 31)


class SamplerGroup:
    """k completions per prompt from a group of vLLM engines, with a recorded seed for each."""

    def __init__(self, model: str, engine: EngineConfig, pool: PoolConfig | None = None, chunk_size: int = 256,
                 events: Callable[[dict], None] | None = None, sleep_mode: bool = False):
        self.latest: tuple | None = None            # (object ref of the weights, version) of the last sync
        self.pool = engine_pool("sampler", model, engine, pool, events, lambda: self.latest,
                                **({"sleep_mode": True} if sleep_mode else {}))
        self.model = model
        self.chunk_size = chunk_size

    def sample(self, prompts: list, k: int, max_tokens: int, temperature: float, top_p: float,
               base_seed: int, policy_name: str | None = None,
               on_done: Callable[[int], None] | None = None) -> tuple[list[dict], list[dict]]:
        """Returns (sample rows, errors). Each prompt has `prompt_id` and `messages`; an error names the
        sample_id the completion would have had."""
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
                errors.append({"prompt_id": prompt_id, "sample_id": content_id(prompt_id, j, seed), "index": j,
                               "error": out["error"]})
                continue
            version = out.get("weight_version", 0)
            name = policy_name or self.model
            rows.append({"prompt_id": prompt_id, "sample_id": content_id(prompt_id, j, seed),
                         "policy": f"{name}@v{version}" if version else name, "text": out["text"], "n_tokens": out["n_tokens"],
                         "logprob": out["logprob"], "finish_reason": out["finish_reason"], "seed": seed,
                         "dtype": out.get("dtype"), "token_ids": out.get("token_ids"),
                         "token_logprobs": out.get("token_logprobs")})
        return rows, errors

    def sync_weights(self, weights_ref, version: int) -> dict:
        """Load the weights behind `weights_ref` (name -> tensor) into every engine, as `version`.
        Returns time, bytes and each engine's reported version."""
        start = time.perf_counter()
        self.latest = (weights_ref, version)
        answers = self.pool.call_all("load_weights", weights_ref, version)
        return {"version": version, "engines": len(answers), "bytes": answers[0]["bytes"] if answers else 0,
                "sync_s": time.perf_counter() - start, "engine_load_s": max((a["load_s"] for a in answers), default=0.0),
                "engine_versions": [a["version"] for a in answers]}

    def load_base_weights(self) -> dict:
        """The weights the engines were built from, back in every engine as version 0 (a sampler shared
        between runs is given back this way)."""
        import torch
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained(for_workers(self.model), dtype=torch.float32)
        return self.sync_weights(ray.put({k: v.detach().clone() for k, v in base.state_dict().items()}), 0)

    def engine_actors(self) -> list:
        """The live engine actors, in slot order."""
        return [r.spawned.actor for r in sorted(self.pool.replicas.values(), key=lambda r: r.slot)]

    def dtype(self) -> str | None:
        return self.pool.dtype()

    def versions(self) -> list[int]:
        return [info["weight_version"] for info in self.pool.call_all("info")]

    def shutdown(self) -> None:
        self.pool.shutdown()
