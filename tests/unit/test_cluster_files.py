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
    assert config["docker"]["image"] and "--gpus all" in config["docker"]["run_options"]
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
