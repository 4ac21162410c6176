"""The job commands: ``run`` a job, ``plan`` it without an engine, print the job spec's ``schema``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mapreduce_llm.cli.library import Library
from mapreduce_llm.cli.options import job_options, job_spec, monitoring_options, spec_option

if TYPE_CHECKING:
    from mapreduce_llm.results import JobSummary


@click.command()
@job_options
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars (default: on a terminal; otherwise a progress log line every 30 s).",
)
@spec_option(
    "output_format",
    "--batch-output",
    flag_value="batch",
    default=None,
    help="Also write DIR/batch_output.jsonl and DIR/batch_errors.jsonl: the results as OpenAI batch output and "
    "error lines (custom_id = document id), as `serve` writes them.",
)
@monitoring_options
@click.pass_context
def run(ctx: click.Context, spec_file: Path | None, progress: bool | None) -> None:
    """Run a job: chunk, map, reduce, write DIR/results.jsonl and DIR/summary.json.

    SPEC is an optional YAML job spec (see `mapreduce-llm schema`); flags and --set override its fields. The
    input may hold OpenAI batch lines ({"custom_id", "method", "url", "body"}); --batch-output writes the results
    back in that format.
    """
    from mapreduce_llm.documents import count_inputs
    from mapreduce_llm.observers import ProgressLogObserver, ProgressObserver

    spec = job_spec(spec_file, need_output=True)
    total = count_inputs(spec.input, follow_symlinks=spec.follow_symlinks)
    on_terminal = sys.stderr.isatty() if progress is None else progress
    display = ProgressObserver(total) if on_terminal else ProgressLogObserver(total)
    with display:
        summary = Library.of(ctx).run_job(spec, display.on_result, observer=display)
    for line in summary_lines(summary, spec.output, batch=spec.output_format == "batch"):
        click.echo(line)


def summary_lines(summary: JobSummary, output: Path, *, batch: bool = False) -> Iterator[str]:
    """What ``run`` prints at the end: counts, errors by code, where the results are (``batch``: the batch files
    too), and the drift if scored."""
    from mapreduce_llm.monitoring.verdicts import score_lines

    yield (
        f"{summary.ok} ok, {summary.errors} errors of {summary.documents} documents in {summary.seconds:.1f} s "
        f"({summary.chunks} chunks, {sum(summary.requests.values())} engine requests, "
        f"up to {summary.max_levels} reduce levels)"
    )
    for code, count in sorted(summary.errors_by_code.items()):
        yield f"  {count} × {code}"
    yield f"results: {output / 'results.jsonl'}"
    if batch:
        yield f"batch output: {output / 'batch_output.jsonl'}, errors: {output / 'batch_errors.jsonl'}"
    yield f"summary: {output / 'summary.json'}"
    yield from score_lines(summary.drift or {})


@click.command()
@job_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per document instead of a table.")
@click.option(
    "--estimate",
    is_flag=True,
    help="Count with tiktoken cl100k_base (no model needed): a quick estimate, exact only for OpenAI-family models.",
)
@click.pass_context
def plan(ctx: click.Context, spec_file: Path | None, as_json: bool, estimate: bool) -> None:
    """Show the chunks, requests and token counts of a job, without starting an engine."""
    from mapreduce_llm.planning import PlanRow

    spec = job_spec(spec_file, need_output=False)
    selection, plans = Library.of(ctx).plan_job(spec, estimate=estimate)
    if not as_json:
        versions = ", ".join(ref.ref for ref in selection.versions)
        click.echo(f"prompt {selection.reference} ({versions}), max_model_len {spec.engine.max_model_len}")
        click.echo(PlanRow.TABLE_HEADER)
    for item in plans:
        row = PlanRow(item)
        click.echo(json.dumps(row.as_json()) if as_json else row.table_line())


@click.command()
def schema() -> None:
    """Print the JSON schema of the job spec (generated from its model)."""
    from mapreduce_llm.config import job_spec_json_schema

    click.echo(json.dumps(job_spec_json_schema(), indent=2))
