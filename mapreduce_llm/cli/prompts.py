"""``prompts``: versioned prompt files, their labels, rollouts and the lock of released versions."""

from __future__ import annotations

from pathlib import Path

import click

from mapreduce_llm.cli.library import Library
from mapreduce_llm.cli.prompts_compare import compare
from mapreduce_llm.cli.rollouts import prompts_history, prompts_promote, prompts_rollout

_DIR_OPTION = click.option(
    "--dir",
    "prompts_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Prompts folder (default: $MAPREDUCE_LLM_PROMPTS, ./prompts, or the project's prompts/).",
)


def _root(prompts_dir: Path | None) -> Path:
    from mapreduce_llm.prompts import default_prompts_dir

    return prompts_dir or default_prompts_dir()


@click.group()
def prompts() -> None:
    """Versioned prompt files: prompts/<task>/<version>.yaml, labels.yaml, prompts.lock.

    \b
    Rolling out a new version:
      mapreduce-llm prompts lock                                 # release the new file
      mapreduce-llm prompts rollout qa --version 1.1.0 --weight 10
      mapreduce-llm prompts rollout qa --version 1.1.0 --weight 50 --prometheus http://127.0.0.1:9090  # guarded
      mapreduce-llm prompts promote qa 1.1.0 --label production  # then: rollout ... --weight 0
      mapreduce-llm prompts history qa                           # who moved what, when, why

    \b
    Comparing two versions on documents with expected answers first:
      mapreduce-llm prompts compare qa 1.0.0 1.1.0 --input questions.jsonl --output out/compare-qa
    """


prompts.add_command(compare)
# Labels, guarded rollouts and their history (cli/rollouts.py).
for _command in (prompts_promote, prompts_rollout, prompts_history):
    prompts.add_command(_command)


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
@click.pass_context
def prompts_render(
    ctx: click.Context, reference: str, input_: Path, max_model_len: int, limit: int, prompts_dir: Path | None
) -> None:
    """Print the exact map prompt the model receives for the first chunk of each document."""
    from mapreduce_llm.config import ChunkingConfig
    from mapreduce_llm.documents import read_documents
    from mapreduce_llm.errors import DocumentError
    from mapreduce_llm.planning import plan_document
    from mapreduce_llm.prompts import select_prompts
    from mapreduce_llm.tokenization import HFTokenizer

    selection = select_prompts(reference, _root(prompts_dir))
    tokenizer = HFTokenizer(Library.of(ctx).prepare_model())
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
