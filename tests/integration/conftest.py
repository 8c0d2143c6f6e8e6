"""Session-wide vLLM engines (engine start costs ~20 s each: share them across tests); the session's Ray
is `ray_session` in tests/conftest.py."""
from __future__ import annotations

import pytest

from synthpref.config import EngineConfig, PoolConfig


@pytest.fixture(scope="session")
def sampler_group(ray_session, tiny_model):
    from synthpref.sampling.group import SamplerGroup
    group = SamplerGroup(tiny_model, EngineConfig(max_model_len=512), PoolConfig(replicas=2), chunk_size=4)
    yield group
    group.shutdown()


@pytest.fixture(scope="session")
def judge_group(ray_session, first_judge_model):
    from synthpref.sampling.group import engine_pool
    # float32 pinned: the judge was fine-tuned in fp32 to answer "[[A]]", and bf16 (`auto` on CPUs with
    # AVX512-BF16) rounds its weights enough to change the greedy answer
    group = engine_pool("judge", first_judge_model, EngineConfig(max_model_len=1024, dtype="float32"))
    yield group
    group.shutdown()
