"""deploy/: the KubeRay operator can follow a RayJob with token auth on (it has the token and the NetworkPolicy
admits it), Ray's pods run locked down, and their egress goes only where a job needs to."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy_manifests import admitted, egress_allowed, head_pod, named, of_kind, worker_pods

OPERATOR = {"app.kubernetes.io/name": "kuberay-operator"}
OPERATOR_NS = "kuberay-system"


def _ray_containers_token_secrets(cluster: dict[str, Any]) -> set[str]:
    pods = [cluster["spec"]["headGroupSpec"]["template"], *(g["template"] for g in cluster["spec"]["workerGroupSpecs"])]
    return {
        env["valueFrom"]["secretKeyRef"]["name"]
        for pod in pods
        for container in pod["spec"]["containers"]
        for env in container.get("env", [])
        if env["name"] == "RAY_AUTH_TOKEN"
    }


def test_the_operator_has_the_clusters_token() -> None:
    """authOptions turns token auth on for the operator with the Secret every Ray container reads (key auth_token),
    and the RayJob runs on that RayCluster, so the operator can authenticate when it polls the job."""
    (cluster,) = of_kind("RayCluster")
    auth = cluster["spec"]["authOptions"]
    assert auth["mode"] == "token"
    assert _ray_containers_token_secrets(cluster) == {auth["secretName"]}
    (job,) = of_kind("RayJob")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}


def test_the_operator_reaches_the_jobs_api_and_nothing_else() -> None:
    """The operator's pods (in their own namespace) reach the head's 8265; not the GCS, and other pods of that
    namespace do not reach 8265."""
    head = head_pod()
    assert admitted(head, 8265, OPERATOR, namespace=OPERATOR_NS)
    assert not admitted(head, 6379, OPERATOR, namespace=OPERATOR_NS)
    assert not admitted(head, 8265, {"app": "other"}, namespace=OPERATOR_NS)
    assert not admitted(head, 8265, OPERATOR, namespace="elsewhere")


def _pods() -> list[tuple[str, dict[str, Any]]]:
    (job,) = of_kind("RayJob")
    pods = [("head", head_pod()), *(("worker", pod) for pod in worker_pods())]
    return [*pods, ("submitter", job["spec"]["submitterPodTemplate"])]


@pytest.mark.parametrize(("role", "pod"), _pods(), ids=lambda v: v if isinstance(v, str) else "")
def test_ray_pods_run_as_a_user_without_privileges(role: str, pod: dict[str, Any]) -> None:
    """Head, GPU workers and the RayJob submitter: non-root by numeric uid, seccomp RuntimeDefault, and every
    container without privilege escalation or capabilities."""
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] > 0, role
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}, role
    for container in pod["spec"]["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and not context.get("privileged"), role
        assert context["capabilities"]["drop"] == ["ALL"] and not context["capabilities"].get("add"), role


def test_only_the_autoscaling_head_keeps_a_service_account_token() -> None:
    """Workers and the submitter never talk to the Kubernetes API: no token; the head keeps it only for the
    autoscaler."""
    (cluster,) = of_kind("RayCluster")
    (job,) = of_kind("RayJob")
    for pod in [*worker_pods(), job["spec"]["submitterPodTemplate"]]:
        assert pod["spec"]["automountServiceAccountToken"] is False
    head_mounts = head_pod()["spec"].get("automountServiceAccountToken", True)
    assert head_mounts == bool(cluster["spec"].get("enableInTreeAutoscaling"))


DNS = {"labels": {"k8s-app": "kube-dns"}, "namespace": "kube-system"}
PUSHGATEWAY = {"labels": {"app.kubernetes.io/name": "prometheus-pushgateway"}, "namespace": "monitoring"}
RAY = {"app.kubernetes.io/name": "mapreduce-llm"}


@pytest.mark.parametrize(
    "source", [head_pod(), *worker_pods()], ids=lambda p: p["metadata"]["labels"]["app.kubernetes.io/component"]
)
def test_ray_pods_reach_dns_each_other_and_the_pushgateway(source: dict[str, Any]) -> None:
    """Every Ray pod reaches cluster DNS (UDP and TCP 53), every port of the other Ray pods (Ray picks some at
    random), and the Pushgateway that rayjob.yaml pushes to."""
    assert egress_allowed(source, 53, protocol="UDP", **DNS) and egress_allowed(source, 53, **DNS)
    for port in (6379, 8265, 10001, 23456):
        assert egress_allowed(source, port, labels={**RAY, "app.kubernetes.io/component": "gpu-worker"}), port
    assert "prometheus-pushgateway.monitoring.svc:9091" in named("ConfigMap", "mapreduce-llm-job")["data"]["job.yaml"]
    assert egress_allowed(source, 9091, **PUSHGATEWAY)


@pytest.mark.parametrize(
    "source", [head_pod(), *worker_pods()], ids=lambda p: p["metadata"]["labels"]["app.kubernetes.io/component"]
)
def test_ray_pods_reach_nothing_else(source: dict[str, Any]) -> None:
    """No other pod or port: not DNS on another port, not Prometheus, not the batch service, not a Ray-labelled pod
    of another namespace; no address outside the cluster (the head's API-server rule aside, below)."""
    assert not egress_allowed(source, 80, **DNS)
    assert not egress_allowed(source, 9090, labels={"app.kubernetes.io/name": "prometheus"}, namespace="monitoring")
    assert not egress_allowed(source, 9091, labels={"app": "other"}, namespace="monitoring")
    assert not egress_allowed(source, 8090, labels={"app.kubernetes.io/name": "mapreduce-llm-service"})
    assert not egress_allowed(source, 6379, labels=RAY, namespace="team-b")
    assert not egress_allowed(source, 80, ip="93.184.215.14")
    assert not egress_allowed(source, 53, ip="8.8.8.8", protocol="UDP")


def test_only_the_head_reaches_the_kubernetes_api() -> None:
    """The head's autoscaler reaches the API server (443/6443); workers do not, and the head reaches no other port
    outside the cluster."""
    policy = named("NetworkPolicy", "mapreduce-llm-head-kube-api")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert egress_allowed(head_pod(), 443, ip="10.96.0.1") and egress_allowed(head_pod(), 6443, ip="10.0.0.10")
    assert not egress_allowed(head_pod(), 80, ip="10.96.0.1")
    for worker in worker_pods():
        assert not egress_allowed(worker, 443, ip="10.96.0.1")
