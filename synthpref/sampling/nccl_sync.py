"""Push a trainer's full policy weights into running vLLM engines over NCCL.

Untested here: needs CUDA GPUs. It drives vLLM 0.32's weight-transfer engine, NCCL backend
(`vllm/distributed/weight_transfer/nccl_engine.py`, `nccl_common.py`, `packed_tensor.py`): the trainer is
NCCL rank 0 and broadcasts; every worker of every engine (TP x PP x DP of each) holds one rank after it.

Order for the driver (each pair below must overlap in time, or both sides wait for ever):
  setup: `engine_init` on every engine (dispatch, don't wait), then `trainer_init` on the trainer
         (rank 0 hosts the TCPStore the workers connect to; they retry for up to 300 s).
  each sync: `info = update_info_for(named)` (metadata only, no transfer), `engine_receive(llm, info)` on
         every engine (dispatch, don't wait), then `trainer_send(handle, named)`; then wait on all.
Names must be checkpoint (Hugging Face) names, which the engine hands to `model.load_weights`.
"""
from __future__ import annotations

from typing import Any

# Wire parameters both sides must agree on: the trainer uses them in `trainer_send`, the workers get them
# once in `init_info_for_engine` (NCCL engine reads `packed*` from its init info, not per update).
PACKED = True
PACKED_BUFFER_SIZE_BYTES = 256 << 20   # vLLM's default is 1 GiB; each engine GPU holds NUM_BUFFERS of them
PACKED_NUM_BUFFERS = 2


def engine_kwargs() -> dict:
    """Extra `vllm.LLM(...)` kwargs that create the NCCL weight-transfer engine in every GPU worker
    (EngineArgs turns the dict into `WeightTransferConfig(backend="nccl")`)."""
    return {"weight_transfer_config": {"backend": "nccl"}}


def init_info_for_engine(master_address: str, master_port: int, world_size: int,
                         rank_offset: int) -> dict:
    """Init info for one engine, in the fields of vLLM's `NCCLWeightTransferInitInfo`. Its workers take
    ranks `rank_offset + dp_rank * (TP*PP) + worker_rank`: give the first engine 1 and each next engine
    the previous offset plus the previous engine's worker count. `world_size` = 1 + all workers."""
    if not 1 <= rank_offset < world_size:
        raise ValueError(f"rank_offset {rank_offset} must be in [1, world_size={world_size})")
    return {"master_address": str(master_address), "master_port": int(master_port),
            "rank_offset": int(rank_offset), "world_size": int(world_size),
            "packed": PACKED, "packed_buffer_size_bytes": PACKED_BUFFER_SIZE_BYTES,
            "packed_num_buffers": PACKED_NUM_BUFFERS}


def engine_init(llm, init_info: dict) -> None:
    """On the engine actor: every worker of `llm` joins the trainer's NCCL group. Blocks until the whole
    group (trainer included, see `trainer_init`) has joined, so dispatch it before `trainer_init`."""
    from vllm.distributed.weight_transfer.base import WeightTransferInitRequest
    # A bare dict would be read as {"init_info": ...} by LLM.init_weight_transfer_engine; use the request.
    llm.init_weight_transfer_engine(WeightTransferInitRequest(init_info=dict(init_info)))


def engine_receive(llm, update_info: dict) -> None:
    """On the engine actor, with no generation running: receive one full sync and load it. Dispatch it on
    all engines BEFORE `trainer_send`; it blocks inside NCCL until the trainer's broadcast has finished.
    Afterwards the prefix cache is dropped, since its KV blocks were computed with the old weights."""
    from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest
    llm.start_weight_update()                    # layerwise-reload setup; local, no trainer needed
    llm.update_weights(WeightTransferUpdateRequest(update_info=dict(update_info)))
    llm.finish_weight_update()                   # finalize layerwise reload (quantization etc.)
    if not llm.reset_prefix_cache():
        raise RuntimeError("weights updated but the prefix cache could not be reset")


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
