"""Where engines go: cores on CPU (disjoint OpenMP bindings), GPUs and placement groups on clusters."""
from __future__ import annotations

import os
from typing import Any, Callable

from synthpref.config import EngineConfig


def local_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _cores_text(cores: list[int]) -> str:
    if cores == list(range(cores[0], cores[-1] + 1)) and len(cores) > 1:
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(str(c) for c in cores)


def parse_cores(text: str) -> list[int]:
    """ "0-3,6" -> [0, 1, 2, 3, 6] (the syntax of VLLM_CPU_OMP_THREADS_BIND and taskset)."""
    cores: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        cores += list(range(int(lo), int(hi or lo) + 1))
    return cores


def omp_binding_env(cores: str) -> dict[str, str]:
    """OpenMP settings that pin an engine's threads to `cores`. They must be in the environment when the
    process starts (the OpenMP runtime reads them when torch loads it), so an in-process CPU engine gets
    them through its actor's runtime env; vLLM's own engine process sets the same ones when it spawns."""
    listed = parse_cores(cores)
    return {"OMP_NUM_THREADS": str(len(listed)), "OMP_PLACES": "{" + ",".join(map(str, listed)) + "}",
            "OMP_PROC_BIND": "true"}


def core_plan(n_engines: int, setting: str = "auto", cores: list[int] | None = None) -> list[str | None]:
    """Cores for each CPU engine of a group.

    "auto" splits the machine's cores into n contiguous, disjoint sets (one core each when there are
    as many engines as cores); with more engines than cores they share round-robin. Any other value
    (e.g. "0-1") is used for every engine as given; "none" leaves vLLM's own binding.
    """
    if setting == "none":
        return [None] * n_engines
    if setting != "auto":
        return [setting] * n_engines
    cores = cores or local_cores()
    if n_engines >= len(cores):
        return [str(cores[i % len(cores)]) for i in range(n_engines)]
    per, extra = divmod(len(cores), n_engines)
    plan, start = [], 0
    for i in range(n_engines):
        size = per + (1 if i < extra else 0)
        plan.append(_cores_text(cores[start:start + size]))
        start += size
    return plan


def engine_placement(engine: EngineConfig) -> tuple[dict[str, Any], dict[str, float], Callable[[], None]]:
    """Ray options for one engine actor, the resources it needs (for error messages) and a function
    that frees what it reserved. Tensor parallelism reserves one GPU bundle per shard in a STRICT_PACK
    placement group (vLLM's Ray executor places its workers there); the pool's start timeout bounds the
    wait for it, since a pending placement group waits forever by default."""
    opts: dict[str, Any] = {"num_cpus": engine.num_cpus, "max_concurrency": 1}
    if engine.tensor_parallel_size > 1:
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        bundles = [{"GPU": 1, "CPU": 1} for _ in range(engine.tensor_parallel_size)]
        pg = placement_group(bundles, strategy="STRICT_PACK")
        opts["num_gpus"] = 0
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            placement_group=pg, placement_group_capture_child_tasks=True)
        demand = {"GPU": float(engine.tensor_parallel_size), "CPU": float(engine.tensor_parallel_size)}
        return opts, demand, lambda: remove_placement_group(pg)
    demand = {"CPU": float(engine.num_cpus)}
    if engine.num_gpus > 0:
        opts["num_gpus"] = engine.num_gpus
        demand["GPU"] = float(engine.num_gpus)
    return opts, demand, lambda: None
