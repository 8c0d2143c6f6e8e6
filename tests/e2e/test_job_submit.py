"""`ray job submit` exactly as the README documents it, to a head and a worker node started the documented
way (cluster/local_multinode.sh). It once failed: the driver passed a runtime env that clashed with the
job's, and `python` in the job was the system interpreter."""
import json
import os
import re
import shutil
import socket
import subprocess

import psutil
import pyarrow.parquet as pq
import pytest

from synthpref.models.precision import DTYPES
from tests.conftest import REPO
from tests.helpers import cluster_script_module

stop_local = cluster_script_module("stop_local")

pytestmark = pytest.mark.e2e
SUBMIT = ('RAY_AUTH_MODE=token .venv/bin/ray job submit --address http://127.0.0.1:8269 --working-dir . '
          '--runtime-env jobs/runtime_env.yaml -- python jobs/run.py --chdir "$PWD" label --config configs/ci-tiny.yaml')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def documented_commands() -> str:
    """The README's shell lines with their continuations joined and spaces collapsed."""
    return " ".join((REPO / "README.md").read_text().replace("\\\n", " ").split())


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def local_cluster(tmp_path):
    """A head and a worker node on free ports, stopped (only they) afterwards."""
    ports = {name: free_port() for name in ("RAY_PORT", "RAY_DASHBOARD_PORT", "RAY_CLIENT_PORT", "RAY_AGENT_PORT",
                                            "RAY_WORKER_AGENT_PORT")}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({k: str(v) for k, v in ports.items()}, RAY_TEMP_DIR=f"/tmp/sp-ray-{ports['RAY_PORT']}")
    script = str(REPO / "cluster" / "local_multinode.sh")
    start = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout[-3000:] + start.stderr[-3000:]
        yield ports
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120)
        left = [p.pid for p in stop_local.cluster_processes(env["RAY_TEMP_DIR"], str(ports["RAY_PORT"])) if alive(p)]
        shutil.rmtree(env["RAY_TEMP_DIR"], ignore_errors=True)
        assert not left, f"processes of the stopped cluster still alive: {left}"


def test_documented_job_submit_labels_the_ci_tiny_job(local_cluster, tmp_path):
    from synthpref.data.demo_prompts import write_demo_prompts
    from synthpref.models.tiny import ensure_tiny_model

    assert SUBMIT in documented_commands(), "the README no longer documents this job submission"
    # what `make demo` builds and ci-tiny.yaml reads (runs/demo), in a folder of the test's own
    ensure_tiny_model(tmp_path / "runs" / "demo" / "models" / "policy", seed=1)
    ensure_tiny_model(tmp_path / "runs" / "demo" / "models" / "judge", seed=2)
    write_demo_prompts(tmp_path / "runs" / "demo" / "prompts.jsonl")
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs" / "ci-tiny.yaml", tmp_path / "configs")
    command = SUBMIT.replace(":8269", f":{local_cluster['RAY_DASHBOARD_PORT']}").replace('"$PWD"', str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", log), log[-3000:]

    out = tmp_path / "runs" / "ci-tiny"
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["prompts"] == 8 and c["samples"] == 16 and c["pairs"] == 8
    assert c["judgments"] == 32                                  # 8 pairs x 2 model-judge orders x 2 judges
    assert c["preferences"] + c["ties"] + c["failed_pairs"] == 8 and c["preferences"] > 0
    assert pq.read_table(out / "preferences").num_rows == c["preferences"]
    assert set(summary["dtypes"]) == {"sampler", "judge:tiny"} and set(summary["dtypes"].values()) <= set(DTYPES)
    assert f"precision: sampler {summary['dtypes']['sampler']}" in log       # the job printed what it ran
