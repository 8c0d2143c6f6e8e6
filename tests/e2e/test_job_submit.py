"""`ray job submit` exactly as the README documents it, to a head and two worker nodes started the documented
way (cluster/local_multinode.sh); it once failed: the driver passed a runtime env that clashed with the
job's, and `python` in the job was the system interpreter. Then, on the same cluster, worker nodes added for
a test and killed (node loss in a label job and in an rft job), and `ray job stop` of a running job."""
import json
from pathlib import Path
import os
import re
import shutil
import socket
import subprocess
import time

import psutil
import pyarrow.parquet as pq
import pytest

from synthpref.models.precision import DTYPES
from tests.conftest import REPO
from tests.helpers import cluster_script_module, finished_units

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
               RAY_HEAD_CPUS="0", RAY_WORKERS="2", RAY_WORKER_CPUS="1", SYNTHPREF_SYNC_INTERVAL_S="1")
    script = str(REPO / "cluster" / "local_multinode.sh")
    start = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout[-3000:] + start.stderr[-3000:]
        yield ports
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=120)
        left = [p.pid for p in stop_local.cluster_processes(env["RAY_TEMP_DIR"], str(ports["RAY_PORT"])) if alive(p)]
        for folder in [env["RAY_TEMP_DIR"], f"{env['RAY_TEMP_DIR']}-staging",
                       *(f"{env['RAY_TEMP_DIR']}-w{i}" for i in range(4))]:   # 2, 3: added
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


# -- node loss and `ray job stop` (issue: losing a node without losing data) ---------------------------------
NO_WAIT = SUBMIT.replace("ray job submit", "ray job submit --no-wait")


def ray_cli(ports, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", PATH=f"{REPO / '.venv' / 'bin'}:{env['PATH']}")
    return subprocess.run(["ray", *args, "--address", f"http://127.0.0.1:{ports['RAY_DASHBOARD_PORT']}"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def start_extra_node(ports, index: int, cpus: int) -> str:
    """One more worker node (temp dir TEMP_DIR-w{index}, resource extra_node_{index}); returns its node id."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", PATH=f"{REPO / '.venv' / 'bin'}:{env['PATH']}",
               SYNTHPREF_STAGING_DIR=f"{temp_dir(ports)}-staging/w{index}")        # its own "disk"
    start = subprocess.run(["ray", "start", f"--address=127.0.0.1:{ports['RAY_PORT']}", f"--num-cpus={cpus}",
                            f"--resources={json.dumps({f'extra_node_{index}': 1})}",
                            f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp_dir(ports)}-w{index}",
                            "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    found: list = []

    def registered() -> bool:
        listed = ray_cli(ports, "list", "nodes", "--format", "json", "--detail").stdout.strip()
        found[:] = [n for n in (json.loads(listed) if listed.startswith("[") else [])
                    if n["state"] == "ALIVE" and f"extra_node_{index}" in n["resources_total"]]
        return len(found) == 1
    wait_for(registered, f"worker node {index} registered", 60)
    return found[0]["node_id"]


def temp_dir(ports) -> str:
    return f"/tmp/sp-ray-{ports['RAY_PORT']}"


def kill_node(ports, index: int) -> int:
    """SIGKILL worker node `index`: its raylet, agents and every worker process under them (engines and
    trainer ranks included), as when a machine dies. Returns how many processes were killed."""
    folder = f"{temp_dir(ports)}-w{index}"
    daemons = [p for p in psutil.process_iter(["cmdline"])
               if any(folder + "/" in part or part.endswith("=" + folder) for part in p.info["cmdline"] or [])]
    victims = {p.pid: p for p in daemons}
    for p in daemons:
        try:
            victims.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            pass
    for p in victims.values():
        try:
            p.kill()
        except psutil.Error:
            pass
    assert daemons, f"no process of node {folder} found"
    return len(victims)


def wait_for(condition, what: str, timeout: float = 300):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.2)


def job_id_of(log: str) -> str:
    return re.search(r"(raysubmit_\w+)", log).group(1)


def job_status(ports, job_id: str) -> str:
    out = re.sub(r"\x1b\[[0-9;]*m", "", ray_cli(ports, "job", "status", job_id).stdout)     # no colour codes
    found = re.search(r"Status for job '\w+': (PENDING|RUNNING|STOPPED|SUCCEEDED|FAILED)", out) or \
        re.search(r"Job '\w+' (succeeded|failed|was stopped|stopped)", out)          # how it reports an ended job
    return {"was stopped": "STOPPED"}.get(found.group(1), found.group(1).upper()) if found else "UNKNOWN"


def metrics(out) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_label_job_survives_losing_a_worker_node_with_every_row_once(local_cluster, workdir):
    """Three sampler replicas, one on each worker node (a third node, added for this test, is the one lost);
    the node is killed after the first shard: the job finishes on the other two with every row exactly once
    and the loss, with the node's id, in metrics.jsonl."""
    extra = start_extra_node(local_cluster, 2, cpus=1)
    out = workdir / "runs" / "node-loss"
    command = NO_WAIT.replace('"$PWD"', str(workdir)).replace(
        "configs/ci-tiny.yaml", "configs/ci-tiny.yaml output_dir=runs/node-loss data.limit=24 policy.pool.replicas=3 "
        "policy.max_tokens=48 'judging.judges=[{id: words, type: function, function: "
        "\"synthpref.judging.functions:distinct_words\"}]'")
    job = job_id_of(submit_no_wait(local_cluster, command))
    wait_for(lambda: any(e["event"] == "shard" for e in metrics(out)), "the first shard", 300)
    ready = {e["node_id"] for e in metrics(out) if e["event"] == "replica_ready" and e["pool"] == "sampler"}
    assert extra in ready and len(ready) == 3, ready                 # one replica per worker node
    kill_node(local_cluster, 2)
    wait_for(lambda: job_status(local_cluster, job) in ("SUCCEEDED", "FAILED", "STOPPED"), "the job's end", 300)
    assert job_status(local_cluster, job) == "SUCCEEDED", ray_cli(local_cluster, "job", "logs", job).stdout[-4000:]
    events = metrics(out)
    lost = [e for e in events if e["event"] == "replica_lost"]
    assert lost and {e["node_id"] for e in lost} == {extra}, lost
    samples = pq.read_table(out / "samples").to_pylist()
    assert len(samples) == 48 and len({s["sample_id"] for s in samples}) == 48          # 24 prompts x 2, once each
    assert sorted({s["prompt_id"] for s in samples}) == sorted(r["prompt_id"] for r in pq.read_table(out / "prompts").to_pylist())
    prefs = pq.read_table(out / "preferences").to_pylist()
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["pairs"] == 24 and c["preferences"] + c["ties"] + c["failed_pairs"] == 24 and c["sampling_errors"] == 0
    assert len(prefs) == c["preferences"] and len({p["pair_id"] for p in prefs}) == len(prefs)


def submit_no_wait(ports, command: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = command.replace(":8269", f":{ports['RAY_DASHBOARD_PORT']}")
    proc = subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


def test_an_rft_job_stops_naming_a_lost_trainer_node_then_resumes_when_resubmitted(local_cluster, workdir):
    """The trainer rank needs 2 CPUs, which only an added node has; that node is killed after iteration 1's
    checkpoint. The job stops within train.rank_timeout_s with an error naming the rank's node (no hang);
    resubmitted with 1-CPU ranks (a placement key: the same run), it resumes after iteration 1 and records
    every iteration once.
    Its output_dir is a URI (a file:// one, another folder than any node's): every node keeps its own local
    copy (SYNTHPREF_STAGING_DIR, one per node), so the checkpoint the lost node wrote reaches the resumed
    rank, on another node, only through the URI."""
    extra = start_extra_node(local_cluster, 3, cpus=2)
    out = workdir / "bucket" / "rft-node-loss"
    base = SUBMIT.replace('"$PWD"', str(workdir)).replace(
        "label --config configs/ci-tiny.yaml", f"rft --config configs/train/rft-demo.yaml output_dir=file://{out} "
        "iterations=3 prompts_per_iteration=4 policy.samples_per_prompt=2 policy.max_tokens=16 kl_prompts=0 "
        "train.rank_timeout_s=240")
    job = job_id_of(submit_no_wait(local_cluster, base.replace("ray job submit", "ray job submit --no-wait")
                                   + " train.num_cpus=2"))
    staging = Path(f"{temp_dir(local_cluster)}-staging")

    def driver_copy() -> Path:                # the driver's staging folder (iterations take well under 1 s)
        return next((p for p in (staging / "head").glob("rft-node-loss-*") if p.is_dir()), staging / "none")
    wait_for(lambda: finished_units(driver_copy()) >= 1, "iteration 1", 300)
    kill_node(local_cluster, 3)
    killed = time.time()
    wait_for(lambda: job_status(local_cluster, job) in ("SUCCEEDED", "FAILED", "STOPPED"), "the job's end", 300)
    assert time.time() - killed < 240                                  # within train.rank_timeout_s: no hang
    assert job_status(local_cluster, job) == "FAILED"
    logs = ray_cli(local_cluster, "job", "logs", job).stdout
    assert f"trainer group policy: rank 0 (node {extra}) was lost" in logs, logs[-3000:]
    assert next(e for e in metrics(out) if e["event"] == "start")["trainer_nodes"] == [extra]
    at_kill = finished_units(out)                 # the failed job's last pass brought the URI up to date
    assert 1 <= at_kill < 3 and at_kill == finished_units(driver_copy())
    log = submit(local_cluster, base + " train.num_cpus=1")            # resubmitted: resumes
    report = json.loads((out / "report.json").read_text())
    assert [r["iteration"] for r in report["iterations"]] == [1, 2, 3]
    iterations = [e["step"] for e in metrics(out) if e["event"] == "iteration"]
    assert iterations == [1, 2, 3]                                    # every iteration recorded once
    events = metrics(out)
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    assert [events[i]["resumed_after_iteration"] for i in starts] == [0, at_kill]
    sft_steps = [e["step"] for e in events if e["event"] == "sft"]
    assert sft_steps == list(range(1, len(sft_steps) + 1))             # every SFT step recorded once
    samplers = {e["node_id"] for e in events[starts[0] + 1:] if e["event"] == "replica_ready"}   # the resumed run's
    trainers = set(events[starts[1]]["trainer_nodes"])
    assert samplers and trainers and not samplers & trainers            # the resumed run's weights crossed nodes
    assert report["iterations"][1]["sampled_version"] == ["runs/demo/models/policy@v1"]
    logs = ray_cli(local_cluster, "job", "logs", job_id_of(log)).stdout
    assert f"outputs copied to file://{out}" in logs
    assert (out / "policy" / "config.json").exists() and (out / "policy" / "model.safetensors").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir()) == ["iter1", "iter2", "iter3"]
    rank_node = next(f"w{i}" for i in (0, 1) if (staging / f"w{i}").exists())    # the resumed rank's node
    left = [p.name for p in (staging / rank_node).rglob("*") if p.suffix in (".pt", ".safetensors")]
    assert not left, left            # what the rank wrote went to the URI, what it loaded was dropped once loaded
    assert list((driver_copy() / "checkpoints" / "iter3").iterdir()), "the driver's copy is whole"


def engine_processes(ports) -> list[psutil.Process]:
    """vLLM engines of the cluster: engine actors (a CPU engine runs in its actor's process) and any vLLM
    engine-core process on the machine (a GPU engine's own process; orphans included)."""
    found = [p for p in stop_local.cluster_processes(temp_dir(ports), str(ports["RAY_PORT"]))
             if alive(p) and any(key in " ".join(p.cmdline()) for key in ("EngineActor", "RewardModelActor"))]
    for p in psutil.process_iter(["cmdline"]):
        if alive(p) and "EngineCore" in " ".join(p.info["cmdline"] or []) and p not in found:
            found.append(p)
    return found


def test_ray_job_stop_leaves_no_actor_and_no_engine_behind(local_cluster, workdir):
    out = workdir / "runs" / "stopped"
    command = NO_WAIT.replace('"$PWD"', str(workdir)).replace(
        "configs/ci-tiny.yaml", "configs/ci-tiny.yaml output_dir=runs/stopped data.limit=null policy.max_tokens=64")
    job = job_id_of(submit_no_wait(local_cluster, command))
    wait_for(lambda: len([e for e in metrics(out) if e["event"] == "replica_ready"]) >= 2, "both engines ready", 300)
    engines = engine_processes(local_cluster)
    assert len(engines) >= 2
    stop = ray_cli(local_cluster, "job", "stop", job, timeout=180)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert job_status(local_cluster, job) == "STOPPED"

    def nothing_left() -> bool:
        listed = ray_cli(local_cluster, "list", "actors", "--format", "json", "--filter", "state=ALIVE",
                         "--limit", "1000").stdout.strip()
        if not (listed.startswith("No resource") or listed.startswith("[")):
            return False                                            # the state API did not answer: ask again
        actors = [] if listed.startswith("No resource") else json.loads(listed)    # what it prints for none
        return not actors and not any(alive(p) for p in engines) and not engine_processes(local_cluster)
    wait_for(nothing_left, "every actor and engine gone", 60)
    assert not any(alive(p) for p in engines) and not engine_processes(local_cluster)
