"""The ``mapreduce-llm`` command line: noun groups of thin commands (parse arguments, call the library, print).

One module per group: ``jobs`` (run, plan, schema), ``prompts``, ``cluster`` (Ray jobs; their old top-level names
as hidden aliases), ``drift``, ``models`` and ``serve`` (the batch service). ``options`` declares the shared options
once; ``library`` is the seam for test doubles: ``CliRunner().invoke(cli, args, obj=Library(...))``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from mapreduce_llm.cli.cluster import ALIASES, cluster
from mapreduce_llm.cli.drift import drift
from mapreduce_llm.cli.jobs import plan, run, schema
from mapreduce_llm.cli.library import Library
from mapreduce_llm.cli.models import models
from mapreduce_llm.cli.prompts import prompts
from mapreduce_llm.cli.serve import serve
from mapreduce_llm.errors import MapReduceError
from mapreduce_llm.logs import configure_logging

__all__ = ["Library", "cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Least severe log level shown.",
)
@click.option(
    "--json-logs/--console-logs",
    default=None,
    help="Log format (default: console on a terminal, JSON lines otherwise).",
)
@click.version_option(package_name="mapreduce-llm")
def cli(log_level: str, json_logs: bool | None) -> None:
    """Map-reduce over documents far longer than an LLM's context window.

    Documents are cut into chunks that fit the served model's context, a map prompt runs over every
    chunk on vLLM engines hosted in Ray, and the partial outputs are reduced by the LLM, level by level
    when they do not fit one call. Without a configured model, the embedded SmolLM2-135M-Instruct runs
    on the CPU.

    \b
    Examples:
      mapreduce-llm run --input docs/ --output out/
      mapreduce-llm run --input questions.jsonl --output out/ --prompt qa
      mapreduce-llm run job.yaml --set engine.max_model_len=4096
      mapreduce-llm plan --input docs/ --max-model-len 4096
      mapreduce-llm cluster submit job.yaml --address http://127.0.0.1:8265
      mapreduce-llm serve --spec job.yaml          # OpenAI's Batch API on http://127.0.0.1:8090/v1
    """
    configure_logging(log_level, json_logs)


for _command in (run, plan, schema, prompts, models, cluster, drift, serve, *ALIASES):
    cli.add_command(_command)


def main(args: Sequence[str] | None = None, obj: Library | None = None) -> None:
    """Console entry point: MapReduceError becomes a one-line message and exit status 1; Ctrl-C exits 130.

    ``args``: the command line without the program name (default: ``sys.argv[1:]``); ``obj``: library doubles.
    """
    try:
        cli.main(args, standalone_mode=False, obj=obj)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MapReduceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
