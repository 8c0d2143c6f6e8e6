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


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    """A head (no CPUs: actors go to the workers) and two 1-CPU worker nodes on free ports, started and
    stopped (only they) by the documented script."""
    ports = {name: free_port() for name in ("RAY_PORT", "RAY_DASHBOARD_PORT", "RAY_CLIENT_PORT", "RAY_AGENT_PORT",
                                            "RAY_WORKER_AGENT_PORT")}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({k: str(v) for k, v in ports.items()}, RAY_TEMP_DIR=f"/tmp/sp-ray-{ports['RAY_PORT']}",
               RAY_HEAD_CPUS="0", RAY_WORKERS="2", RAY_WORKER_CPUS="1")
    script = str(REPO / "cluster" / "local_multinode.sh")
    start = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout[-3000:] + start.stderr[-3000:]
        yield ports
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120)
        left = [p.pid for p in stop_local.cluster_processes(env["RAY_TEMP_DIR"], str(ports["RAY_PORT"])) if alive(p)]
        for folder in [env["RAY_TEMP_DIR"], *(f"{env['RAY_TEMP_DIR']}-w{i}" for i in range(2))]:
            shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"processes of the stopped cluster still alive: {left}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """What `make demo` builds (runs/demo) and the configs, in a folder of the tests' own (--chdir)."""
    from synthpref.data.demo_prompts import write_demo_prompts
    from synthpref.models.tiny import ensure_tiny_model
    root = tmp_path_factory.mktemp("submit")
    ensure_tiny_model(root / "runs" / "demo" / "models" / "policy", seed=1)
    ensure_tiny_model(root / "runs" / "demo" / "models" / "judge", seed=2)
    write_demo_prompts(root / "runs" / "demo" / "prompts.jsonl")
    shutil.copytree(REPO / "configs", root / "configs")
    return root


def submit(ports, command: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = command.replace(":8269", f":{ports['RAY_DASHBOARD_PORT']}")
    proc = subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", log), log[-3000:]
    return log


def nodes_of(out) -> set[str]:
    """The Ray nodes the job's replicas and trainer ranks ran on (from its metrics.jsonl)."""
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    found = {e["node_id"] for e in events if e.get("event") == "replica_ready" and e.get("node_id")}
    return found | {n for e in events if e.get("event") == "start" for n in e.get("trainer_nodes") or []}


def test_documented_job_submit_labels_the_ci_tiny_job(local_cluster, workdir):
    assert SUBMIT in documented_commands(), "the README no longer documents this job submission"
    log = submit(local_cluster, SUBMIT.replace('"$PWD"', str(workdir)))

    out = workdir / "runs" / "ci-tiny"
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["prompts"] == 8 and c["samples"] == 16 and c["pairs"] == 8
    assert c["judgments"] == 32                                  # 8 pairs x 2 model-judge orders x 2 judges
    assert c["preferences"] + c["ties"] + c["failed_pairs"] == 8 and c["preferences"] > 0
    assert pq.read_table(out / "preferences").num_rows == c["preferences"]
    assert set(summary["dtypes"]) == {"sampler", "judge:tiny"} and set(summary["dtypes"].values()) <= set(DTYPES)
    assert f"precision: sampler {summary['dtypes']['sampler']}" in log       # the job printed what it ran
    assert len(nodes_of(out)) == 2                      # sampler and judge engines on the two worker nodes


def test_an_rft_job_submitted_to_three_nodes_trains_across_them(local_cluster, workdir):
    """The trainer rank and the sampler engine land on different worker nodes (each has one CPU), so the
    weights travel between nodes; `ray job logs` shows the job's own summary."""
    command = SUBMIT.replace('"$PWD"', str(workdir)).replace(
        "label --config configs/ci-tiny.yaml", "rft --config configs/train/rft-demo.yaml output_dir=runs/rft-submit "
        "iterations=2 prompts_per_iteration=4 policy.samples_per_prompt=2 policy.max_tokens=16 kl_prompts=0")
    log = submit(local_cluster, command)
    out = workdir / "runs" / "rft-submit"
    report = json.loads((out / "report.json").read_text())
    assert [r["iteration"] for r in report["iterations"]] == [1, 2]
    assert report["iterations"][1]["sampled_version"] == ["runs/demo/models/policy@v1"]
    assert len(nodes_of(out)) == 2
    job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", log).group(1)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    logs = subprocess.run(f"RAY_AUTH_MODE=token .venv/bin/ray job logs --address "
                          f"http://127.0.0.1:{local_cluster['RAY_DASHBOARD_PORT']} {job_id}", shell=True, cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert "policy (Hugging Face format): runs/rft-submit/policy" in logs.stdout

