"""The engine side of weight transfer: how a running vLLM engine takes a trainer's new weights.

Two paths, chosen by `engine.weight_transfer` (the trainer side is training/weight_sender.py):
- reload (any device, any node; the path STACK.md found to work on vLLM's CPU engine): a worker extension
  whose method calls the worker's `reload_weights(weights_iterator=...)` (vLLM re-packs the weights for its
  CPU kernels), invoked through `LLM.collective_rpc` with the path of a safetensors file in /dev/shm
  (tensors passed as RPC arguments arrive as lists). The weights reach the engine's node through Ray's
  object store, so trainer and engines may sit on different nodes.
- nccl (GPU engines; untested here, needs CUDA): vLLM 0.32's weight-transfer engine, NCCL backend
  (`vllm/distributed/weight_transfer/nccl_engine.py`, `nccl_common.py`, `packed_tensor.py`). The trainer is
  NCCL rank 0 and broadcasts; every worker of every engine (TP x PP x DP of each) holds one rank after it.
  Each sync: the engines enter `engine_receive` first (dispatch, don't wait), then the trainer sends.
  Names are checkpoint (Hugging Face) names, which the engine hands to `model.load_weights`.
"""
from __future__ import annotations

import os
import tempfile
import time

EXTENSION = "synthpref.sampling.weight_receiver.WeightReloadExtension"


class WeightReloadExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`): methods callable by collective_rpc."""

    def load_weights_file(self, path: str) -> int:
        from safetensors import safe_open

        def weights():
            with safe_open(path, framework="pt") as fh:
                for name in fh.keys():
                    yield name, fh.get_tensor(name)
        self.reload_weights(weights_iterator=weights(), is_checkpoint_format=True)
        return 1

    def first_parameter_sum(self) -> float:
        """The sum of the model's first parameter (tests compare it with the trainer's)."""
        param = next(self.model_runner.get_model().parameters())
        return float(param.float().sum())


def state_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def load_into_engine(llm, state: dict) -> dict:
    """Write `state` (name -> tensor) to a safetensors file in memory, reload the engine from it, and drop
    the prefix cache (its KV blocks were computed with the old weights)."""
    from safetensors.torch import save_file

    start = time.perf_counter()
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, path = tempfile.mkstemp(prefix="synthpref-weights-", suffix=".safetensors", dir=folder)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, path)
        llm.collective_rpc("load_weights_file", args=(path,))
    finally:
        os.unlink(path)
    llm.reset_prefix_cache()
    return {"bytes": state_bytes(state), "load_s": time.perf_counter() - start}


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
