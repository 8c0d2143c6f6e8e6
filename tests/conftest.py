"""Shared test settings: where the real human-labelled data lives (../shared/data), if present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SYNTHPREF_SHARED_DATA", REPO.parent / "shared" / "data"))
HH_RLHF = SHARED_DATA / "hh-rlhf-harmless-test-dev.jsonl"


def pytest_report_header(config):
    if HH_RLHF.exists():
        return f"shared data: {HH_RLHF}"
    return f"shared data: ABSENT ({HH_RLHF} not found); tests that read hh-rlhf pairs will be skipped"


@pytest.fixture
def hh_rlhf_path() -> Path:
    if not HH_RLHF.exists():
        pytest.skip(f"needs ../shared/data (not found at {HH_RLHF}): hh-rlhf human-labelled pairs are absent here")
    return HH_RLHF


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session. Jobs join it: in-process ones directly, CLI subprocesses through
    RAY_ADDRESS (set here for every process started afterwards), as a submitted Ray job's driver does.
    `tests/e2e/test_job_submit.py` is the test that starts a cluster of its own."""
    import ray

    from synthpref.cluster.ray_setup import init_ray
    from synthpref.config import RayConfig
    os.environ["RAY_metrics_report_interval_ms"] = "1000"       # live metrics reach the endpoint within 1 s
    os.environ["SYNTHPREF_TEST_METRICS_PORT"] = str(free_port())
    init_ray(RayConfig(num_cpus=12, metrics_export_port=int(os.environ["SYNTHPREF_TEST_METRICS_PORT"])))
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    yield
    os.environ.pop("RAY_ADDRESS", None)
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from synthpref.models.tiny import build_tiny_model
    return str(build_tiny_model(tmp_path_factory.mktemp("models") / "policy", seed=0))


@pytest.fixture(scope="session")
def first_judge_model(tmp_path_factory):
    from synthpref.models.tiny import build_tiny_model
    path = str(build_tiny_model(tmp_path_factory.mktemp("models") / "always-first", seed=3))
    from tests.helpers import train_always_first_judge
    train_always_first_judge(path)
    return path


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory):
    from synthpref.models.tiny import build_tiny_model
    return str(build_tiny_model(tmp_path_factory.mktemp("models") / "reward", seed=5, reward=True))
