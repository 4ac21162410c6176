"""deploy/: every manifest parses and has what the KubeRay and Prometheus Operator CRDs require."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from mapreduce_llm.config import JobSpec
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _documents() if doc["kind"] == kind]


def _pinned_ray() -> str:
    match = re.search(r'"ray\[default\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert match
    return match.group(1)


def _assert_token_auth(container: dict[str, Any]) -> None:
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
    ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "mapreduce-llm-ray-token", "key": "auth_token"}, container["name"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_a_kubernetes_object(path: Path) -> None:
    """Each document has apiVersion, kind and metadata.name."""
    for doc in yaml.safe_load_all(path.read_text()):
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path.name


def test_raycluster_has_a_head_and_a_gpu_worker_group_with_token_auth() -> None:
    """RayCluster: rayVersion as pinned, head and worker templates with containers, GPUs, auth from the Secret."""
    (cluster,) = _of_kind("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["rayVersion"] == _pinned_ray()
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and head["template"]["spec"]["containers"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"  # the dashboard is not exposed outside
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["dashboard"] == 8265 and ports["metrics"] == 8080
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"]
    gpu = [
        c for g in groups for c in g["template"]["spec"]["containers"] if "nvidia.com/gpu" in c["resources"]["limits"]
    ]
    assert gpu
    for container in [*head["template"]["spec"]["containers"], *gpu]:
        _assert_token_auth(container)


def test_rayjob_runs_the_cli_on_the_cluster_with_the_token() -> None:
    """RayJob: an entrypoint that runs the spec with no settings of its own, a cluster to run on, and a
    submitter that sends the token."""
    (job,) = _of_kind("RayJob")
    spec = job["spec"]
    assert shlex.split(spec["entrypoint"]) == ["mapreduce-llm", "run", "job.yaml", "--no-progress"]
    assert spec.get("clusterSelector") or spec.get("rayClusterSpec")
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]
    (submitter,) = spec["submitterPodTemplate"]["spec"]["containers"]
    _assert_token_auth(submitter)
    (config,) = _of_kind("ConfigMap")
    assert yaml.safe_load(config["data"]["job.yaml"])["engine"]["num_gpus_per_replica"] == 1


def test_podmonitor_scrapes_a_port_the_pods_declare() -> None:
    """PodMonitor: its selector matches the Ray pods and its endpoints name declared container ports."""
    (monitor,) = _of_kind("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (cluster,) = _of_kind("RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= head["metadata"]["labels"].items()
    declared = {p["name"] for p in head["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= declared


def test_container_build_uses_the_pinned_ray() -> None:
    """The Containerfile starts from the Ray image of the pinned version and installs the GPU extra."""
    text = (DEPLOY / "Containerfile").read_text()
    assert f"rayproject/ray:{_pinned_ray()}-" in text and '".[gpu]"' in text


def test_the_rayjobs_spec_carries_its_monitoring() -> None:
    """The ConfigMap's job spec is valid and serves /metrics beyond loopback on the port the head declares as
    job-metrics (which the PodMonitor scrapes and the NetworkPolicy opens), and pushes its final figures."""
    (config,) = _of_kind("ConfigMap")
    monitoring = JobSpec.model_validate(yaml.safe_load(config["data"]["job.yaml"])).monitoring
    (cluster,) = _of_kind("RayCluster")
    ports = {
        p["name"]: p["containerPort"]
        for p in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert monitoring.metrics_port == ports["job-metrics"] and monitoring.metrics_host == "0.0.0.0"
    assert monitoring.pushgateway and monitoring.pushgateway.startswith("http://")
    (policy,) = _of_kind("NetworkPolicy")
    opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
    assert monitoring.metrics_port in opened
