"""Weight sync: a trainer's gathered weights served by running vLLM engines, with their version."""
import os
import signal

import pytest
import ray
import torch

from synthpref.config import EngineConfig, PoolConfig
from synthpref.data.readers import PromptRow

pytestmark = pytest.mark.integration


def greedy(group, prompts):
    rows, errors = group.sample(prompts, k=1, max_tokens=12, temperature=0.0, top_p=1.0, base_seed=0)
    assert not errors
    return [r["text"] for r in rows], [r["policy"] for r in rows]


def native_bf16() -> bool:
    from synthpref.models.precision import cpu_flags, native_bf16_cpu
    return native_bf16_cpu(cpu_flags())


# Trainer and engine run one dtype, so the engine's weights can equal the trainer's gather exactly. The
# bf16 run is the path `dtype: auto` takes on CPUs with AVX512-BF16 or AMX; elsewhere it is skipped.
@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.skipif(
    not native_bf16(), reason="this CPU has no AVX512-BF16/AMX: the bf16 path (auto's choice there) is not run here"))])
def test_trained_weights_reach_the_engines(ray_session, tiny_model, dtype):
    from synthpref.models.loading import load_tokenizer
    from synthpref.sampling.group import SamplerGroup
    from synthpref.training.batches import collate, encode
    from synthpref.training.group import TrainerGroup

    prompts = [PromptRow(prompt_id=f"p{i}", messages=[{"role": "user", "content": f"say something {i}"}],
                         source="test") for i in range(3)]
    trainer = TrainerGroup(tiny_model, world_size=2, zero_stage=3, lr=2e-2, num_cpus=0.5, dtype=dtype, wait=False)
    sampler = SamplerGroup(tiny_model, EngineConfig(max_model_len=256, dtype=dtype), PoolConfig(replicas=1), chunk_size=8)
    trainer.ready()
    assert trainer.dtype == dtype and sampler.dtype() == dtype
    try:
        before, names = greedy(sampler, prompts)
        assert sampler.versions() == [0] and all(n == tiny_model for n in names)
        tok = load_tokenizer(tiny_model)
        batch = collate([encode(tok, p.messages, "zzzz zzzz zzzz", 64) for p in prompts], tok.pad_token_id)
        for _ in range(8):
            trainer.train_sft(batch)
        ref = trainer.full_state_dict_ref()
        stats = sampler.sync_weights(ref, version=1)
        assert stats["engine_versions"] == [1] and sampler.versions() == [1]
        state = ray.get(ref)
        assert stats["bytes"] == sum(t.numel() * t.element_size() for t in state.values())
        engine_sum = ray.get(sampler.pool.replicas[0].spawned.actor.first_parameter_sum.remote())
        assert state["model.embed_tokens.weight"].dtype == getattr(torch, dtype)
        assert engine_sum == pytest.approx(float(state["model.embed_tokens.weight"].float().sum()), rel=1e-6)
        after, names = greedy(sampler, prompts)
        assert after != before and all(n == f"{tiny_model}@v1" for n in names)
        assert sum(t.count("z") for t in after) > sum(t.count("z") for t in before) + 6
        if dtype != "float32":
            return                    # the replacement below does not depend on the dtype: run it once
        # a replica lost after the sync is replaced by one that loads the latest weights when it starts
        os.kill(ray.get(sampler.pool.replicas[0].spawned.actor.info.remote())["pid"], signal.SIGKILL)
        again, names = greedy(sampler, prompts)
        assert sampler.pool.stats["replaced"] == 1 and sampler.versions() == [1]
        assert again == after and all(n == f"{tiny_model}@v1" for n in names)
    finally:
        trainer.shutdown()
        sampler.shutdown()
