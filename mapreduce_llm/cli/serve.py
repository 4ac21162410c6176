"""``serve``: the batch service (OpenAI's Batch API over Ray jobs; :mod:`mapreduce_llm.service`)."""

from __future__ import annotations

from pathlib import Path

import click

from mapreduce_llm.service.limits import ServiceLimits, parse_duration


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _settings(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    settings = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE with a job spec field as KEY, got {item!r}")
        settings[key.strip()] = value
    return settings


def _port_or_off(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    if value.lower() == "off":
        return None
    if not value.isdigit() or int(value) > 65535:
        raise click.BadParameter(f"expected a port (0-65535) or 'off', got {value!r}")
    return int(value)


def _webhook_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from mapreduce_llm.errors import ConfigError
    from mapreduce_llm.service.webhooks import check_url

    try:
        return None if value is None else check_url(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--state",
    default=Path("out/service"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="State folder (files, batches, job outputs); kept across restarts. A shared path for a remote cluster.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File of bearer tokens clients must send, one per line (default: $MAPREDUCE_LLM_SERVICE_TOKEN, else a "
    "token generated once into STATE/token).",
)
@click.option(
    "--ray-address",
    envvar="RAY_API_SERVER_ADDRESS",
    help="Dashboard URL of the Ray cluster that runs the jobs (token: $RAY_AUTH_TOKEN or $RAY_AUTH_TOKEN_PATH). "
    "Default: a local token-auth Ray head started and stopped with the service.",
)
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Job spec every batch job starts from (engine, limits, monitoring ...; input, output and prompt are "
    "set per job).",
)
@click.option(
    "--set", "settings", multiple=True, metavar="KEY=VALUE", callback=_settings, help="Job spec field for every job."
)
@click.option(
    "--retention",
    default="30d",
    show_default=True,
    callback=_duration,
    help="Files and finished batches are deleted this long after they were made (e.g. 7d, 12h).",
)
@click.option("--max-upload-bytes", default=200_000_000, show_default=True, type=click.IntRange(1))
@click.option("--max-lines", default=50_000, show_default=True, type=click.IntRange(1), help="Requests per file.")
@click.option("--poll-interval", default=2.0, show_default=True, type=click.FloatRange(0.1), help="Seconds.")
@click.option("--num-cpus", type=click.IntRange(1), help="CPUs of the local Ray head (default: the machine's).")
@click.option(
    "--webhook-url",
    callback=_webhook_url,
    help="POST a signed event (Standard Webhooks, as OpenAI's) here when a batch ends: batch.completed, "
    "batch.failed, batch.cancelled, batch.expired. Retried until a 2xx; default: no webhooks.",
)
@click.option(
    "--webhook-secret-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the whsec_... secret events are signed with (default: $MAPREDUCE_LLM_WEBHOOK_SECRET, "
    "else one generated once into STATE/webhook-secret).",
)
@click.option("--webhook-max-attempts", default=16, show_default=True, type=click.IntRange(1))
@click.option(
    "--webhook-max-age",
    default="24h",
    show_default=True,
    callback=_duration,
    help="An event still not delivered this long after its batch ended is given up (logged webhook.gave_up).",
)
@click.option(
    "--metrics-port",
    default="9109",
    show_default=True,
    callback=_port_or_off,
    help="Port of the service's own Prometheus /metrics (batches by status, documents in flight, HTTP latency); "
    "0 for any free port, 'off' for none.",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address /metrics listens on.")
def serve(
    host: str,
    port: int,
    state: Path,
    token_file: Path | None,
    ray_address: str | None,
    spec_file: Path | None,
    settings: dict[str, str],
    retention: int,
    max_upload_bytes: int,
    max_lines: int,
    poll_interval: float,
    num_cpus: int | None,
    webhook_url: str | None,
    webhook_secret_file: Path | None,
    webhook_max_attempts: int,
    webhook_max_age: int,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run the batch service: OpenAI's Files and Batches API, each batch run as Ray jobs.

    \b
    Any OpenAI client works against it, e.g. in Python:
      client = OpenAI(base_url="http://127.0.0.1:8090/v1", api_key=TOKEN)
    Input lines: {"custom_id", "method": "POST", "url": "/v1/mapreduce",
                  "body": {"prompt": "qa@1.0.0", "text": ..., "question": ...}}
    """
    from mapreduce_llm.service import ServeSettings
    from mapreduce_llm.service import serve as run_service
    from mapreduce_llm.service.webhooks import WebhookPolicy

    limits = ServiceLimits(max_upload_bytes=max_upload_bytes, max_lines=max_lines, retention_s=retention)
    run_service(
        ServeSettings(
            host=host,
            port=port,
            state=state,
            token_file=token_file,
            ray_address=ray_address,
            spec_file=spec_file,
            settings=settings,
            limits=limits,
            poll_interval_s=poll_interval,
            num_cpus=num_cpus,
            webhook_url=webhook_url,
            webhook_secret_file=webhook_secret_file,
            webhook_policy=WebhookPolicy(max_attempts=webhook_max_attempts, max_age_s=webhook_max_age),
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )
    )
