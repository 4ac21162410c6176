"""Options shared by several commands, each declared once.

A job command builds its :class:`~mapreduce_llm.config.JobSpec` from an optional spec file, then its named flags
(each a :func:`spec_option`: the flag and the dotted spec field it sets, declared together), then ``--set
KEY=VALUE`` for any field; :func:`job_spec` applies them in that order through
:func:`~mapreduce_llm.config.apply_overrides`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mapreduce_llm.config import JobSpec, apply_overrides, load_spec

F = TypeVar("F", bound=Callable[..., Any])

_FLAGS = "mapreduce_llm.flags"
_SETS = "mapreduce_llm.sets"


def spec_option(path: str, *decls: str, help: str, **attrs: Any) -> Callable[[F], F]:
    """A flag that sets the job spec field at dotted ``path`` (``--max-model-len`` sets ``engine.max_model_len``).

    The value is kept in the click context until :func:`job_spec` applies it (flags not given set nothing).
    """

    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.meta.setdefault(_FLAGS, {})[path] = value

    return click.option(*decls, expose_value=False, callback=store, help=f"{help} [{path}]", **attrs)


def _store_sets(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> None:
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"expected KEY=VALUE with a job spec field as KEY, e.g. engine.max_model_len=4096; got {item!r}",
                param_hint="--set",
            )
        ctx.meta.setdefault(_SETS, {})[key.strip()] = value


JOB_FLAGS = (
    spec_option(
        "input",
        "--input",
        "-i",
        type=click.Path(path_type=Path),
        help="JSONL file, folder of .txt/.md files, or one text file.",
    ),
    spec_option(
        "output",
        "--output",
        "-o",
        type=click.Path(path_type=Path, file_okay=False),
        help="Folder for results.jsonl and summary.json.",
    ),
    spec_option("prompt", "--prompt", "-p", help="Prompt reference: TASK or TASK@VERSION (default: summarize)."),
    spec_option("job_id", "--job-id", help="Job id for logs and the summary (default: the output folder's name)."),
    spec_option("engine.max_model_len", "--max-model-len", type=int, help="Context window of the served model."),
    spec_option("chunking.max_chunk_tokens", "--max-chunk-tokens", type=int, help="Cap chunk size below the budget."),
    spec_option("engine.replicas", "--replicas", type=int, help="Number of vLLM engine actors."),
    spec_option("engine.model", "--model", help="Model folder to serve (default: the embedded SmolLM2-135M-Instruct)."),
    spec_option(
        "retrieval.mode",
        "--retrieval",
        type=click.Choice(["all", "top_k"]),
        help="Map every chunk (all), or only the --top-k chunks most similar to the question (top_k).",
    ),
    spec_option("retrieval.top_k", "--top-k", type=int, help="Chunks mapped per document with --retrieval top_k."),
    spec_option(
        "retrieval.reretrieve",
        "--reretrieve/--no-reretrieve",
        default=None,
        help="Re-retrieve passages when an answer is unsure (output: answer prompts with a calibration).",
    ),
    spec_option(
        "follow_symlinks",
        "--follow-symlinks",
        is_flag=True,
        default=None,
        help="Read links in an input folder that point outside it (default: they get a `symlink` error record).",
    ),
)
"""The named flags of the job commands, each mapped once onto the job spec field it sets."""

SET_OPTION = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    expose_value=False,
    callback=_store_sets,
    help="Set any job spec field by its dotted path, e.g. --set engine.max_model_len=4096 (repeat; applied "
    "after the named flags). VALUE is read as YAML (4096, 0.5, true, null, {k: v}); text fields take it as "
    "written. See `mapreduce-llm schema` for the fields.",
)

BASELINES_DIR_HELP = "Folder of baselines (default: $MAPREDUCE_LLM_BASELINES or ./baselines)."

MONITORING_FLAGS = (
    spec_option(
        "monitoring.metrics_port",
        "--metrics-port",
        type=int,
        help="Serve Prometheus /metrics on this port while the job runs.",
    ),
    spec_option("monitoring.metrics_host", "--metrics-host", help="Address /metrics binds to (default: 127.0.0.1)."),
    spec_option(
        "monitoring.pushgateway",
        "--pushgateway",
        metavar="URL",
        help="Push the final metrics to this Prometheus Pushgateway.",
    ),
    spec_option(
        "monitoring.embed",
        "--embed/--no-embed",
        default=None,
        help="Embed chunks (all-MiniLM-L6-v2) for retrieval similarity, topics and DIR/profile.jsonl "
        "(default: on with --baseline).",
    ),
    spec_option(
        "monitoring.baseline",
        "--baseline",
        metavar="NAME",
        help="Score drift against this baseline (see `drift baseline`).",
    ),
    spec_option(
        "monitoring.baselines_dir",
        "--baselines-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help=BASELINES_DIR_HELP,
    ),
)
"""Metrics, embeddings and drift flags of ``run``: the spec's ``monitoring:`` section (see monitoring/README.md)."""


def _apply(options: list[Callable[[F], F]], func: F) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def job_options(func: F) -> F:
    """Options shared by the job commands: a spec file, named flags, and ``--set`` for any field."""
    spec_file = click.argument(
        "spec_file", metavar="[SPEC]", required=False, type=click.Path(path_type=Path, dir_okay=False)
    )
    return _apply([spec_file, *JOB_FLAGS, SET_OPTION], func)


def job_flags(func: F) -> F:
    """The named job flags and ``--set``, without the SPEC argument (for commands with arguments of their own)."""
    return _apply([*JOB_FLAGS, SET_OPTION], func)


def given_job_flags() -> dict[str, Any]:
    """The job spec fields the current command's named flags and ``--set`` values set (dotted path: value)."""
    ctx = click.get_current_context()
    return {**ctx.meta.get(_FLAGS, {}), **ctx.meta.get(_SETS, {})}


def monitoring_options(func: F) -> F:
    """The monitoring flags (:data:`MONITORING_FLAGS`)."""
    return _apply(list(MONITORING_FLAGS), func)


def job_spec(spec_file: Path | None, *, need_output: bool) -> JobSpec:
    """The job spec of a job command: the spec file (if any), then its named flags, then its ``--set`` values."""
    ctx = click.get_current_context()
    overrides: dict[str, Any] = {**ctx.meta.get(_FLAGS, {}), **ctx.meta.get(_SETS, {})}
    if spec_file is not None:
        return load_spec(spec_file, overrides)
    if "input" not in overrides:
        raise click.UsageError("give a job spec file, or --input (and --output)")
    if "output" not in overrides:
        if need_output:
            raise click.UsageError("--output is required without a job spec file")
        overrides["output"] = Path("mapreduce-output")
    return apply_overrides({}, overrides, source="(command line)")
