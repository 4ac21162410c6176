"""``prompts promote``, ``prompts rollout`` (guarded) and ``prompts history``.

The guard, the history and labels.yaml are :mod:`mapreduce_llm.prompts.rollouts`'s; these commands parse the
options, build the evidence, print the guard's table and the outcome. Exit status 2: the guard refused the change
or rolled the canary back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mapreduce_llm.cli.library import Library

if TYPE_CHECKING:
    from mapreduce_llm.prompts.guard import GuardReport
    from mapreduce_llm.prompts.rollouts import Actor, Evidence

_DIR_OPTION = click.option(
    "--dir",
    "prompts_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Prompts folder (default: $MAPREDUCE_LLM_PROMPTS, ./prompts, or the project's prompts/).",
)
_FOLDER = click.Path(path_type=Path, file_okay=False, exists=True)


def _guard_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--canary-results",
                type=_FOLDER,
                help="Evidence: a finished job's output folder with documents of the new version.",
            ),
            click.option(
                "--production-results",
                type=_FOLDER,
                help="... and one with documents of production's version (the same folder twice for a job run "
                "under the rollout: each side counts only its own version).",
            ),
            click.option(
                "--prometheus",
                metavar="URL",
                help="Evidence: this Prometheus server's job metrics (e.g. http://127.0.0.1:9090), summed per "
                "version over every finished job (the Pushgateway's groups).",
            ),
            click.option(
                "--force",
                is_flag=True,
                help="Apply the change although the guard did not pass (needs --reason; recorded in the history).",
            ),
            click.option("--reason", metavar="TEXT", help="Why: recorded in prompts/<task>/history.jsonl."),
        ]
    ):
        command = option(command)
    return command


def _root(prompts_dir: Path | None) -> Path:
    from mapreduce_llm.prompts import default_prompts_dir

    return prompts_dir or default_prompts_dir()


def _evidence(canary: Path | None, production: Path | None, prometheus: str | None) -> Evidence | None:
    if (canary is None) != (production is None):
        raise click.UsageError(
            "--canary-results and --production-results go together (give the same folder twice for a job run "
            "under the rollout)"
        )
    if prometheus and canary is not None:
        raise click.UsageError("give --prometheus URL or --canary-results/--production-results, not both")
    if prometheus:
        from mapreduce_llm.prompts.evidence import PrometheusEvidence

        return PrometheusEvidence(prometheus)
    if canary is not None and production is not None:
        from mapreduce_llm.prompts.evidence import ResultsEvidence

        return ResultsEvidence(canary, production)
    return None


def _actor(ctx: click.Context, root: Path, reason: str | None, force: bool) -> Actor:
    from mapreduce_llm.prompts.history import iso
    from mapreduce_llm.prompts.rollouts import Actor

    library = Library.of(ctx)
    return Actor(who=library.who(root), at=iso(library.now()), reason=reason, force=force)


def _print_report(report: GuardReport | None) -> None:
    if report is not None:
        from mapreduce_llm.prompts.guard import report_lines

        for line in report_lines(report):
            click.echo(line)


@click.command("promote")
@click.argument("task")
@click.argument("version")
@click.option("--label", required=True, help="Label to point at VERSION (e.g. production, canary).")
@_guard_options
@_DIR_OPTION
@click.pass_context
def prompts_promote(
    ctx: click.Context,
    task: str,
    version: str,
    label: str,
    canary_results: Path | None,
    production_results: Path | None,
    prometheus: str | None,
    force: bool,
    reason: str | None,
    prompts_dir: Path | None,
) -> None:
    """Point a label at a released version (edits labels.yaml; appends to history.jsonl).

    With evidence (--prometheus, or --canary-results and --production-results), VERSION is judged against the
    version production points at, as `rollout` judges a canary, and the label moves only when the guard passes
    (or with --force). Without evidence the label moves unguarded: `rollout` is the guarded path to production.
    """
    from mapreduce_llm.prompts.rollouts import guarded_promote

    root = _root(prompts_dir)
    evidence = _evidence(canary_results, production_results, prometheus)
    outcome = guarded_promote(root, task, version, label, _actor(ctx, root, reason, force), evidence=evidence)
    _print_report(outcome.report)
    if not outcome.applied:
        click.echo(f"refused: {task}@{label} stays at {outcome.before or '(unset)'}: {outcome.why}")
        raise SystemExit(2)
    click.echo(f"{task}@{label} -> {version} ({root / task / 'labels.yaml'})")
    if outcome.report is not None:
        click.echo(outcome.why if outcome.why.startswith("forced") else f"allowed: {outcome.why}")


@click.command("rollout")
@click.argument("task")
@click.option("--version", "version", required=True, help="Version that gets a share of documents.")
@click.option("--weight", type=float, help="Percent of documents (0 removes the split).")
@click.option("--base", help="Label or version for the other documents (default: production).")
@click.option(
    "--rollback",
    is_flag=True,
    help="Set the weight to 0 when the guard finds the canary worse (without --weight: check the split as it is).",
)
@_guard_options
@_DIR_OPTION
@click.pass_context
def prompts_rollout(
    ctx: click.Context,
    task: str,
    version: str,
    weight: float | None,
    base: str | None,
    rollback: bool,
    canary_results: Path | None,
    production_results: Path | None,
    prometheus: str | None,
    force: bool,
    reason: str | None,
    prompts_dir: Path | None,
) -> None:
    """Give a version a sticky percentage of documents under `TASK` (edits labels.yaml; appends to history.jsonl).

    \b
    The guard compares the canary (VERSION) with production (the rollout's base) on error rate, parse
    failures, "not found" rate, mean confidence and drift, against the thresholds of labels.yaml's `guard:`
    (defaults without one), from --prometheus URL or from --canary-results and --production-results.
      * Widening (a higher weight) needs a passing guard. Without evidence, or with fewer than
        guard.min_documents (20) documents on a side, a rollout may only reach guard.first_step (10%).
      * A canary worse than production is refused; with --rollback its weight is set to 0.
      * Lowering a weight is never guarded. --force --reason TEXT overrides a refusal (recorded).
    Exit status 2 when the guard refused the change or rolled the canary back.

    \b
    Examples:
      mapreduce-llm prompts rollout qa --version 2.0.0 --weight 10
      mapreduce-llm prompts rollout qa --version 2.0.0 --weight 50 --prometheus http://127.0.0.1:9090
      mapreduce-llm prompts rollout qa --version 2.0.0 --weight 50 --canary-results out/qa --production-results out/qa
      mapreduce-llm prompts rollout qa --version 2.0.0 --rollback --prometheus http://127.0.0.1:9090   # from cron
    """
    from mapreduce_llm.prompts.rollouts import guarded_rollout

    root = _root(prompts_dir)
    evidence = _evidence(canary_results, production_results, prometheus)
    actor = _actor(ctx, root, reason, force)
    outcome = guarded_rollout(root, task, version, weight, actor, base=base, evidence=evidence, rollback=rollback)
    _print_report(outcome.report)
    if outcome.plan.weight is not None:
        path = root / task / "labels.yaml"
        if outcome.splits:
            splits = ", ".join(f"{v} {w:g}%" for v, w in outcome.splits.items())
            click.echo(f"{task}: {splits}; the rest on {outcome.base} ({path})")
        else:
            click.echo(f"{task}: no rollout; every document runs the default version ({path})")
    click.echo(outcome.plan.why)
    if outcome.refused:
        raise SystemExit(2)


@click.command("history")
@click.argument("task")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as a JSON array.")
@_DIR_OPTION
def prompts_history(task: str, as_json: bool, prompts_dir: Path | None) -> None:
    """Who moved TASK's labels and rollout, when, from what to what, why, and what the guard said."""
    from mapreduce_llm.errors import ConfigError
    from mapreduce_llm.prompts import list_tasks
    from mapreduce_llm.prompts.history import entry_line, history_path, read_history

    root = _root(prompts_dir)
    if task not in list_tasks(root):
        raise ConfigError(
            f"no prompt task {task!r} in {root}; tasks: {', '.join(list_tasks(root)) or '(none)'}",
            parameter="task",
            value=task,
        )
    entries = read_history(root, task)
    if as_json:
        click.echo(json.dumps([e.model_dump(by_alias=True, exclude_none=True) for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"no history for {task} yet ({history_path(root, task)})")
    for entry in entries:
        click.echo(entry_line(entry))
