"""The NCCL weight-sync payloads against vLLM's own parsers and packing code; no GPU needed."""
import math
import subprocess
import sys

import pytest

from synthpref.sampling import weight_receiver
from synthpref.training import weight_sender


def test_module_imports_without_torch_or_vllm():
    code = ("import sys, synthpref.sampling.weight_receiver as m; m.engine_kwargs(); "
            "m.init_info_for_engine('h', 1, 3, 1); "
            "assert not {'torch', 'vllm'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with pytest.raises(ValueError):
        weight_receiver.init_info_for_engine("h", 1, world_size=3, rank_offset=3)   # ranks are 0..2


def test_payloads_parse_and_pack_as_vllms_nccl_engine_expects():
    torch = pytest.importorskip("torch")
    pytest.importorskip("vllm")
    from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferEngine
    from vllm.distributed.weight_transfer.packed_tensor import pack_tensors, unpack_tensor
    from vllm.engine.arg_utils import EngineArgs
    from vllm.config.weight_transfer import WeightTransferConfig

    assert EngineArgs(model="m", **weight_receiver.engine_kwargs()).weight_transfer_config == \
        WeightTransferConfig(backend="nccl")

    engine = object.__new__(NCCLWeightTransferEngine)        # parse_* need no GPU state
    init = engine.parse_init_info(weight_receiver.init_info_for_engine("10.0.0.1", 29500, 5, 3))
    assert (init.master_address, init.master_port, init.rank_offset, init.world_size) == \
        ("10.0.0.1", 29500, 3, 5)
    assert init.nccl_unique_id_bytes is None                 # TCPStore rendezvous mode
    assert (init.packed, init.packed_buffer_size_bytes, init.packed_num_buffers) == \
        (weight_receiver.PACKED, weight_receiver.PACKED_BUFFER_SIZE_BYTES, weight_receiver.PACKED_NUM_BUFFERS)

    named = [("model.embed_tokens.weight", torch.randn(7, 4, dtype=torch.bfloat16)),
             ("model.layers.0.mlp.up_proj.weight", torch.randn(4, 6).t()),      # not contiguous
             ("model.norm.weight", torch.randn(4, dtype=torch.float16)),
             ("lm_head.bias", torch.arange(3, dtype=torch.int64))]
    update = engine.parse_update_info(weight_sender.update_info_for(named))
    assert update.names == [n for n, _ in named]
    # What the worker's consumer does with the update info: size each tensor, then cut the packed bytes.
    dtypes = [getattr(torch, d) for d in update.dtype_names]
    sizes = [math.prod(s) * d.itemsize for s, d in zip(update.shapes, dtypes)]
    assert sizes == [t.numel() * t.element_size() for _, t in named]
    chunk = pack_tensors(iter(named), lambda item: item[1].detach(), buffer_size_bytes=1 << 20)
    received = unpack_tensor(chunk.packed_tensor, update.names, update.shapes, dtypes, sizes)
    for (name, sent), (got_name, got) in zip(named, received):
        assert got_name == name and got.dtype == sent.dtype and torch.equal(got, sent)
