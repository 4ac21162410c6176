"""deploy/: every manifest validates against the Kubernetes schemas (core kinds, and the pod templates inside the
KubeRay resources) and has what the KubeRay and Prometheus Operator CRDs require; the batch service (service.yaml)
is wired to its Secrets, the RayCluster's head, the shared state volume and the NetworkPolicies. The operator's
token, pod security and egress: test_deploy_security.py."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from mapreduce_llm.config import JobSpec
from tests.conftest import ROOT
from tests.deploy_manifests import (
    DEPLOY,
    MANIFESTS,
    admitted,
    container_ports,
    documents,
    head_pod,
    mount_for,
    named,
    of_kind,
    selects,
)


def _pinned_ray() -> str:
    match = re.search(r'"ray\[default,serve\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
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


KUBERNETES = "1.30.0"
"""The Kubernetes version whose API schemas the manifests are validated against (kubernetes-validate ships them)."""
CUSTOM_KINDS = {"RayCluster", "RayJob", "PodMonitor"}
"""Kinds of KubeRay and the Prometheus Operator: kubernetes-validate has no schema for them and no PyPI package ships
their CRD schemas, so their own fields are checked by the tests below, their pod templates by the schemas."""


def _pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The core pod templates inside a custom resource: a RayCluster's head and worker groups (also inside a
    RayJob's rayClusterSpec), a RayJob's submitter."""
    spec = doc["spec"]
    cluster = spec if doc["kind"] == "RayCluster" else spec.get("rayClusterSpec")
    found = [spec["submitterPodTemplate"]] if "submitterPodTemplate" in spec else []
    if cluster:
        found += [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster.get("workerGroupSpecs", []))]
    return found


@pytest.mark.parametrize("doc", [doc for _, doc in documents()], ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_validates_against_the_kubernetes_schemas(doc: dict[str, Any]) -> None:
    """Core kinds validate strictly (unknown fields fail) against Kubernetes 1.30's schemas, offline; a KubeRay or
    Prometheus Operator resource has no schema there, but the pod templates inside it validate as core PodTemplates."""
    from kubernetes_validate import utils

    if doc["kind"] not in CUSTOM_KINDS:
        assert utils.validate(doc, KUBERNETES, strict=True)
        return
    with pytest.raises(utils.SchemaNotFoundError):  # if a schema ever ships, validate the whole resource instead
        utils.validate(doc, KUBERNETES, strict=True)
    for template in _pod_templates(doc):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
        assert utils.validate(wrapped, KUBERNETES, strict=True)
    assert _pod_templates(doc) or doc["kind"] == "PodMonitor"


def test_raycluster_has_a_head_and_a_gpu_worker_group_with_token_auth() -> None:
    """RayCluster: rayVersion as pinned, head and worker templates with containers, GPUs, auth from the Secret."""
    (cluster,) = of_kind("RayCluster")
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
    (job,) = of_kind("RayJob")
    spec = job["spec"]
    assert shlex.split(spec["entrypoint"]) == ["mapreduce-llm", "run", "job.yaml", "--no-progress"]
    assert spec.get("clusterSelector") or spec.get("rayClusterSpec")
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]
    (submitter,) = spec["submitterPodTemplate"]["spec"]["containers"]
    _assert_token_auth(submitter)
    config = named("ConfigMap", "mapreduce-llm-job")
    assert yaml.safe_load(config["data"]["job.yaml"])["engine"]["num_gpus_per_replica"] == 1


def test_podmonitor_scrapes_a_port_the_pods_declare() -> None:
    """PodMonitor: its selector matches the Ray pods and its endpoints name declared container ports."""
    (monitor,) = of_kind("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (cluster,) = of_kind("RayCluster")
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
    config = named("ConfigMap", "mapreduce-llm-job")
    monitoring = JobSpec.model_validate(yaml.safe_load(config["data"]["job.yaml"])).monitoring
    (cluster,) = of_kind("RayCluster")
    ports = {
        p["name"]: p["containerPort"]
        for p in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert monitoring.metrics_port == ports["job-metrics"] and monitoring.metrics_host == "0.0.0.0"
    assert monitoring.pushgateway and monitoring.pushgateway.startswith("http://")
    policy = named("NetworkPolicy", "mapreduce-llm")
    opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
    assert monitoring.metrics_port in opened


# --- the batch service (service.yaml) -----------------------------------------------------------------------

SERVICE = "mapreduce-llm-service"


def _service_pod() -> dict[str, Any]:
    return named("Deployment", SERVICE)["spec"]["template"]


def _service_container() -> dict[str, Any]:
    (container,) = _service_pod()["spec"]["containers"]
    return container


def _serve_options() -> dict[str, Any]:
    """The container's `mapreduce-llm serve` options as serve's own parser reads them (unknown ones fail)."""
    import click

    from mapreduce_llm.cli.serve import serve

    args = _service_container()["args"]
    assert args[:2] == ["mapreduce-llm", "serve"]
    options, rest, _ = serve.make_parser(click.Context(serve, info_name="serve")).parse_args(list(args[2:]))
    assert not rest
    return options


def test_service_objects_are_wired_together() -> None:
    """Selectors match the service pod, its mounts name existing volumes/claims/ConfigMaps, its image is the head's."""
    deployment = named("Deployment", SERVICE)
    assert deployment["apiVersion"] == "apps/v1"
    pod = _service_pod()
    assert selects(deployment["spec"]["selector"], pod["metadata"]["labels"])
    container = _service_container()
    assert container["image"] == head_pod()["spec"]["containers"][0]["image"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes.keys()
    claims = {c["metadata"]["name"]: c for c in of_kind("PersistentVolumeClaim")}
    config_maps = {c["metadata"]["name"] for c in of_kind("ConfigMap")}
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps
    for claim in claims.values():
        assert claim["apiVersion"] == "v1" and claim["spec"]["resources"]["requests"]["storage"]
    service = named("Service", SERVICE)
    assert service["apiVersion"] == "v1" and service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert selects({"matchLabels": service["spec"]["selector"]}, pod["metadata"]["labels"])


def test_service_listens_where_its_service_and_probes_point() -> None:
    """serve listens on 0.0.0.0:8090, the Service's target, probed by TCP (every HTTP route would answer 401)."""
    options = _serve_options()
    assert options["host"] == "0.0.0.0"
    port = int(options["port"])
    ports = container_ports(_service_pod())
    (service_port,) = named("Service", SERVICE)["spec"]["ports"]
    target = service_port["targetPort"]
    assert (ports[target] if isinstance(target, str) else target) == port == service_port["port"] == 8090
    container = _service_container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "httpGet" not in container[probe], probe
        socket_port = container[probe]["tcpSocket"]["port"]
        assert (ports[socket_port] if isinstance(socket_port, str) else socket_port) == port, probe


def test_service_reads_its_tokens_from_the_secrets() -> None:
    """--token-file is key `token` of Secret mapreduce-llm-service-token (as README makes it); Ray's from its Secret."""
    options = _serve_options()
    token_file = options["token_file"]
    mount, volume = mount_for(_service_pod(), token_file)
    secret = volume["secret"]
    assert secret["secretName"] == "mapreduce-llm-service-token"
    relative = token_file.removeprefix(mount["mountPath"] + "/")
    assert {"key": "token", "path": relative} in secret.get("items", [{"key": relative, "path": relative}])
    mode, security = secret.get("defaultMode", 0o644), _service_pod()["spec"]["securityContext"]
    assert mode & 0o004 or (mode & 0o040 and "fsGroup" in security)  # the non-root user can read it
    container = _service_container()
    assert all("value" not in e for e in container["env"] if "TOKEN" in e["name"])
    _assert_token_auth(container)
    readme = (DEPLOY / "README.md").read_text()
    assert "kubectl create secret generic mapreduce-llm-service-token --from-literal=token=" in readme


def test_service_submits_to_the_head_dashboard_of_the_raycluster() -> None:
    """--ray-address is KubeRay's `<RayCluster name>-head-svc` on the head's dashboard port (the Jobs API)."""
    from urllib.parse import urlsplit

    (cluster,) = of_kind("RayCluster")
    url = urlsplit(_serve_options()["ray_address"])
    assert url.scheme == "http"
    assert url.hostname and url.hostname.split(".")[0] == f"{cluster['metadata']['name']}-head-svc"
    assert url.port == container_ports(head_pod())["dashboard"] == 8265


def test_state_is_one_claim_at_one_path_in_the_service_and_on_thehead_pod() -> None:
    """--state is one ReadWriteMany claim, mounted writable at that same path in the service and on the Ray head."""
    state = _serve_options()["state"]
    assert state.startswith("/")
    mount, volume = mount_for(_service_pod(), state)
    head_mount, head_volume = mount_for(head_pod(), state)
    assert mount["mountPath"] == head_mount["mountPath"] == state
    assert not mount.get("readOnly") and not head_mount.get("readOnly")
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert head_volume["persistentVolumeClaim"]["claimName"] == claim
    assert "ReadWriteMany" in named("PersistentVolumeClaim", claim)["spec"]["accessModes"]


def test_service_has_one_writer_of_its_state() -> None:
    """One replica, replaced with Recreate: two pods never write the (unlocked) state folder at once."""
    spec = named("Deployment", SERVICE)["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"


def test_networkpolicies_admit_the_service_to_the_jobs_api_and_clients_to_the_service() -> None:
    """The service reaches the head's 8265 (even with the namespace rule narrowed); clients 8090; Prometheus 9109."""
    pod, head = _service_pod(), head_pod()
    service_labels = pod["metadata"]["labels"]
    assert admitted(head, 8265, service_labels)
    narrowed = copy.deepcopy(of_kind("NetworkPolicy"))
    for policy in narrowed:
        policy["spec"]["ingress"] = [
            r
            for r in policy["spec"].get("ingress", [])
            if {"podSelector": {}} not in r.get("from", [{"podSelector": {}}])
        ]
    assert admitted(head, 8265, service_labels, policies=narrowed)
    assert not admitted(head, 6379, service_labels, policies=narrowed)
    client = {"mapreduce-llm/client": "true"}
    assert admitted(pod, 8090, client)
    assert admitted(pod, 8090, client, namespace="team-a", namespace_labels=client)
    assert admitted(pod, 9109, {}, namespace="monitoring")
    assert not admitted(pod, 8090, {}, namespace="monitoring")


def test_networkpolicies_keep_other_pods_off_the_service() -> None:
    """Unlabelled pods (Ray's too) and labelled pods of unlabelled namespaces do not reach the service."""
    pod = _service_pod()
    client = {"mapreduce-llm/client": "true"}
    assert not admitted(pod, 8090, {})
    assert not admitted(pod, 8090, head_pod()["metadata"]["labels"])
    assert not admitted(pod, 8090, client, namespace="team-b")
    assert not admitted(pod, 8090, {}, namespace="team-a", namespace_labels=client)
    (policy,) = [p for p in of_kind("NetworkPolicy") if selects(p["spec"]["podSelector"], pod["metadata"]["labels"])]
    assert policy["metadata"]["name"] == SERVICE


def test_service_pod_is_locked_down() -> None:
    """No service account token, non-root, no escalation, no capabilities, read-only root with a writable /tmp."""
    spec = _service_pod()["spec"]
    assert spec["automountServiceAccountToken"] is False
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] > 0
    security = _service_container()["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and not security["capabilities"].get("add")
    assert security["readOnlyRootFilesystem"] is True
    _, tmp = mount_for(_service_pod(), "/tmp")
    assert "emptyDir" in tmp
    assert "resources" in _service_container() and _service_container()["resources"]["limits"]["memory"]


def test_service_spec_is_a_valid_job_spec_for_the_cluster(tmp_path: Path) -> None:
    """--spec is a valid job spec, its model on a volume of head and workers, no fixed metrics port on the head."""
    from mapreduce_llm.service.specs import SpecTemplate

    spec_path = _serve_options()["spec_file"]
    mount, volume = mount_for(_service_pod(), spec_path)
    config = named("ConfigMap", volume["configMap"]["name"])
    local = tmp_path / "spec.yaml"
    local.write_text(config["data"][spec_path.removeprefix(mount["mountPath"] + "/")])
    spec = SpecTemplate(local).build(input=Path("/state/in.jsonl"), output=Path("/state/out"), prompt=None, job_id="j")
    model = str(spec.engine.model)
    (cluster,) = of_kind("RayCluster")
    for pod in [head_pod(), *(g["template"] for g in cluster["spec"]["workerGroupSpecs"])]:
        assert mount_for(pod, model)
    assert spec.monitoring.metrics_port in (None, 0)


def test_service_metrics_are_served_where_prometheus_isadmitted() -> None:
    """serve's /metrics listens beyond loopback on a declared container port the NetworkPolicy opens to Prometheus."""
    options = _serve_options()
    port = int(options["metrics_port"])
    assert options["metrics_host"] == "0.0.0.0"
    assert port in {p["containerPort"] for p in _service_container()["ports"]}
    assert admitted(_service_pod(), port, {}, namespace="monitoring")
    assert not admitted(_service_pod(), port, {"mapreduce-llm/client": "true"}, namespace="team-a")
