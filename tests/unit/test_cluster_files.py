"""The cluster files users start from: the cluster-launcher YAML passes Ray's own validation (the schema
`ray up` checks), the KubeRay manifests carry the fields KubeRay needs and take API keys from a Kubernetes
secret, and the Slurm script is valid bash that starts a head, then workers, then runs the job."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.conftest import REPO

CLUSTER = REPO / "cluster"

# what KubeRay (ray.io/v1) needs of a RayCluster spec and of a RayJob
RAYCLUSTER_REQUIRED = ["headGroupSpec.rayStartParams", "headGroupSpec.template.spec.containers",
                       "workerGroupSpecs"]
WORKER_GROUP_REQUIRED = ["groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams",
                         "template.spec.containers"]
CONTAINER_REQUIRED = ["name", "image", "resources.limits"]


def dig(node, dotted: str):
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"missing {dotted!r} (at {part!r})"
        node = node[part]
    return node


def test_the_cluster_launcher_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = yaml.safe_load((CLUSTER / "ray-cluster-aws-8xa100.yaml").read_text())
    validate_config(prepare_config(config))                  # what `ray up` does: defaults merged, then checked
    gpu = config["available_node_types"]["gpu_8x"]
    assert gpu["resources"]["GPU"] == 8 and config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert config["docker"]["image"] and "--gpus all" in config["docker"]["worker_run_options"]
    assert "--gpus all" not in config["docker"]["run_options"]          # the CPU head has no GPU for docker
    with pytest.raises(Exception):                          # the validation is real: a stray key is refused
        validate_config(prepare_config({**config, "not_a_ray_key": 1}))


@pytest.mark.parametrize("name", ["kuberay-rayjob.yaml", "kuberay-raycluster.yaml"])
def test_kuberay_manifests_carry_the_required_fields_and_keys_come_from_a_secret(name):
    text = (CLUSTER / name).read_text()
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"]
    if doc["kind"] == "RayJob":
        assert dig(doc, "spec.entrypoint").startswith("python jobs/run.py ")
        spec = dig(doc, "spec.rayClusterSpec")
    else:
        assert doc["kind"] == "RayCluster"
        spec = doc["spec"]
    assert spec["rayVersion"] == __import__("ray").__version__
    for key in RAYCLUSTER_REQUIRED:
        dig(spec, key)
    containers = list(dig(spec, "headGroupSpec.template.spec.containers"))
    for group in spec["workerGroupSpecs"]:
        for key in WORKER_GROUP_REQUIRED:
            dig(group, key)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        containers += dig(group, "template.spec.containers")
        assert any("nvidia.com/gpu" in c["resources"]["limits"] for c in dig(group, "template.spec.containers"))
    for c in containers:
        for key in CONTAINER_REQUIRED:
            dig(c, key)
        keys = [e for e in c.get("env", []) if e["name"].endswith("_API_KEY")]
        assert keys and all("secretKeyRef" in e["valueFrom"] and "value" not in e for e in keys), c["name"]
    assert not re.search(r"sk-[A-Za-z0-9]{8,}", text)       # no literal key anywhere


def test_the_slurm_script_is_valid_bash_that_starts_head_then_workers_then_the_job():
    path = CLUSTER / "slurm-ray.sbatch"
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    text = path.read_text()
    assert {"--nodes", "--gpus-per-node", "--ntasks-per-node"} <= set(re.findall(r"#SBATCH (--[a-z-]+)", text))
    head, worker, job = (text.index(s) for s in ("ray start --head", "ray start --address", "python jobs/run.py"))
    assert head < worker < job and "ray stop" in text[job:]


def test_the_sizing_table_in_the_docs_is_what_bench_sizing_prints():
    import sys
    out = subprocess.run([sys.executable, str(REPO / "bench" / "sizing.py"), "--markdown"], capture_output=True,
                         text=True, check=True).stdout.strip()
    docs = (REPO / "docs" / "cluster.md").read_text()
    shown = docs.split("<!-- sizing:begin -->")[1].split("<!-- sizing:end -->")[0].strip()
    assert shown == out, "docs/cluster.md's sizing table is stale: rerun bench/sizing.py --markdown"
    rows = [line.split("|")[1:-1] for line in out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [8, 64, 512]
    for r in rows:                                          # every GPU is used: engines + judge GPUs = budget
        engines, judges = int(r[1]), int(r[2].split("(")[0])
        assert engines + judges == int(r[0]) and float(r[5]) > 0


def test_sizing_balances_sampling_against_judging():
    import importlib.util
    spec = importlib.util.spec_from_file_location("sizing", REPO / "bench" / "sizing.py")
    sizing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sizing)
    args = sizing.parse(["--gpus", "64"])
    best = sizing.label_split(64, args)
    work = sizing.per_label(args)
    assert work["sampled_tokens"] == 4 * 512 / 6 and work["judge_calls"] == 2
    # one judge replica more or fewer than the chosen split gives no more labels per hour
    for replicas in (best["judge_replicas"] - 1, best["judge_replicas"] + 1):
        engines = 64 - replicas
        rate = min(engines * args.policy_tok_s / work["sampled_tokens"],
                   replicas / sizing.judge_seconds_per_label(args, work)) * 3600
        assert rate <= best["labels_per_hour"] + 1e-6
