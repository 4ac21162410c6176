"""Where a job's figures go: ``/metrics`` while it runs, a Prometheus Pushgateway when it ends."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import structlog
from prometheus_client import CollectorRegistry, push_to_gateway, pushadd_to_gateway, start_http_server
from prometheus_client.metrics_core import Metric

from mapreduce_llm.errors import ConfigError, MapReduceError
from mapreduce_llm.monitoring.metrics import LAST_SUCCESS

log = structlog.get_logger(__name__)


class PushError(MapReduceError):
    """The Pushgateway could not be reached or refused the figures."""


@contextmanager
def serve_metrics(registry: CollectorRegistry, port: int | None, host: str = "127.0.0.1") -> Iterator[int | None]:
    """Serve ``http://HOST:PORT/metrics`` for the duration of the block; yields the bound port (None: off).

    ``port`` 0 picks a free port. A port that cannot be bound is a ConfigError, raised before the block runs.
    """
    if port is None:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve /metrics on {host}:{port}: {exc}; set monitoring.metrics_port (--metrics-port) to a "
            "free port, or 0 for any",
            parameter="monitoring.metrics_port",
            value=port,
        ) from None
    bound = int(server.server_port)
    log.info("metrics.serving", url=f"http://{host}:{bound}/metrics")
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _Without:
    """A registry's metrics except the named ones (a collector)."""

    def __init__(self, registry: CollectorRegistry, names: Iterable[str]) -> None:
        self.registry = registry
        self.names = set(names)

    def collect(self) -> Iterator[Metric]:
        """Every metric of the registry whose name is not left out."""
        return (m for m in self.registry.collect() if m.name not in self.names)


def push_metrics(
    registry: CollectorRegistry, url: str, job: str, task: str, *, completed: bool = True, timeout: float = 10.0
) -> None:
    """Send a finished job's figures to the Pushgateway group ``{job, task}``.

    A ``completed`` job replaces the group (HTTP PUT). A failed one updates it (POST) with every series except
    ``mapreduce_llm_job_last_success_timestamp_seconds``: its counts and ``job_running`` 0 show the failed run,
    while the group keeps the time of the last run that completed (an unset gauge would push 0, and the
    ``MapReduceLLMNoSuccessfulJob`` alert would read it as "never"). Raises :class:`PushError`.
    """
    try:
        if completed:
            push_to_gateway(url, job=job, registry=registry, grouping_key={"task": task}, timeout=timeout)
        else:
            view = CollectorRegistry(auto_describe=False)
            view.register(_Without(registry, [LAST_SUCCESS]))
            pushadd_to_gateway(url, job=job, registry=view, grouping_key={"task": task}, timeout=timeout)
    except (OSError, ValueError) as exc:
        raise PushError(
            f"cannot push the job's metrics to the Pushgateway at {url}: {exc}; check monitoring.pushgateway "
            "(--pushgateway) and that the gateway is up (the job's results are written)"
        ) from None
    log.info("metrics.pushed", url=url, job=job, task=task, completed=completed)
