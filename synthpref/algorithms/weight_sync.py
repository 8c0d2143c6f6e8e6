"""Pushing the policy trainer's weights into the sampler engines, by the path the engine config names.

- `reload` (any device, any node): the trainer group gathers the full weights (ZeRO-3 aware) into Ray's
  object store; every engine writes them to a file in memory and reloads in place (STACK.md's working
  path); a replica started later loads the latest weights when it starts.
- `nccl` (GPU engines and GPU trainer ranks): trainer rank 0 and every worker of every engine form one
  NCCL group through vLLM's weight-transfer engine; each sync broadcasts the gathered weights GPU to GPU.
  Untested here: needs CUDA GPUs.
"""
from __future__ import annotations

import time

import ray


def sync_by_reload(trainer, sampler, version: int) -> dict:
    start = time.perf_counter()
    stats = sampler.sync_weights(trainer.full_state_dict_ref(), version)
    return {**stats, "total_s": time.perf_counter() - start}


class NCCLWeightSync:
    """One NCCL group of trainer rank 0 (NCCL rank 0) and the engines' workers (ranks 1..), formed once.
    An NCCL group cannot take new members, so a sampler pool whose replicas changed fails the sync."""

    def __init__(self, trainer, sampler, workers_per_engine: int):
        self.trainer, self.sampler = trainer, sampler
        self.engines = sampler.engine_actors()
        world = 1 + len(self.engines) * workers_per_engine
        host, port = ray.get(trainer.actors[0].rendezvous_address.remote()).rsplit(":", 1)
        joins = [engine.nccl_join.remote(host, int(port), world, 1 + i * workers_per_engine)
                 for i, engine in enumerate(self.engines)]                     # they wait for rank 0
        ray.get([trainer.actors[0].nccl_open.remote(host, int(port), world)] + joins)

    def __call__(self, version: int) -> dict:
        start = time.perf_counter()
        if self.sampler.engine_actors() != self.engines:
            raise RuntimeError("nccl weight sync: the sampler pool's replicas changed (a replacement or a scale-up); "
                               "an NCCL group cannot take new members: use weight_transfer: reload, or keep the "
                               "pool fixed (max_replacements: 0)")
        info = ray.get(self.trainer.actors[0].nccl_update_info.remote())
        receive = [engine.nccl_receive.remote(info, version) for engine in self.engines]   # first: they block
        send = [actor.nccl_send.remote() for actor in self.trainer.actors]            # all gather, rank 0 sends
        sent = ray.get(send)[0]
        versions = ray.get(receive)
        return {"version": version, "engines": len(versions), "bytes": sent["bytes"], "engine_versions": versions,
                "sync_s": time.perf_counter() - start, "engine_load_s": None, "total_s": time.perf_counter() - start}


def weight_syncer(trainer, sampler, engine_cfg):
    """A function version -> stats that loads the trainer's current weights into every sampler engine."""
    if engine_cfg.weight_transfer == "nccl":
        return NCCLWeightSync(trainer, sampler, engine_cfg.tensor_parallel_size)
    return lambda version: sync_by_reload(trainer, sampler, version)
