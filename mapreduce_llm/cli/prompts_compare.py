"""``prompts compare``: two prompt versions side by side, from two jobs it runs or two finished result folders.

The figures and the table are :mod:`mapreduce_llm.prompts.compare`'s; this module only runs the jobs (through
the library seam's ``run_job``, as ``run`` does, on one engine and one request cache) and reads the folders.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mapreduce_llm.cli.library import Library
from mapreduce_llm.cli.options import given_job_flags, job_flags, job_spec

if TYPE_CHECKING:
    from mapreduce_llm.config import JobSpec
    from mapreduce_llm.prompts import PromptRef
    from mapreduce_llm.results import DocumentResult, JobSummary

    Side = tuple[str, str, list[DocumentResult], JobSummary | None]


@click.command("compare")
@click.argument("task")
@click.argument("versions", nargs=-1, metavar="[A B]")
@click.option(
    "--results-a",
    type=click.Path(path_type=Path, file_okay=False),
    help="Compare finished jobs instead: the output folder of the first.",
)
@click.option("--results-b", type=click.Path(path_type=Path, file_okay=False), help="... and of the second.")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A job spec for both jobs (flags override it); its prompt is replaced by TASK@A and TASK@B.",
)
@job_flags
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars (default: on a terminal; otherwise a progress log line every 30 s).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON instead of a table.")
@click.option(
    "--dir",
    "prompts_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Prompts folder (default: $MAPREDUCE_LLM_PROMPTS, ./prompts, or the project's prompts/).",
)
@click.pass_context
def compare(
    ctx: click.Context,
    task: str,
    versions: tuple[str, ...],
    results_a: Path | None,
    results_b: Path | None,
    spec_file: Path | None,
    progress: bool | None,
    as_json: bool,
    prompts_dir: Path | None,
) -> None:
    """Compare two versions of TASK on the same documents, side by side.

    Accuracy and "not found" accuracy where the input carries expected answers (field `answer`; null: the
    document does not contain it), errors, parse failures, confidence, tokens, requests and seconds per document.

    A and B are versions or labels. Both jobs run as `run` runs them, on one engine, into DIR/<version>/ with one
    request cache (DIR/cache.sqlite unless the spec sets cache.path), so a rerun reuses every finished result and
    request. Job flags and --set apply to both. The comparison is also written to DIR/comparison.json.

    \b
      mapreduce-llm prompts compare qa 1.0.0 2.0.0 --input needles.jsonl --output out/compare-qa
      mapreduce-llm prompts compare qa --results-a out/old --results-b out/new --json
    """
    from mapreduce_llm.atomic import write_atomic
    from mapreduce_llm.prompts import default_prompts_dir
    from mapreduce_llm.prompts.compare import COMPARISON_FILE, dumps, table
    from mapreduce_llm.prompts.compare import compare as compare_sides

    folders = results_a is not None or results_b is not None
    written: Path | None = None
    if folders and versions:
        raise click.UsageError("give two versions A B, or --results-a and --results-b, not both")
    if folders:
        if results_a is None or results_b is None:
            raise click.UsageError("give both --results-a DIR and --results-b DIR (the output folders of two jobs)")
        if spec_file is not None or given_job_flags():
            raise click.UsageError("job flags, --set and --spec apply only when comparing versions A B (jobs to run)")
        root = prompts_dir or default_prompts_dir()
        a, b = _read(results_a), _read(results_b)
        if a[0] == b[0]:
            a, b = (f"A: {a[0]}", *a[1:]), (f"B: {b[0]}", *b[1:])
    else:
        if len(versions) != 2:
            raise click.UsageError(
                f"give two versions of {task} (e.g. prompts compare {task} 1.0.0 2.0.0 --input FILE --output DIR), "
                f"or --results-a DIR --results-b DIR; got {len(versions)} version(s)"
            )
        if "prompt" in given_job_flags():
            raise click.UsageError(f"--prompt does not apply: compare runs {task}@A and {task}@B")
        spec = job_spec(spec_file, need_output=True)
        written = spec.output / COMPARISON_FILE
        root = prompts_dir or spec.prompts_dir or default_prompts_dir()
        a, b = _run_versions(ctx, spec, [_version(task, v, root) for v in versions], root, progress)
    comparison = compare_sides(task, a, b, (_not_found(root, a[0]), _not_found(root, b[0])))
    if written is not None:  # beside the two jobs: the figures, whatever else the engine printed on stdout
        write_atomic(written, dumps(comparison) + "\n")
    click.echo(dumps(comparison) if as_json else "\n".join(table(comparison)))


def _version(task: str, name: str, root: Path) -> PromptRef:
    """TASK@NAME (NAME a version or a label; TASK@NAME is accepted too) as one version."""
    from mapreduce_llm.prompts import resolve_prompt

    given_task, at, label = name.partition("@")
    if at and given_task != task:
        raise click.UsageError(f"{name} is a version of {given_task}, not of {task}; give versions of {task}")
    return resolve_prompt(f"{task}@{label if at else name}", root)


def _run_versions(
    ctx: click.Context, spec: JobSpec, refs: list[PromptRef], root: Path, progress: bool | None
) -> tuple[Side, Side]:
    """Run both versions over the spec's input on one engine and one request cache; each side's records."""
    from mapreduce_llm.documents import count_inputs
    from mapreduce_llm.errors import ConfigError
    from mapreduce_llm.observers import ProgressLogObserver, ProgressObserver
    from mapreduce_llm.output import RESULTS_FILE

    if refs[0].version == refs[1].version:
        raise click.UsageError(f"A and B are both {refs[0].ref}; compare two different versions")
    if not spec.input.exists():
        raise ConfigError(f"input {spec.input} does not exist; check the path", parameter="input")
    cache = spec.cache
    if cache.path is None:
        cache = cache.model_copy(update={"path": spec.output / "cache.sqlite"})
    jobs = [
        spec.model_copy(
            update={
                "prompt": ref.ref,
                "prompts_dir": root,
                "output": spec.output / ref.version,
                "cache": cache,
                "job_id": f"{spec.job_id}-{ref.version}" if spec.job_id else None,
            }
        )
        for ref in refs
    ]
    library = Library.of(ctx)
    total = count_inputs(spec.input, follow_symlinks=spec.follow_symlinks)
    on_terminal = sys.stderr.isatty() if progress is None else progress
    embedder = library.embedder()
    sides = []
    with library.shared_engine(spec.engine) as engine:
        for ref, job in zip(refs, jobs, strict=True):
            display = ProgressObserver(total) if on_terminal else ProgressLogObserver(total)
            with display:
                summary = library.run_job(job, display.on_result, observer=display, engine=engine, embedder=embedder)
            click.echo(
                f"{ref.ref}: {summary.ok} ok, {summary.errors} errors of {summary.documents} documents in "
                f"{summary.seconds:.1f} s ({summary.requests_sent} engine requests sent, {summary.resumed} results "
                f"reused) -> {job.output / RESULTS_FILE}",
                err=True,
            )
            sides.append(_read(job.output, ref.ref))
    return sides[0], sides[1]


def _read(folder: Path, name: str | None = None) -> Side:
    """A finished job's side: (name, folder, records, summary); the name is the versions its records ran."""
    from mapreduce_llm.prompts.compare import read_results

    results, summary = read_results(folder)
    if name is None:
        versions = sorted({f"{r.prompt.name}@{r.prompt.version}" for r in results if r.prompt is not None})
        name = " + ".join(versions) or str(folder)
    return name, str(folder), results, summary


def _not_found(root: Path, name: str) -> str:
    """The ``not_found`` reply of the side's (first) version, when its prompt file is here; else NOT FOUND."""
    from mapreduce_llm.errors import MapReduceError
    from mapreduce_llm.prompts import resolve_prompt
    from mapreduce_llm.prompts.compare import NOT_FOUND

    reference = name.removeprefix("A: ").removeprefix("B: ").split(" + ")[0]
    try:
        return resolve_prompt(reference, root).file.not_found or NOT_FOUND
    except MapReduceError:
        return NOT_FOUND
