"""Guarded label moves: ``prompts rollout`` and ``prompts promote`` with the rollout guard and the history.

:func:`guarded_rollout` resolves what production runs, asks the evidence (result folders or Prometheus) for both
versions' figures, judges them (:mod:`.guard`), writes labels.yaml when the guard allows it and appends what
happened — applied or refused — to history.jsonl (:mod:`.history`). :func:`guarded_promote` does the same for a
label. Both log the decision and its numbers (``prompts.guard``, ``prompts.rollout``, ``prompts.promote``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from mapreduce_llm.errors import ConfigError
from mapreduce_llm.prompts.guard import Figures, GuardConfig, GuardReport, RolloutPlan, decide, judge
from mapreduce_llm.prompts.history import HistoryEntry, append_history
from mapreduce_llm.prompts.registry import list_versions, load_labels, promote, select_prompts, set_rollout

log = structlog.get_logger(__name__)


class Evidence(Protocol):
    """Where the guard's figures come from (:mod:`.evidence`: result folders or Prometheus)."""

    def pair(self, task: str, production: str, canary: str) -> tuple[Figures, Figures]:
        """(production's figures, the canary's)."""


@dataclass(frozen=True)
class Actor:
    """Who acts, when (UTC ISO) and why: what the history records."""

    who: str
    at: str
    reason: str | None = None
    force: bool = False


@dataclass(frozen=True)
class RolloutOutcome:
    """What ``prompts rollout`` did."""

    task: str
    version: str
    base: str
    production: str | None
    """The version the base resolves to (None: no guard ran)."""
    before: float
    """The split's weight before (0: no split)."""
    plan: RolloutPlan
    report: GuardReport | None
    splits: dict[str, float]
    """Every split's weight after."""

    @property
    def refused(self) -> bool:
        """The guard refused the change, or rolled the split back: exit status 2."""
        return self.plan.action in ("refused", "rollback")


@dataclass(frozen=True)
class PromoteOutcome:
    """What ``prompts promote`` did."""

    task: str
    label: str
    version: str
    before: str | None
    report: GuardReport | None
    applied: bool
    why: str


def _check_actor(actor: Actor) -> None:
    if actor.force and not (actor.reason or "").strip():
        raise ConfigError(
            "--force needs --reason TEXT: the history records why the guard was overridden", parameter="reason"
        )


def _check_version(root: Path, task: str, version: str) -> None:
    if version not in list_versions(root, task):
        raise ConfigError(
            f"prompt {task} has no version {version}; released: {', '.join(list_versions(root, task)) or '(none)'}",
            parameter="version",
            value=version,
        )


def _judge(task: str, production: str, canary: str, evidence: Evidence, config: GuardConfig) -> GuardReport:
    if production == canary:
        raise ConfigError(
            f"{task}@{canary} is what production runs already: the guard has nothing to compare it with; "
            "roll out or promote another version",
            parameter="version",
            value=canary,
        )
    prod, can = evidence.pair(task, production, canary)
    report = judge(task, prod, can, config)
    log.info("prompts.guard", task=task, canary_version=canary, production_version=production, **report.as_dict())
    return report


def guarded_rollout(
    root: Path,
    task: str,
    version: str,
    weight: float | None,
    actor: Actor,
    *,
    base: str | None = None,
    evidence: Evidence | None = None,
    rollback: bool = False,
) -> RolloutOutcome:
    """Move ``version``'s split to ``weight`` percent if the guard allows it; record it in history.jsonl.

    ``weight`` None with ``rollback``: check the split as it is and roll it back when the canary is worse.
    """
    _check_actor(actor)
    if weight is None and not rollback:
        raise ConfigError("give --weight PERCENT (or --rollback with evidence to check the current split)")
    if rollback and evidence is None:
        raise ConfigError(
            "--rollback needs evidence to judge: --prometheus URL, or --canary-results DIR --production-results DIR",
            parameter="rollback",
        )
    if rollback and actor.force:
        raise ConfigError("--rollback and --force contradict each other; give one", parameter="force")
    if weight is not None and not 0 <= weight <= 100:
        raise ConfigError(f"--weight must be a percentage in [0, 100], got {weight:g}", parameter="weight")
    _check_version(root, task, version)
    labels = load_labels(root, task)
    config = labels.guard or GuardConfig()
    base_name = base or (labels.rollout.base if labels.rollout else "production")
    before = next((s.weight for s in labels.rollout.splits if s.version == version), 0.0) if labels.rollout else 0.0
    production, report = None, None
    if evidence is not None:
        production = select_prompts(f"{task}@{base_name}", root).base.version
        report = _judge(task, production, version, evidence, config)
    plan = decide(before, weight, report, config, force=actor.force, rollback=rollback)
    if plan.weight is not None:
        set_rollout(root, task, version, plan.weight, base)
    after = load_labels(root, task).rollout
    splits = {s.version: s.weight for s in after.splits} if after else {}
    outcome = RolloutOutcome(task, version, base_name, production, before, plan, report, splits)
    if plan.action != "kept":
        append_history(
            root,
            task,
            HistoryEntry(
                at=actor.at,
                who=actor.who,
                task=task,
                action="rollback" if plan.action == "rollback" else "rollout",
                applied=plan.action != "refused",
                version=version,
                from_=before,
                to=plan.weight if plan.weight is not None else weight,
                base=base_name,
                splits=splits,
                reason=actor.reason,
                forced=plan.forced,
                guard=report.as_dict() if report is not None else None,
            ),
        )
    event = log.warning if outcome.refused else log.info
    event(
        f"prompts.{plan.action}",
        task=task,
        version=version,
        before=before,
        weight=weight,
        written=plan.weight,
        why=plan.why,
        forced=plan.forced,
        who=actor.who,
    )
    return outcome


def guarded_promote(
    root: Path, task: str, version: str, label: str, actor: Actor, *, evidence: Evidence | None = None
) -> PromoteOutcome:
    """Point ``label`` at ``version``; with evidence, only when the guard passes against production (or forced)."""
    _check_actor(actor)
    _check_version(root, task, version)
    labels = load_labels(root, task)
    before = labels.labels.get(label)
    report = None
    applied, why = True, "no evidence given: promoted unguarded"
    if evidence is not None:
        production = labels.labels.get("production")
        if production is None:
            raise ConfigError(
                f"{task} has no production label to judge {version} against; promote without evidence first",
                parameter="label",
            )
        report = _judge(task, production, version, evidence, labels.guard or GuardConfig())
        applied, why = report.decision == "pass", report.why
        if not applied and actor.force:
            applied, why = True, f"forced past the guard ({report.why})"
    if applied:
        promote(root, task, version, label)
    append_history(
        root,
        task,
        HistoryEntry(
            at=actor.at,
            who=actor.who,
            task=task,
            action="promote",
            applied=applied,
            label=label,
            from_=before,
            to=version,
            reason=actor.reason,
            forced=applied and report is not None and report.decision != "pass",
            guard=report.as_dict() if report is not None else None,
        ),
    )
    (log.info if applied else log.warning)(
        "prompts.promote", task=task, label=label, before=before, version=version, applied=applied, why=why
    )
    return PromoteOutcome(task, label, version, before, report, applied, why)
