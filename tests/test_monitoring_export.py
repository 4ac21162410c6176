"""serve_metrics and push_metrics (monitoring/export.py): /metrics while a job runs, the Pushgateway at its end."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from mapreduce_llm.errors import ConfigError
from mapreduce_llm.monitoring.export import PushError, push_metrics, serve_metrics
from mapreduce_llm.monitoring.metrics import LAST_SUCCESS, JobMetrics
from tests.fake_pushgateway import FakePushgateway


def _finished(completed: bool) -> JobMetrics:
    metrics = JobMetrics()
    metrics.documents.labels("qa", "1.0.0", "ok").inc(3)
    metrics.job_running.set(0)
    if completed:
        metrics.last_success.set(1700000000)
    return metrics


def test_metrics_are_served_while_the_block_runs() -> None:
    """/metrics answers on loopback with the job's metric families, and stops afterwards."""
    metrics = JobMetrics()
    metrics.documents.labels("qa", "1.0.0", "ok").inc()
    with serve_metrics(metrics.registry, 0) as port:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'mapreduce_llm_documents_total{status="ok",task="qa",version="1.0.0"} 1.0' in body
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_no_port_serves_nothing() -> None:
    """Port None: the block runs and nothing listens."""
    with serve_metrics(JobMetrics().registry, None) as port:
        assert port is None


def test_a_port_in_use_is_a_config_error_naming_the_setting() -> None:
    """A port another process holds is refused before the job starts, naming monitoring.metrics_port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = pytest.raises(ConfigError, match=rf"127.0.0.1:{port}.*monitoring.metrics_port")
        with refused, serve_metrics(JobMetrics().registry, port):
            pass


def test_a_completed_job_replaces_its_group() -> None:
    """The figures of a completed job replace the Pushgateway group /job/<job>/task/<task> (PUT)."""
    with FakePushgateway() as gateway:
        push_metrics(_finished(True).registry, gateway.url, "nightly", "qa")
    ((push),) = gateway.pushes
    assert push.method == "PUT" and push.path == "/metrics/job/nightly/task/qa"
    assert LAST_SUCCESS in push.names() and "mapreduce_llm_documents_total" in push.names()


def test_a_failed_job_updates_its_group_but_not_the_last_success() -> None:
    """A failed job's figures update the group (POST) without the last-success gauge, which keeps its value."""
    with FakePushgateway() as gateway:
        push_metrics(_finished(False).registry, gateway.url, "nightly", "qa", completed=False)
    ((push),) = gateway.pushes
    assert push.method == "POST" and push.path == "/metrics/job/nightly/task/qa"
    assert LAST_SUCCESS not in push.names()
    assert {"mapreduce_llm_documents_total", "mapreduce_llm_job_running"} <= push.names()


def test_an_unreachable_gateway_is_a_push_error() -> None:
    """A gateway that does not answer is a PushError that names the URL and says the results are written."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{free.getsockname()[1]}"
    with pytest.raises(PushError, match=rf"{url}.*results are written"):
        push_metrics(JobMetrics().registry, url, "nightly", "qa", timeout=2)
