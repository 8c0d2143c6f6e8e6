import time

import psutil
import pytest

from synthpref.config import EngineConfig
from tests.helpers import vllm_processes

pytestmark = pytest.mark.integration


def test_killed_actor_leaves_no_engine_processes(ray_session, tiny_model):
    """kill -9 of an engine actor whose EngineCore runs in child processes (the GPU default, here forced on
    CPU): the children must not live on as orphans (STACK.md)."""
    from synthpref.sampling.group import engine_pool

    group = engine_pool("cleanup", tiny_model, EngineConfig(max_model_len=256, kv_cache_gib=1, in_process=False))
    info = {"engine_pids": []}
    try:
        info = group.infos()[0]
        assert info["engine_pids"] and all(psutil.pid_exists(pid) for pid in info["engine_pids"])
        psutil.Process(info["pid"]).kill()                   # the actor dies without shutting its engine down
        deadline = time.time() + 30
        while time.time() < deadline and any(psutil.pid_exists(pid) for pid in info["engine_pids"]):
            time.sleep(0.5)
        alive = [p for p in vllm_processes() if p.pid in info["engine_pids"]]
        assert alive == []
    finally:                                                 # a failed check must not leak the engine either
        group.shutdown()
        for pid in info["engine_pids"]:
            if psutil.pid_exists(pid):
                psutil.Process(pid).kill()
