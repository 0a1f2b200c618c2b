"""The cluster recipes parse and say what cluster/README.md promises: a CPU head, an autoscaling
GPU worker group, token auth, loopback dashboards, the pinned versions, shared storage."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from search.cli import build_parser
from search.config import parse_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"


def _pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {m.group(1): m.group(2) for d in deps if (m := re.match(r"([a-z\[\]_-]+)==([\w.]+)$", d))}


def _docs(name: str) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((CLUSTER / "k8s" / name).read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert len(set(kinds)) == len(kinds)
    return {d["kind"]: d for d in docs}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _check_ray_cluster_spec(spec: dict[str, Any], docs: dict[str, dict[str, Any]]) -> None:
    assert spec["rayVersion"] == _pins()["ray[tune]"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # trials never land on the head
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    head_limits = head["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits
    (gpu,) = spec["workerGroupSpecs"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"] and gpu["maxReplicas"] >= 1
    res = gpu["template"]["spec"]["containers"][0]["resources"]
    assert int(res["limits"]["nvidia.com/gpu"]) >= 1
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
    images = {c["image"] for c in _containers(spec)}
    assert len(images) == 1
    # Every Ray pod mounts the shared volume at /mnt/shared, and is selected by the NetworkPolicy.
    policy = docs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]
    for group in [head, gpu]:
        pod = group["template"]
        assert policy.items() <= pod["metadata"]["labels"].items()
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims == {"peftsweep-shared"}
        mounts = {m["mountPath"] for c in pod["spec"]["containers"] for m in c["volumeMounts"]}
        assert "/mnt/shared" in mounts
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_raycluster_manifest():
    docs = _docs("raycluster.yaml")
    assert set(docs) == {"PersistentVolumeClaim", "RayCluster", "NetworkPolicy"}
    rc = docs["RayCluster"]
    assert rc["apiVersion"] == "ray.io/v1"
    _check_ray_cluster_spec(rc["spec"], docs)
    assert rc["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert docs["PersistentVolumeClaim"]["metadata"]["name"] == "peftsweep-shared"
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_rayjob_manifest_runs_a_valid_launch_of_a_valid_sweep():
    docs = _docs("rayjob.yaml")
    assert set(docs) == {"ConfigMap", "RayJob", "NetworkPolicy"}
    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    _check_ray_cluster_spec(spec["rayClusterSpec"], docs)
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1
    assert spec["submitterPodTemplate"]["metadata"]["labels"]["peftsweep/driver"] == "true"

    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "peftsweep"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "launch" and args.address == "auto" and args.resume
    # The config it names is the ConfigMap's, mounted on the head, and it is a valid sweep whose
    # output_dir is on the shared volume and whose trials share GPUs.
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = head["containers"][0]["volumeMounts"]
    cm_mount = next(m["mountPath"] for m in mounts if m["name"] == "sweep-config")
    cm_volume = next(v for v in head["volumes"] if v["name"] == "sweep-config")
    assert cm_volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    key = Path(args.config).relative_to(cm_mount).as_posix()
    config = parse_config(yaml.safe_load(docs["ConfigMap"]["data"][key]), source="rayjob ConfigMap")
    assert config.output_dir.startswith("/mnt/shared/")
    assert 0 < config.budget.gpus_per_trial < 1 and config.budget.max_failures >= 1


def test_ray_up_config_passes_rays_schema():
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(cfg))  # Ray's own JSON schema + its consistency checks

    types = cfg["available_node_types"]
    head, gpu = types[cfg["head_node_type"]], types["gpu_worker"]
    assert head["resources"]["CPU"] == 0
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"] <= cfg["max_workers"]
    assert gpu["resources"]["GPU"] >= 1
    head_cmd = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmd and "0.0.0.0" not in yaml.safe_dump(cfg)
    run = " ".join(cfg["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in run
    token_path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", run).group(1)  # type: ignore[union-attr]
    assert token_path in cfg["file_mounts"]  # the same token file lands on every node
    assert all("$RAY_HEAD_IP" in c for c in cfg["worker_start_ray_commands"] if "ray start" in c)


def test_dockerfile_builds_detectron2_from_source_and_installs_with_install_sh():
    text = (CLUSTER / "docker" / "Dockerfile").read_text()
    pins = _pins()
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert len(stages) == 2 and all(s.startswith("nvidia/cuda:") for s in stages)
    assert f"torch=={pins['torch']}" in text and f"torchvision=={pins['torchvision']}" in text
    assert "github.com/facebookresearch/detectron2" in text and "--no-build-isolation" in text
    assert "FORCE_CUDA=1" in text and "import detectron2, detectron2._C" in text
    # install.sh runs after detectron2 is importable, into the same venv, so it keeps it.
    assert text.index("--no-build-isolation") < text.index("bash cluster/install.sh")
    assert re.search(r"PEFTSWEEP_VENV=/opt/venv", text)
    assert "PEFTSWEEP_VENV" in (CLUSTER / "install.sh").read_text()
    assert re.search(r"^USER ray$", text, flags=re.M)
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
        for path in src.split():
            assert (REPO / path).exists(), path
    ignore = (CLUSTER / "docker" / "Dockerfile.dockerignore").read_text()
    assert "**" in ignore.splitlines() and "!search/**" in ignore
