"""Starting or joining Ray for a job, and the runtime env every worker actor gets."""
from __future__ import annotations

import os

import ray

from synthpref.cluster import worker_logs
from synthpref.config import RayConfig


def init_ray(cfg: RayConfig, min_cpus: int = 1, log_to_driver: bool = True) -> bool:
    """Join the cluster at cfg.address (or $RAY_ADDRESS, as set for a submitted Ray job), else start a
    fresh local one. Returns True if we started it.

    No job-wide runtime env is passed: a submitted job already has one (`--runtime-env`, `--working-dir`)
    and Ray refuses to merge a second one into it. The settings our actors need travel in each actor's
    own runtime env (`actor_env`), which Ray merges with the job's. `log_to_driver=False` (quiet runs) keeps
    worker output out of the terminal; the workers write it to the job's log folder instead."""
    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=cfg.namespace, log_to_driver=log_to_driver)
        return False
    num_cpus = cfg.num_cpus or max(min_cpus, os.cpu_count() or 1)
    ray.init(address="local", num_cpus=num_cpus, namespace=cfg.namespace, include_dashboard=False,
             log_to_driver=log_to_driver,
             **({"_metrics_export_port": cfg.metrics_export_port} if cfg.metrics_export_port else {}))
    return True


def actor_env(extra: dict[str, str] | None = None) -> dict:
    """A worker actor's runtime env: engine chatter at WARNING unless the user asked for more, the job's
    log folder (worker_logs.py), plus `extra`."""
    env = {"VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"), **worker_logs.env(), **(extra or {})}
    return {"env_vars": env}
