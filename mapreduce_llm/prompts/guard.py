"""The rollout guard: is a canary prompt version worse than production, and may its rollout widen?

:class:`GuardConfig` is the ``guard:`` section of a task's ``labels.yaml``; every field has a default, so a task
without one is guarded too. :class:`Figures` is what one version did (from finished result folders or from
Prometheus: :mod:`mapreduce_llm.prompts.evidence`); :func:`judge` compares canary with production metric by metric;
:func:`decide` turns that judgement into what ``prompts rollout`` may do.

A canary is worse when a rate that should be low (errors, parse failures, "not found" answers, drift) is higher
than production's by more than its threshold, or its mean confidence is lower by more than its threshold. Either
side with fewer than ``min_documents`` documents is *insufficient data*, never a pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import Field

from mapreduce_llm.common import StrictModel

Verdict = Literal["ok", "worse", "n/a"]
Decision = Literal["pass", "fail", "insufficient"]


class GuardConfig(StrictModel):
    """``guard:`` in labels.yaml: how much worse than production a canary may be before its rollout stops."""

    min_documents: int = Field(default=20, ge=1)
    """Documents per side (canary and production) below which the guard reports insufficient data."""
    first_step: float = Field(default=10, ge=0, le=100)
    """Weight (percent) a rollout may reach without evidence: the canary's first documents are the evidence."""
    error_rate: float = Field(default=0.05, ge=0)
    """Largest rise in the share of failed documents (0.05: five points; the canary alert's threshold)."""
    parse_failure_rate: float = Field(default=0.05, ge=0)
    """Largest rise in answer parse failures per map answer (``output: answer`` prompts)."""
    not_found_rate: float = Field(default=0.10, ge=0)
    """Largest rise in the share of answered documents that came back "not found" (qa)."""
    mean_confidence: float = Field(default=0.10, ge=0)
    """Largest drop in mean output confidence, exp(mean token logprob) (0.1: the canary alert's threshold)."""
    drift_score: float = Field(default=0.10, ge=0)
    """Largest rise in the highest drift score (0.1: where PSI's "moderate shift" begins)."""


@dataclass(frozen=True)
class Figures:
    """What one prompt version did, from one source (None: not measured there)."""

    version: str
    source: str
    """Where the figures come from (a results folder, or a Prometheus URL)."""
    documents: int = 0
    """Documents that ran this version (ok and error)."""
    errors: int = 0
    not_found: int | None = None
    """Answered documents that came back "not found" (None: the task has no such answer)."""
    not_found_of: int | None = None
    """The documents ``not_found`` is counted over (None: every document with an output). From result folders
    whose input carries expected answers, documents known not to hold the answer are left out of both."""
    map_answers: int = 0
    parse_failures: int = 0
    mean_confidence: float | None = None
    drift_score: float | None = None
    """The highest drift score of any signal."""

    @property
    def ok(self) -> int:
        """Documents with an output."""
        return self.documents - self.errors

    def value(self, metric: str) -> float | None:
        """One guarded metric (see :data:`METRICS`); None when it cannot be computed from these figures."""
        if metric == "error_rate":
            return self.errors / self.documents if self.documents else None
        if metric == "parse_failure_rate":
            return self.parse_failures / self.map_answers if self.map_answers else None
        if metric == "not_found_rate":
            base = self.ok if self.not_found_of is None else self.not_found_of
            return self.not_found / base if self.not_found is not None and base else None
        if metric == "mean_confidence":
            return self.mean_confidence
        if metric == "drift_score":
            return self.drift_score
        raise KeyError(metric)


METRICS: dict[str, int] = {
    "error_rate": +1,
    "parse_failure_rate": +1,
    "not_found_rate": +1,
    "mean_confidence": -1,
    "drift_score": +1,
}
"""The guarded metrics and their bad direction: +1 when higher is worse, -1 when lower is worse."""


@dataclass(frozen=True)
class Check:
    """One row of the guard's table."""

    metric: str
    production: float | None
    canary: float | None
    threshold: float
    verdict: Verdict


@dataclass(frozen=True)
class GuardReport:
    """The guard's judgement of a canary against production, with every number behind it."""

    task: str
    decision: Decision
    why: str
    canary: Figures
    production: Figures
    checks: tuple[Check, ...]
    min_documents: int

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (history.jsonl, logs)."""
        return {
            "decision": self.decision,
            "why": self.why,
            "min_documents": self.min_documents,
            "canary": asdict(self.canary),
            "production": asdict(self.production),
            "checks": [asdict(c) for c in self.checks],
        }


def judge(task: str, production: Figures, canary: Figures, config: GuardConfig) -> GuardReport:
    """Compare ``canary`` with ``production`` metric by metric under ``config``'s thresholds."""
    checks = []
    for metric, direction in METRICS.items():
        threshold = getattr(config, metric)
        prod, can = production.value(metric), canary.value(metric)
        verdict: Verdict = "n/a"
        if prod is not None and can is not None:
            verdict = "worse" if direction * (can - prod) > threshold + 1e-12 else "ok"
        checks.append(Check(metric, prod, can, threshold, verdict))
    worse = [c for c in checks if c.verdict == "worse"]
    small = [
        f"{side} has {figures.documents} documents of {task}@{figures.version} in {figures.source}"
        for side, figures in (("production", production), ("canary", canary))
        if figures.documents < config.min_documents
    ]
    decision: Decision
    if small:
        decision = "insufficient"
        why = f"insufficient data: {'; '.join(small)} (fewer than {config.min_documents}, guard.min_documents)"
    elif worse:
        decision = "fail"
        why = "canary worse than production: " + "; ".join(_worse_text(c) for c in worse)
    else:
        decision = "pass"
        judged = [c.metric for c in checks if c.verdict == "ok"]
        why = f"canary within every threshold ({', '.join(judged) or 'no metric measurable'})"
    return GuardReport(task, decision, why, canary, production, tuple(checks), config.min_documents)


def _worse_text(check: Check) -> str:
    assert check.canary is not None and check.production is not None
    direction = "above" if METRICS[check.metric] > 0 else "below"
    gap = abs(check.canary - check.production)
    return (
        f"{check.metric} {check.canary:.4f} is {gap:.4f} {direction} production's {check.production:.4f} "
        f"(limit {check.threshold:g})"
    )


def report_lines(report: GuardReport) -> list[str]:
    """The guard's table (metric, production, canary, threshold, verdict) and its decision, as printed."""
    p, c = report.production, report.canary
    lines = [
        f"guard {report.task}: canary {c.version} ({c.source}) vs production {p.version} ({p.source})",
        f"{'metric':<20}{'production':>12}{'canary':>12}{'threshold':>12}  verdict",
    ]
    enough = "ok" if min(p.documents, c.documents) >= report.min_documents else "too few"
    lines.append(
        f"{'documents':<20}{p.documents:>12}{c.documents:>12}{'>= ' + str(report.min_documents):>12}  {enough}"
    )
    for check in report.checks:
        sign = "+" if METRICS[check.metric] > 0 else "-"
        lines.append(
            f"{check.metric:<20}{_number(check.production):>12}{_number(check.canary):>12}"
            f"{sign + format(check.threshold, 'g'):>12}  {check.verdict}"
        )
    lines.append(f"decision: {report.decision}: {report.why}")
    return lines


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@dataclass(frozen=True)
class RolloutPlan:
    """What a rollout command may do: the weight to write (None: write nothing) and why."""

    weight: float | None
    action: Literal["rollout", "rollback", "refused", "kept"]
    """``rollout``: write ``weight``; ``rollback``: the guard failed, write 0; ``refused``: widening refused;
    ``kept``: a check only (``--rollback`` without ``--weight``) that changed nothing."""
    why: str
    forced: bool = False


def decide(
    current: float,
    target: float | None,
    report: GuardReport | None,
    config: GuardConfig,
    *,
    force: bool = False,
    rollback: bool = False,
) -> RolloutPlan:
    """What may happen to a split now at ``current`` percent that was asked to go to ``target``.

    ``rollback``: a failed guard sets the weight to 0. ``target`` None (with ``rollback``): only check. Lowering a
    weight is never guarded. Widening needs a passing guard, except up to ``config.first_step`` percent when there
    is no evidence or too little; ``force`` widens anyway (the caller records why).
    """
    if rollback and report is not None and report.decision == "fail":
        return RolloutPlan(0.0, "rollback", f"rolled back to 0%: {report.why}")
    if target is None:
        return RolloutPlan(None, "kept", f"kept at {current:g}%: {report.why if report else 'no evidence'}")
    if target <= current:
        return RolloutPlan(
            target, "rollout", "allowed: " + ("lowering a weight is not guarded" if target < current else "no change")
        )
    if report is not None and report.decision == "pass":
        return RolloutPlan(target, "rollout", f"allowed: {report.why}")
    if report is not None and report.decision == "fail":
        refusal = f"refused: {report.why}"
    elif target <= config.first_step:
        evidence = "no evidence given" if report is None else report.why
        return RolloutPlan(
            target, "rollout", f"allowed up to the first step ({config.first_step:g}%, guard.first_step): {evidence}"
        )
    else:
        evidence = "no evidence given" if report is None else report.why
        refusal = (
            f"refused: {evidence}; widening past {config.first_step:g}% (guard.first_step) needs a passing guard: "
            "pass --prometheus URL or --canary-results DIR --production-results DIR"
        )
    if force:
        return RolloutPlan(target, "rollout", f"forced past the guard: {refusal}", forced=True)
    return RolloutPlan(None, "refused", refusal)
