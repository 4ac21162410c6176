"""monitoring/ (the folder, not the package): the Prometheus config, recording and alert rules (with promtool's
unit tests) and the dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mapreduce_llm.monitoring.metrics import JobMetrics
from mapreduce_llm.service.metrics import ServiceMetrics
from mapreduce_llm.service.store import Store
from tests.conftest import ROOT

MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "mapreduce-llm.json"
RULES = sorted((MONITORING / "rules").glob("*.yml"))


def promtool(*args: str) -> str:
    """Run promtool (Debian package `prometheus`), failing with its output."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (.ci/run installs it)")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=MONITORING, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def test_prometheus_config_is_valid() -> None:
    """`promtool check config` accepts monitoring/prometheus.yml and finds both rule files."""
    assert "2 rule files found" in promtool("check", "config", "prometheus.yml")


def test_rules_are_valid() -> None:
    """`promtool check rules` accepts the recording and alert rules."""
    promtool("check", "rules", *[str(p) for p in RULES])


def test_every_alert_has_a_passing_unit_test() -> None:
    """`promtool test rules` passes, and every alert of alerts.yml is exercised by it."""
    promtool("test", "rules", "tests/alerts_test.yml")
    alerts = set(re.findall(r"- alert: (\w+)", (MONITORING / "rules" / "alerts.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "tests" / "alerts_test.yml").read_text()))
    assert alerts and alerts <= tested, alerts - tested


def _exported_names(state: Path) -> set[str]:
    names = set()
    service = ServiceMetrics(Store(state))
    for metric in [*JobMetrics().registry.collect(), *service.registry.collect()]:
        base = metric.name + ("_total" if metric.type == "counter" else "")
        names.add(base)
        if metric.type == "histogram":
            names.update({f"{metric.name}_bucket", f"{metric.name}_sum", f"{metric.name}_count"})
    return names


def test_rules_and_dashboard_use_only_exported_metrics(tmp_path: Path) -> None:
    """Every mapreduce_llm_* name in the rules and the dashboard is exported by a job or the service, or recorded."""
    recorded = set(re.findall(r"- record: (\S+)", "".join(p.read_text() for p in RULES)))
    used = set()
    for text in [p.read_text() for p in RULES] + [expr for _, expr in dashboard_exprs()]:
        used.update(re.findall(r"(?<![\w:])mapreduce_llm_\w+", text))
    for name in recorded:
        used.discard(name)
    exported = _exported_names(tmp_path)
    assert used <= exported, used - exported
    for _, expr in dashboard_exprs():
        for name in re.findall(r"\b\w+:mapreduce_llm_\w+:\w+", expr):
            assert name in recorded, name


def test_dashboard_covers_the_views_users_asked_for() -> None:
    """Throughput, tokens, latency, errors, prompt length, classes, similarity, drift, canary: one panel each."""
    titles = " | ".join(title.lower() for title, _ in dashboard_exprs())
    for word in ("throughput", "tokens", "latency", "error", "prompt length", "class", "similarity", "drift", "canary"):
        assert word in titles, word
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "mapreduce-llm"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] if p.get("targets"))
