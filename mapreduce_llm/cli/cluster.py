"""``cluster``: jobs on a Ray cluster through its Jobs API (submit, status, logs, stop, list).

Until the next release the same commands also answer to their old top-level names (``mapreduce-llm submit``
...): hidden from ``--help``, and saying on stderr that the name moved (:data:`ALIASES`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mapreduce_llm.cli.library import Library
from mapreduce_llm.cli.options import job_options, job_spec

_ADDRESS_OPTION = click.option(
    "--address",
    envvar=["RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"],
    help="Ray dashboard URL of the cluster, e.g. http://127.0.0.1:8265 (default: $RAY_API_SERVER_ADDRESS, "
    "$RAY_ADDRESS). Token auth: $RAY_AUTH_TOKEN or $RAY_AUTH_TOKEN_PATH.",
)


@click.group()
def cluster() -> None:
    """Jobs on a Ray cluster: submit a job spec, follow it, stop it, list the cluster's jobs.

    \b
    Example (token auth: $RAY_AUTH_TOKEN or $RAY_AUTH_TOKEN_PATH):
      export RAY_ADDRESS=http://127.0.0.1:8265
      mapreduce-llm cluster submit job.yaml          # prints the submission id
      mapreduce-llm cluster logs --follow SUBMISSION_ID
    """


def _variables(env: tuple[str, ...]) -> dict[str, str]:
    variables = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--env")
        variables[key] = value
    return variables


@cluster.command()
@job_options
@_ADDRESS_OPTION
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable for the job (repeat).")
@click.option(
    "--upload-input/--no-upload-input",
    default=True,
    show_default=True,
    help="Send the input along with the job when it exists here; otherwise its path is read on the cluster.",
)
@click.option("--submission-id", help="Id for the Ray job (default: chosen by Ray).")
@click.option(
    "--python",
    envvar="MAPREDUCE_LLM_CLUSTER_PYTHON",
    metavar="PATH",
    help="Run the job with this Python on the Ray head (its virtualenv's bin/python), not with `mapreduce-llm` from "
    "the head's PATH ($MAPREDUCE_LLM_CLUSTER_PYTHON).",
)
@click.pass_context
def submit(
    ctx: click.Context,
    spec_file: Path | None,
    address: str | None,
    env: tuple[str, ...],
    upload_input: bool,
    submission_id: str | None,
    python: str | None,
) -> None:
    """Submit a job to a Ray cluster; prints the submission id.

    The job spec, its prompt files and the input are sent with the job; the cluster runs `mapreduce-llm run
    spec.yaml` (found on the PATH `ray start` had on the head, or run by --python). OUTPUT, the cache and --model
    are paths on the cluster: OUTPUT and the cache where the job's driver runs (the head), the model on every node
    that runs engines.
    """
    spec = job_spec(spec_file, need_output=True)
    jobs = Library.of(ctx).jobs_api()
    variables = _variables(env)
    sid = jobs.submit(
        spec, address, env=variables, upload_input=upload_input, submission_id=submission_id, python=python
    )
    click.echo(sid)


def _hint(exit_code: int | None, text: str) -> str | None:
    """What went wrong before the job ran and what to do (:func:`mapreduce_llm.submission.diagnose`)."""
    from mapreduce_llm.submission import diagnose

    return diagnose(exit_code, text)


@cluster.command()
@click.argument("submission_id")
@_ADDRESS_OPTION
@click.pass_context
def status(ctx: click.Context, submission_id: str, address: str | None) -> None:
    """Status of a submitted job: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED, and why."""
    info = Library.of(ctx).jobs_api().job_info(address, submission_id)
    click.echo(f"{submission_id}: {info.status}")
    if info.message:
        click.echo(f"  {info.message}")
    for key, value in sorted((info.metadata or {}).items()):
        click.echo(f"  {key}: {value}")
    hint = _hint(getattr(info, "driver_exit_code", None), info.message or "") if info.status == "FAILED" else None
    if hint:
        click.echo(f"  what to do: {hint}")


@cluster.command()
@click.argument("submission_id")
@_ADDRESS_OPTION
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@click.pass_context
def logs(ctx: click.Context, submission_id: str, address: str | None, follow: bool) -> None:
    """Print a submitted job's driver output (and, on stderr, what to do when it shows the job's command was not
    found on the cluster)."""
    jobs = Library.of(ctx).jobs_api()
    tail = [""]

    def write(chunk: str) -> None:
        click.echo(chunk, nl=False)
        tail[0] = (tail[0] + chunk)[-8192:]

    if follow:
        jobs.follow_logs(address, submission_id, write)
    else:
        write(jobs.job_logs(address, submission_id))
    hint = _hint(None, tail[0])
    if hint:
        click.echo(f"what to do: {hint}", err=True)


@cluster.command()
@click.argument("submission_id")
@_ADDRESS_OPTION
@click.pass_context
def stop(ctx: click.Context, submission_id: str, address: str | None) -> None:
    """Stop a submitted job."""
    stopped = Library.of(ctx).jobs_api().stop_job(address, submission_id)
    click.echo(f"{submission_id}: {'stopping' if stopped else 'already ended'}")


@cluster.command("list")
@_ADDRESS_OPTION
@click.pass_context
def list_(ctx: click.Context, address: str | None) -> None:
    """List the cluster's jobs: submission id, status, task and prompt, job id."""
    for job in Library.of(ctx).jobs_api().list_jobs(address):
        meta = job.metadata or {}
        ident = job.submission_id or job.job_id
        click.echo(f"{ident}  {job.status!s:10} {meta.get('prompt', '-'):20} {meta.get('job_id', '-')}")


def _alias(command: click.Command) -> click.Command:
    """``command`` under its old top-level name: hidden from ``--help``, with a one-line note on stderr."""
    name = command.name
    callback = command.callback
    assert name is not None and callback is not None

    def moved(*args: Any, **kwargs: Any) -> Any:
        note = f"`mapreduce-llm {name}` is now `mapreduce-llm cluster {name}`; the old name goes in the next release"
        click.echo(f"note: {note}", err=True)
        return callback(*args, **kwargs)

    return click.Command(
        name, params=command.params, callback=moved, help=command.help, short_help=command.short_help, hidden=True
    )


ALIASES = tuple(_alias(command) for command in (submit, status, logs, stop, list_))
"""The old top-level ``submit``, ``status``, ``logs``, ``stop`` and ``list`` (deprecated: use ``cluster ...``)."""
