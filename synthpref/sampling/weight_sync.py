"""Loading a trainer's weights into running vLLM engines.

The path STACK.md found to work on vLLM's CPU engine: a worker extension whose method calls the
worker's `reload_weights(weights_iterator=...)` (vLLM then re-packs the weights for its CPU kernels), invoked
through `LLM.collective_rpc` with the path of a safetensors file (tensors passed as RPC arguments arrive
as lists). The weights reach the engine's node through Ray's object store, so trainer and engines may sit
on different nodes; the file lives in /dev/shm (memory) where it exists. GPU clusters can use vLLM's
NCCL weight-transfer engine instead (nccl_sync.py).
"""
from __future__ import annotations

import os
import tempfile
import time

EXTENSION = "synthpref.sampling.weight_sync.WeightReloadExtension"


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
