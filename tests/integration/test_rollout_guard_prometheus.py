"""The rollout guard against a real Prometheus: canary and production figures pushed to a real Pushgateway.

Prometheus (Debian package ``prometheus``) scrapes a Pushgateway (``prometheus-pushgateway``) every second, both on
free loopback ports. Two finished qa jobs push their figures the way jobs do (the job's MetricsObserver, then
``push_metrics``): one ran production 1.0.0 beside a healthy canary 1.1.0, the other production beside a canary
2.0.0 that fails a quarter of its documents. Then `prompts rollout --prometheus URL` must widen 1.1.0, refuse 2.0.0
and, with --rollback, set 2.0.0's weight to 0. No LLM engine is involved: a few seconds.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mapreduce_llm.cli import Library, cli
from mapreduce_llm.monitoring.export import push_metrics
from mapreduce_llm.monitoring.observer import MetricsObserver
from mapreduce_llm.prompts import load_labels, set_rollout
from mapreduce_llm.results import DocumentResult
from tests.conftest import PROMPTS
from tests.prometheus_servers import free_port, prometheus, pushgateway, query, static
from tests.rollout_records import documents


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(Prometheus URL, Pushgateway URL): a real Prometheus scraping a real Pushgateway every second."""
    root = tmp_path_factory.mktemp("guard-prometheus")
    gw_port = free_port()
    with (
        pushgateway(root, gw_port) as gateway,
        prometheus(root, [static("pushgateway", gw_port, honor_labels=True)]) as server,
    ):
        yield server, gateway


def _push(gateway: str, job: str, records: list[DocumentResult]) -> None:
    """A finished job's figures, counted by the job's own observer and pushed as the job pushes them."""
    observer = MetricsObserver(labels={("qa", "1.0.0"): ["production"]})
    for record in records:
        observer.document_done(record, None)
    push_metrics(observer.metrics.registry, gateway, job=job, task="qa")


def _versions_seen(server: str) -> set[str]:
    return {
        s["metric"]["version"] for s in query(server, 'sum by (version) (mapreduce_llm_documents_total{task="qa"})')
    }


@pytest.fixture(scope="module")
def pushed(servers: tuple[str, str]) -> str:
    """Two finished qa jobs in the Pushgateway, scraped by Prometheus; returns Prometheus' URL."""
    server, gateway = servers
    _push(gateway, "qa-monday", documents("1.0.0", 40, errors=1) + documents("1.1.0", 30, errors=1))
    _push(gateway, "qa-tuesday", documents("1.0.0", 40, errors=1) + documents("2.0.0", 30, errors=8, logprob=-0.9))
    deadline = time.monotonic() + 30
    while _versions_seen(server) != {"1.0.0", "1.1.0", "2.0.0"}:
        assert time.monotonic() < deadline, f"Prometheus has {_versions_seen(server)} after 30 s"
        time.sleep(0.5)
    return server


def _rollout(root: Path, prometheus: str, *args: str) -> Result:
    argv = ["prompts", "rollout", "qa", *args, "--prometheus", prometheus, "--dir", str(root)]
    return CliRunner().invoke(cli, argv, obj=Library(who=lambda _: "ci"))


def _weights(root: Path) -> dict[str, float]:
    rollout = load_labels(root, "qa").rollout
    return {s.version: s.weight for s in rollout.splits} if rollout else {}


def test_the_guard_reads_prometheus_and_stops_a_regressing_canary(pushed: str, tmp_path: Path) -> None:
    """Via --prometheus, a healthy canary widens, a regressing one is refused and --rollback sets it to 0."""
    root = tmp_path / "prompts"
    shutil.copytree(PROMPTS, root, ignore=shutil.ignore_patterns("history.jsonl"))  # the shipped history is not ours
    (root / "qa" / "labels.yaml").write_text("labels:\n  production: 1.0.0\n")
    set_rollout(root, "qa", "1.1.0", 10)
    set_rollout(root, "qa", "2.0.0", 10)

    healthy = _rollout(root, pushed, "--version", "1.1.0", "--weight", "50")
    assert healthy.exit_code == 0, healthy.output
    assert healthy.stdout.splitlines()[2].split() == ["documents", "80", "30", ">=", "20", "ok"]
    assert "decision: pass" in healthy.stdout and _weights(root)["1.1.0"] == 50

    regressing = _rollout(root, pushed, "--version", "2.0.0", "--weight", "30")
    assert regressing.exit_code == 2, regressing.output
    assert "error_rate                0.0250      0.2667       +0.05  worse" in regressing.stdout
    assert "mean_confidence           0.6065      0.4066        -0.1  worse" in regressing.stdout
    assert _weights(root)["2.0.0"] == 10

    rolled = _rollout(root, pushed, "--version", "2.0.0", "--rollback")
    assert rolled.exit_code == 2 and "rolled back to 0%" in rolled.stdout
    assert _weights(root) == {"1.1.0": 50}
    history = [json.loads(line) for line in (root / "qa" / "history.jsonl").read_text().splitlines()]
    assert [(e["action"], e["applied"], e["guard"]["decision"]) for e in history] == [
        ("rollout", True, "pass"),
        ("rollout", False, "fail"),
        ("rollback", True, "fail"),
    ]
    assert history[-1]["guard"]["canary"]["source"] == pushed
