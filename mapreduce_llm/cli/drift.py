"""``drift``: reference profiles per prompt version (baselines) and drift scores of a job against them."""

from __future__ import annotations

from pathlib import Path

import click

from mapreduce_llm.cli.library import Library
from mapreduce_llm.cli.options import BASELINES_DIR_HELP, job_options, job_spec
from mapreduce_llm.config import DRIFT_MIN_CHUNKS, DRIFT_MIN_DOCUMENTS

_RESULTS_OPTION = click.option(
    "--results", type=click.Path(path_type=Path, file_okay=False), required=True, help="A job's folder."
)
_BASELINES_OPTION = click.option(
    "--baselines-dir", type=click.Path(path_type=Path, file_okay=False), help=BASELINES_DIR_HELP
)


@click.group()
def drift() -> None:
    """Reference profiles per prompt version (baselines) and drift scores against them.

    \b
    A job run with --embed (or --baseline) writes DIR/profile.jsonl; then:
      mapreduce-llm drift baseline --results out/week1 --name docs-v1
      mapreduce-llm run --input week2/ --output out/week2 --baseline docs-v1 --pushgateway http://127.0.0.1:9091
    """


@drift.command("profile")
@job_options
@click.pass_context
def drift_profile(ctx: click.Context, spec_file: Path | None) -> None:
    """Profile a job's input without an engine: plan and embed every document, write DIR/profile.jsonl."""
    from mapreduce_llm.errors import DocumentError
    from mapreduce_llm.monitoring.profiles import profile_document, write_profiles

    spec = job_spec(spec_file, need_output=True)
    library = Library.of(ctx)
    _, plans = library.plan_job(spec)
    embedder = library.embedder()
    profiles, errors = [], 0
    for p in plans:
        if isinstance(p, DocumentError):
            errors += 1
        else:
            profiles.append(profile_document(p, embedder))
    path = write_profiles(spec.output, profiles)
    click.echo(f"{len(profiles)} documents profiled ({errors} errors): {path}")


@drift.command("baseline")
@_RESULTS_OPTION
@click.option("--name", required=True, help="Baseline name (letters, digits, '.', '_', '-').")
@_BASELINES_OPTION
def drift_baseline(results: Path, name: str, baselines_dir: Path | None) -> None:
    """Store the reference profile of every task and prompt version in a job's DIR/profile.jsonl."""
    from mapreduce_llm.monitoring.baselines import BaselineStore
    from mapreduce_llm.monitoring.drift import build_baseline
    from mapreduce_llm.monitoring.profiles import read_profiles

    baseline = build_baseline(name, read_profiles(results), str(results))
    path = BaselineStore(baselines_dir).save(baseline)
    for key, ref in baseline.versions.items():
        sample = ref.vector_sample
        kept = f", chunk vectors of {sample.documents} documents for the MMD test" if sample is not None else ""
        click.echo(f"{key}: {ref.documents} documents, {ref.chunks} chunks, {len(ref.topic_centroids)} topics{kept}")
        if ref.documents < DRIFT_MIN_DOCUMENTS or ref.chunks < DRIFT_MIN_CHUNKS:
            click.echo(
                f"  under the default drift minimum ({DRIFT_MIN_DOCUMENTS} documents, {DRIFT_MIN_CHUNKS} chunks): "
                "jobs scored against it are reported as insufficient unless the minimum is lowered"
            )
    click.echo(f"baseline: {path}")


@drift.command("check")
@_RESULTS_OPTION
@click.option("--baseline", required=True, help="Baseline name.")
@_BASELINES_OPTION
@click.option(
    "--min-documents",
    type=click.IntRange(min=1),
    default=DRIFT_MIN_DOCUMENTS,
    show_default=True,
    help="Withhold the drift of a task@version with fewer documents on either side (reported as insufficient).",
)
@click.option(
    "--min-chunks",
    type=click.IntRange(min=1),
    default=DRIFT_MIN_CHUNKS,
    show_default=True,
    help="The same for chunks.",
)
def drift_check(results: Path, baseline: str, baselines_dir: Path | None, min_documents: int, min_chunks: int) -> None:
    """Print the drift of a job's DIR/profile.jsonl against a baseline: scores and the MMD p-value per
    task@version, or `insufficient` with the counts (exit 2 over an alert threshold)."""
    from mapreduce_llm.monitoring.baselines import BaselineStore
    from mapreduce_llm.monitoring.drift import job_drift
    from mapreduce_llm.monitoring.profiles import iter_profiles
    from mapreduce_llm.monitoring.verdicts import DriftGuard, any_alert, score_lines

    guard = DriftGuard(min_documents, min_chunks)
    scores = job_drift(BaselineStore(baselines_dir).load(baseline), iter_profiles(results), guard)
    if not scores:
        click.echo("no task@version of the job is in the baseline")
    for line in score_lines(scores):
        click.echo(line)
    if any_alert(scores):
        raise SystemExit(2)
