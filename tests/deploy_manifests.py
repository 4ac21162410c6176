"""The manifests of deploy/ as the deploy tests read them, and what their NetworkPolicies let through.

:func:`admitted` (ingress) and :func:`egress_allowed` evaluate the policies as Kubernetes does: a pod no policy of a
direction selects is open in that direction; otherwise a connection passes when a rule of any selecting policy
matches its peer (pod and namespace selectors, ipBlock) and its port and protocol.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
APP_NS = "apps"  # the namespace the manifests are applied to (they name none)


def documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every (file, document) of deploy/*.yaml."""
    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    return found


def head_pod() -> dict[str, Any]:
    """The RayCluster's head pod template."""
    (cluster,) = of_kind("RayCluster")
    return cluster["spec"]["headGroupSpec"]["template"]


def worker_pods() -> list[dict[str, Any]]:
    """The pod templates of the RayCluster's worker groups."""
    (cluster,) = of_kind("RayCluster")
    return [group["template"] for group in cluster["spec"]["workerGroupSpecs"]]


def container_ports(pod: dict[str, Any]) -> dict[str, int]:
    """The pod's named container ports."""
    return {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}


def mount_for(pod: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (volumeMount, volume) of the pod's first container that holds ``path``."""
    container = pod["spec"]["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector: matchLabels and matchExpressions; ``{}`` selects everything."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _policy_types(spec: dict[str, Any]) -> list[str]:
    """policyTypes, defaulted as the API server does: Ingress, plus Egress when there are egress rules."""
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _peer_matches(peer: dict[str, Any], labels: dict[str, str], namespace: str, ns_labels: dict[str, str],
                  ip: str | None) -> bool:  # fmt: skip
    if "ipBlock" in peer:
        if ip is None:
            return False  # pod-to-pod traffic is matched by selectors here (ipBlock is meant for outside the cluster)
        block = peer["ipBlock"]
        address = ipaddress.ip_address(ip)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if ip is not None:
        return False
    in_ns = selects(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer else namespace == APP_NS
    return in_ns and selects(peer.get("podSelector", {}), labels)


def _port_matches(rule_port: dict[str, Any], port: int, protocol: str, named_ports: dict[str, int]) -> bool:
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    number = named_ports.get(wanted) if isinstance(wanted, str) else wanted
    return number is not None and number <= port <= rule_port.get("endPort", number)


def admitted(target: dict[str, Any], port: int, labels: dict[str, str], namespace: str = APP_NS,
             namespace_labels: dict[str, str] | None = None,
             policies: list[dict[str, Any]] | None = None) -> bool:  # fmt: skip
    """Whether the NetworkPolicies of deploy/ (or ``policies``) let a pod (``labels`` in ``namespace``) reach
    ``target``'s TCP ``port``: the union of the Ingress rules of every policy selecting the target."""
    ns_labels = {"kubernetes.io/metadata.name": namespace, **(namespace_labels or {})}
    target_labels, target_ports = target["metadata"]["labels"], container_ports(target)
    selecting = [
        p["spec"]
        for p in (of_kind("NetworkPolicy") if policies is None else policies)
        if "Ingress" in _policy_types(p["spec"]) and selects(p["spec"]["podSelector"], target_labels)
    ]
    if not selecting:
        return True
    return any(
        ("from" not in rule or any(_peer_matches(peer, labels, namespace, ns_labels, None) for peer in rule["from"]))
        and ("ports" not in rule or any(_port_matches(p, port, "TCP", target_ports) for p in rule["ports"]))
        for policy in selecting
        for rule in policy.get("ingress", [])
    )


def egress_allowed(source: dict[str, Any], port: int, *, labels: dict[str, str] | None = None,
                   namespace: str = APP_NS, namespace_labels: dict[str, str] | None = None, ip: str | None = None,
                   protocol: str = "TCP") -> bool:  # fmt: skip
    """Whether the NetworkPolicies of deploy/ let pod ``source`` (a pod template of this namespace) open a
    connection to ``port``/``protocol`` of a pod (``labels`` in ``namespace``), or of the address ``ip`` outside
    the cluster: the union of the Egress rules of every policy selecting the source."""
    ns_labels = {"kubernetes.io/metadata.name": namespace, **(namespace_labels or {})}
    selecting = [
        p["spec"]
        for p in of_kind("NetworkPolicy")
        if "Egress" in _policy_types(p["spec"]) and selects(p["spec"]["podSelector"], source["metadata"]["labels"])
    ]
    if not selecting:
        return True
    return any(
        ("to" not in rule or any(_peer_matches(peer, labels or {}, namespace, ns_labels, ip) for peer in rule["to"]))
        and ("ports" not in rule or any(_port_matches(p, port, protocol, {}) for p in rule["ports"]))
        for policy in selecting
        for rule in policy.get("egress", [])
    )
