"""``mapreduce-llm serve``: the state folder, the tokens, a Ray cluster (given, or a local head), the API."""

from __future__ import annotations

import os
import signal
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from mapreduce_llm.errors import ConfigError
from mapreduce_llm.service.batches import Batches
from mapreduce_llm.service.limits import ServiceLimits
from mapreduce_llm.service.specs import SpecTemplate
from mapreduce_llm.service.store import Store
from mapreduce_llm.service.webhooks import WebhookPolicy, open_webhooks

log = structlog.get_logger("mapreduce_llm.service")


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``serve`` is given."""

    host: str = "127.0.0.1"
    port: int = 8090
    state: Path = Path("out/service")
    token_file: Path | None = None
    ray_address: str | None = None
    """The cluster's dashboard URL; None: start a local token-auth head for the service's lifetime."""
    spec_file: Path | None = None
    """The job spec every batch job starts from (engine, limits, monitoring ...)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Job spec fields by dotted path, over the spec file."""
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    poll_interval_s: float = 2.0
    num_cpus: int | None = None
    """CPUs of the local head (None: the machine's)."""
    webhook_url: str | None = None
    """Where batch.completed|failed|cancelled|expired events are POSTed (None: no webhooks)."""
    webhook_secret_file: Path | None = None
    """The whsec_ signing secret (None: $MAPREDUCE_LLM_WEBHOOK_SECRET, else STATE/webhook-secret)."""
    webhook_policy: WebhookPolicy = field(default_factory=WebhookPolicy)
    metrics_port: int | None = 9109
    """The service's own ``/metrics`` (0: any free port; None: off)."""
    metrics_host: str = "127.0.0.1"


def serve(settings: ServeSettings) -> None:
    """Run the service until interrupted (Ctrl-C, SIGTERM); the local head, if any, is stopped on the way out."""
    import uvicorn

    from mapreduce_llm.monitoring.export import serve_metrics
    from mapreduce_llm.service.app import create_app
    from mapreduce_llm.service.auth import load_tokens
    from mapreduce_llm.service.jobs import RayJobRunner
    from mapreduce_llm.service.metrics import ServiceMetrics
    from mapreduce_llm.service.ray_head import LocalRayHead

    state = settings.state.resolve()
    store = Store(state)
    tokens, source = load_tokens(settings.token_file, state)
    template = SpecTemplate(settings.spec_file, settings.settings)  # a bad spec stops us before Ray starts
    webhooks = open_webhooks(state, settings.webhook_url, settings.webhook_secret_file, settings.webhook_policy)
    metrics = ServiceMetrics(store)
    with ExitStack() as stack:
        try:
            stack.enter_context(serve_metrics(metrics.registry, settings.metrics_port, settings.metrics_host))
        except ConfigError as exc:  # it names the job spec's field; serve's is a flag
            raise ConfigError(
                f"cannot serve the service's /metrics on {settings.metrics_host}:{settings.metrics_port} (is "
                "another service running?); pass --metrics-port with a free port, 0 for any, or off",
                parameter="metrics_port",
                value=settings.metrics_port,
            ) from exc
        address = settings.ray_address
        if address is None:
            head = stack.enter_context(LocalRayHead(num_cpus=settings.num_cpus))
            address = head.address
            # submission.client() reads the token from the environment, as `cluster submit` does.
            os.environ["RAY_AUTH_TOKEN"] = head.token
        batches = Batches(store, RayJobRunner(address), template, settings.limits)
        if webhooks is not None:  # sent from a thread of its own; undelivered events wait in STATE/webhooks
            batches.on_finished = webhooks.enqueue
            webhooks.start()
            stack.callback(webhooks.stop)
        app = create_app(batches, tokens, tick_interval=settings.poll_interval_s, middleware=[metrics.middleware])
        log.info(
            "service.ready",
            url=f"http://{settings.host}:{settings.port}/v1",
            state=str(state),
            tokens=source,
            ray=address,
        )
        # uvicorn stops gracefully on SIGTERM and then raises the signal again; our handler turns that into
        # SystemExit here, so the ExitStack still stops the local head (the default handler would just end us).
        previous = signal.signal(signal.SIGTERM, _exit_on_signal)
        try:
            uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
        except SystemExit:
            log.info("service.stopping", reason="SIGTERM")
        finally:
            signal.signal(signal.SIGTERM, previous)
    log.info("service.stopped")


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
