"""The service's own metrics (mapreduce_llm.service.metrics): batches by status, documents in flight, HTTP latency."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from mapreduce_llm.errors import ConfigError
from mapreduce_llm.service import ServeSettings, serve
from mapreduce_llm.service.app import create_app
from mapreduce_llm.service.metrics import ServiceMetrics
from tests.conftest import PROMPTS
from tests.service_helpers import line, make_service

TOKEN = "metrics-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LATENCY = "mapreduce_llm_service_http_request_duration_seconds_count"


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_batches_by_status_and_documents_in_flight_follow_the_store(tmp_path: Path) -> None:
    """Counts come from the state folder at scrape time: a new batch is validating, then in flight, then done."""
    service = make_service(tmp_path)
    metrics = ServiceMetrics(service.store)
    batch_id = service.create([line("a"), line("b"), line("c")])
    assert _value(metrics.registry, "mapreduce_llm_service_batches", status="validating") == 1
    service.batches.tick()
    assert service.batches.get(batch_id).status == "in_progress"
    assert _value(metrics.registry, "mapreduce_llm_service_batches", status="in_progress") == 1
    assert _value(metrics.registry, "mapreduce_llm_service_documents_in_flight") == 3
    service.runner.finish(1)
    service.batches.tick()
    assert _value(metrics.registry, "mapreduce_llm_service_documents_in_flight") == 2
    service.runner.succeed()
    service.batches.tick()
    assert service.batches.get(batch_id).status == "completed"
    assert _value(metrics.registry, "mapreduce_llm_service_batches", status="completed") == 1
    assert _value(metrics.registry, "mapreduce_llm_service_batches", status="in_progress") == 0
    assert _value(metrics.registry, "mapreduce_llm_service_documents_in_flight") == 0
    # a second registry over the same folder (a restarted service) sees the same figures
    assert _value(ServiceMetrics(service.store).registry, "mapreduce_llm_service_batches", status="completed") == 1


def test_http_latency_is_labelled_by_route_template_and_status(tmp_path: Path) -> None:
    """Ids never become label values; 404s and 401s are timed too (401s and unknown paths as `unmatched`)."""
    service = make_service(tmp_path)
    metrics = ServiceMetrics(service.store)
    app = create_app(service.batches, [TOKEN], middleware=[metrics.middleware])
    with TestClient(app) as client:
        assert client.get("/v1/batches", headers=AUTH).status_code == 200
        assert client.get("/v1/batches/batch_nope", headers=AUTH).status_code == 404
        assert client.get("/v1/batches/batch_other", headers=AUTH).status_code == 404
        assert client.get("/v1/batches").status_code == 401
        assert client.get("/v1/nowhere", headers=AUTH).status_code == 404
    registry = metrics.registry
    assert _value(registry, LATENCY, method="GET", route="/v1/batches", status="200") == 1
    assert _value(registry, LATENCY, method="GET", route="/v1/batches/{batch_id}", status="404") == 2
    assert _value(registry, LATENCY, method="GET", route="unmatched", status="401") == 1
    assert _value(registry, LATENCY, method="GET", route="unmatched", status="404") == 1
    routes = {s.labels["route"] for m in registry.collect() for s in m.samples if "route" in s.labels}
    assert not any("batch_nope" in r or "batch_other" in r for r in routes)


def test_a_busy_metrics_port_stops_serve_before_ray_starts(tmp_path: Path) -> None:
    """serve with its metrics port taken: a ConfigError naming --metrics-port (not the job spec's field), at once."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = ServeSettings(state=tmp_path / "state", metrics_port=port, settings={"prompts_dir": str(PROMPTS)})
        with pytest.raises(ConfigError, match="--metrics-port") as info:
            serve(settings)
    assert info.value.parameter == "metrics_port"
