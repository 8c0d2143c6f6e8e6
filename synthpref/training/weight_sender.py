"""The trainer side of weight transfer: pushing the policy trainer's weights into the sampler engines,
by the path the engine config names, behind one interface (`weight_sender(...)(version) -> stats`).

- `reload` (any device, any node): the trainer group gathers the full weights (ZeRO-3 aware) into Ray's
  object store; every engine writes them to a file in memory and reloads in place; a replica started
  later loads the latest weights when it starts.
- `nccl` (GPU engines and GPU trainer ranks): trainer rank 0 and every worker of every engine form one
  NCCL group through vLLM's weight-transfer engine; each sync broadcasts the gathered weights GPU to GPU.
  Untested here: needs CUDA GPUs. The engine side is sampling/weight_receiver.py.
"""
from __future__ import annotations

import time
from typing import Any

import ray


class ReloadSender:
    """Weights through Ray's object store; each engine reloads them in place (any device, any node)."""

    def __init__(self, trainer, sampler):
        self.trainer, self.sampler = trainer, sampler

    def __call__(self, version: int) -> dict:
        start = time.perf_counter()
        stats = self.sampler.sync_weights(self.trainer.full_state_dict_ref(), version)
        return {**stats, "total_s": time.perf_counter() - start}


class NCCLSender:
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
        info = self.trainer.gather([self.trainer.actors[0].nccl_update_info.remote()], "nccl_update_info")[0]
        receive = [engine.nccl_receive.remote(info, version) for engine in self.engines]   # first: they block
        send = [actor.nccl_send.remote() for actor in self.trainer.actors]            # all gather, rank 0 sends
        sent = self.trainer.gather(send, "nccl_send")[0]          # a lost rank stops the sync, naming its node
        versions = engines_answer(receive, self.trainer.train_cfg.rank_timeout_s)
        return {"version": version, "engines": len(versions), "bytes": sent["bytes"], "engine_versions": versions,
                "sync_s": time.perf_counter() - start, "engine_load_s": None, "total_s": time.perf_counter() - start}


def engines_answer(refs: list, timeout_s: float) -> list:
    """The engines' answers to an NCCL receive; an engine lost (or silent past `timeout_s`) stops the sync
    with an error naming it, instead of leaving the trainer ranks blocked at the rendezvous."""
    from synthpref.cluster.pool import ACTOR_LOST, PoolError
    done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if pending:
        raise PoolError(f"nccl weight sync: {len(pending)} of {len(refs)} engines did not receive the weights within "
                        f"{timeout_s:g} s (train.rank_timeout_s)")
    try:
        return ray.get(refs)
    except ACTOR_LOST as exc:
        raise PoolError(f"nccl weight sync: an engine was lost: {(str(exc).splitlines() or [''])[-1][:300]}") from exc


def weight_sender(trainer, sampler, engine_cfg) -> ReloadSender | NCCLSender:
    """The sender the engine config names: `sender(version) -> stats` loads the trainer's current weights
    into every sampler engine (stats: bytes, engine_versions, engine_load_s, total_s)."""
    if engine_cfg.weight_transfer == "nccl":
        return NCCLSender(trainer, sampler, engine_cfg.tensor_parallel_size)
    return ReloadSender(trainer, sampler)


# -- on trainer rank 0 (TrainerActor.nccl_*) ---------------------------------------------------
def update_info_for(named_tensors: list[tuple[str, Any]]) -> dict:
    """The update info the engines need for these tensors (fields of vLLM's
    `NCCLWeightTransferUpdateInfo`): names, dtype names (`getattr(torch, name)` gives the dtype back) and
    shapes, in send order. Metadata only: call it before `trainer_send` and ship it to the engines."""
    return {"names": [name for name, _ in named_tensors],
            "dtype_names": [str(t.dtype).removeprefix("torch.") for _, t in named_tensors],
            "shapes": [[int(d) for d in t.shape] for _, t in named_tensors]}


def trainer_init(master_address: str, master_port: int, world_size: int):
    """On the trainer, rank 0, with its CUDA device already current (`torch.cuda.set_device`): open the
    transfer group and return its handle (vLLM's `PyNcclCommunicator`). Binds `master_port` on
    `master_address`; blocks until all `world_size - 1` workers have called in through `engine_init`."""
    from vllm.distributed.weight_transfer.nccl_common import trainer_init as open_endpoint
    group = open_endpoint({"master_address": master_address, "master_port": int(master_port),
                           "world_size": int(world_size)}, rank=0)
    if getattr(group, "disabled", False):        # world_size 1 or no NCCL library: broadcasts would no-op
        raise RuntimeError(f"NCCL weight-transfer group is disabled (world_size={world_size})")
    return group


def trainer_send(handle, named_tensors: list[tuple[str, Any]]) -> dict:
    """On the trainer: broadcast `named_tensors` (full tensors on the handle's CUDA device, in the order
    and with the dtypes/shapes of `update_info_for(named_tensors)`) to every worker, and return that update
    info. The engines must already be inside `engine_receive` with the same update info (dispatch those
    first); this returns once every chunk has left the trainer's buffers."""
    import torch
    from vllm.distributed.weight_transfer.packed_tensor import packed_nccl_broadcast_producer
    info = update_info_for(named_tensors)
    for name, t in named_tensors:
        if t.device != handle.device:
            raise ValueError(f"{name} is on {t.device}; the transfer group is on {handle.device}")
    # The producer packs on its own streams: let the updates queued on this stream land first.
    torch.cuda.current_stream(handle.device).synchronize()
    from synthpref.sampling.weight_receiver import PACKED, PACKED_BUFFER_SIZE_BYTES, PACKED_NUM_BUFFERS
    if PACKED:
        packed_nccl_broadcast_producer(
            iterator=iter(named_tensors), group=handle, src=0,
            post_iter_func=lambda item: item[1].detach(),
            buffer_size_bytes=PACKED_BUFFER_SIZE_BYTES, num_buffers=PACKED_NUM_BUFFERS)
    else:
        stream = torch.cuda.current_stream(handle.device)
        for _, t in named_tensors:
            handle.broadcast(t.detach().contiguous(), src=0, stream=stream)
        stream.synchronize()
    return info


def trainer_close(handle) -> None:
    """Tear down the trainer's side of the group (engines: `llm.shutdown_weight_transfer_engine()`)."""
    handle.destroy()
