"""The service's own Prometheus metrics, served beside (not instead of) the metrics of the jobs it starts.

- ``mapreduce_llm_service_batches{status}``: batches in the state folder by OpenAI status (read at scrape time,
  so the figure is right after a restart too);
- ``mapreduce_llm_service_documents_in_flight``: requests of unfinished batches not yet completed or failed;
- ``mapreduce_llm_service_http_request_duration_seconds{method, route, status}``: a histogram per route
  *template* (``/v1/batches/{batch_id}``, never an id: bounded label values), ``unmatched`` for unknown paths and
  for requests refused before routing (401s).

The jobs export their own figures as any job does (``monitoring:`` in ``serve --spec``): a Pushgateway for the
final figures, since a job's driver is short-lived and runs on the cluster.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from starlette.requests import Request
from starlette.responses import Response

from mapreduce_llm.service.formats import Status
from mapreduce_llm.service.store import Store

STATUSES: tuple[Status, ...] = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)
UNFINISHED: frozenset[str] = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
# Upload and create calls take milliseconds; a large upload or a file download may take seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _BatchCollector:
    """Batches by status and documents in flight, counted from the store when Prometheus scrapes."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []  # collected lazily: registering must not read the state folder

    def collect(self) -> Iterator[Metric]:
        counts = dict.fromkeys(STATUSES, 0)
        in_flight = 0
        for record in self.store.list_batches():
            batch = record.batch
            counts[batch.status] = counts.get(batch.status, 0) + 1
            if batch.status in UNFINISHED:
                done = batch.request_counts.completed + batch.request_counts.failed
                in_flight += max(0, batch.request_counts.total - done)
        batches = GaugeMetricFamily(
            "mapreduce_llm_service_batches", "Batches kept by the service, by status.", labels=["status"]
        )
        for status, count in counts.items():
            batches.add_metric([status], count)
        yield batches
        yield GaugeMetricFamily(
            "mapreduce_llm_service_documents_in_flight",
            "Requests of unfinished batches that are neither completed nor failed yet.",
            value=in_flight,
        )


class ServiceMetrics:
    """The registry ``serve --metrics-port`` serves, and the HTTP middleware that times every request."""

    def __init__(self, store: Store, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.registry.register(_BatchCollector(store))
        self.latency = Histogram(
            "mapreduce_llm_service_http_request_duration_seconds",
            "Time to answer an API request, by method, route template and HTTP status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Times the request (an exception counts as a 500 and is raised again)."""
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.latency.labels(request.method, template, str(status)).observe(time.perf_counter() - started)
