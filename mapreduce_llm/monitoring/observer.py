"""The job's events as Prometheus figures: :class:`MetricsObserver` fills :class:`JobMetrics`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.monitoring.drift import Baseline, DriftScores, prompt_classes
from mapreduce_llm.monitoring.metrics import LOW_SIMILARITY, TOP_K, JobMetrics
from mapreduce_llm.monitoring.profiles import DocumentProfile
from mapreduce_llm.planning import DocumentPlan
from mapreduce_llm.prompts import PromptRef
from mapreduce_llm.results import DocumentResult, JobSummary


def top_k(similarities: Sequence[float], k: int) -> tuple[float, float]:
    """(best similarity, mean of the best ``k``) of one query against its chunks."""
    ordered = sorted(similarities, reverse=True)[: max(1, k)]
    return ordered[0], sum(ordered) / len(ordered)


class MetricsObserver:
    """Counts a job's requests, documents and answers, and sets its job and drift gauges; a
    :class:`~mapreduce_llm.observers.JobObserver`, and a sink of document profiles (:meth:`profiled`).

    ``labels``: the labels (production, canary, ...) pointing at each ``(task, version)``, exported for
    canary-vs-production views. ``baseline``: whose topics name the prompt classes. ``low_similarity``: the top-1
    similarity under which a document's retrieval counts as low.
    """

    def __init__(
        self,
        metrics: JobMetrics | None = None,
        *,
        labels: Mapping[tuple[str, str], list[str]] | None = None,
        baseline: Baseline | None = None,
        low_similarity: float = LOW_SIMILARITY,
    ) -> None:
        self.metrics = metrics or JobMetrics()
        self.baseline = baseline
        self.low_similarity = low_similarity
        self.metrics.job_running.set(1)
        for (task, version), names in (labels or {}).items():
            for name in names:
                self.metrics.prompt_label.labels(task, version, name).set(1)

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        """Count one engine request, its tokens and latency."""
        m, stage, task, version = self.metrics, request.stage, prompt.task, prompt.version
        m.prompt_length.labels(stage, task, version).observe(len(request.prompt_token_ids))
        if output is None:
            m.requests.labels(stage, task, version, "error").inc()
            return
        m.requests.labels(stage, task, version, "ok").inc()
        m.prompt_tokens.labels(stage, task, version).inc(output.prompt_tokens)
        m.completion_tokens.labels(stage, task, version).inc(output.completion_tokens)
        m.cached_tokens.labels(stage, task, version).inc(output.cached_prompt_tokens or 0)
        m.output_length.labels(stage, task, version).observe(output.completion_tokens)
        m.request_seconds.labels(stage, task, version).observe(output.seconds)

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        """Count one document: status, error code, "not found", chunks, levels, stage times, confidence, answers."""
        m = self.metrics
        task, version = (result.prompt.name, result.prompt.version) if result.prompt else ("unknown", "unknown")
        m.documents.labels(task, version, result.status).inc()
        if result.error is not None:
            m.document_errors.labels(task, version, result.error.code).inc()
        if result.status != "ok":
            return
        if result.not_found is not None:  # the series exists (at 0) for every version that answers questions
            m.not_found.labels(task, version).inc(int(result.not_found))
        m.chunks.labels(task, version).inc(result.chunks)
        m.reduce_levels.labels(task, version).observe(result.levels)
        t = result.timings
        for stage, seconds in (("plan", t.plan_s), ("map", t.map_s), ("reduce", t.reduce_s), ("total", t.total_s)):
            m.stage_seconds.labels(stage, task, version).observe(seconds)
        if result.mean_logprob is not None:
            m.confidence.labels(task, version).observe(math.exp(result.mean_logprob))
        self._answers(result, task, version)

    def _answers(self, result: DocumentResult, task: str, version: str) -> None:
        """Retrieval similarity per chunk, structured answers' fates and re-retrieval of one document."""
        m = self.metrics
        if result.retrieval is not None:
            mapped = set(result.retrieval.mapped)
            for index, similarity in enumerate(result.retrieval.similarities):
                m.chunk_similarity.labels(task, version, "yes" if index in mapped else "no").observe(similarity)
        for answer in result.answers:
            m.map_answers.labels(task, version, answer.status).inc()
        if result.parse_failures:
            m.parse_failures.labels(task, version).inc(result.parse_failures)
        if result.reretrieval is not None and result.reretrieval.triggered:
            accepted = any(r.accepted for r in result.reretrieval.rounds)
            m.reretrievals.labels(task, version, "accepted" if accepted else "kept").inc()

    def profiled(self, profile: DocumentProfile, plan: DocumentPlan) -> None:
        """Observe one document's profile: its length, its map prompts' classes and its retrieval similarity."""
        m, task, version = self.metrics, profile.task, profile.version
        m.document_length.labels(task, version).observe(profile.document_tokens)
        reference = self.baseline.versions.get(profile.key) if self.baseline else None
        for cls in prompt_classes(profile, reference):
            m.prompt_classes.labels(task, version, cls).inc()
        if profile.similarities:
            best, mean_k = top_k(profile.similarities, TOP_K)
            m.top1.labels(task, version).observe(best)
            m.topk.labels(task, version).observe(mean_k)
            quality = "low" if best < self.low_similarity else "ok"
            query = "question" if plan.document.question else "instruction"
            m.retrievals.labels(task, version, query, quality).inc()

    def drift_scored(self, drift: DriftScores) -> None:
        """Per task and version: ``drift_insufficient`` (1 or 0); when scored, one drift gauge per signal and the
        MMD statistic and p-value (when there is one). An insufficient sample sets nothing else."""
        m = self.metrics
        for key, judged in drift.items():
            task, _, version = key.partition("@")
            m.drift_insufficient.labels(task, version).set(1 if judged.status == "insufficient" else 0)
            if judged.status == "insufficient":
                continue
            for signal, score in judged.scores.items():
                m.drift.labels(signal, task, version).set(score)
            if judged.mmd is not None and judged.mmd_p_value is not None:
                m.drift_mmd.labels(task, version).set(judged.mmd)
                m.drift_mmd_p_value.labels(task, version).set(judged.mmd_p_value)

    def job_done(self, summary: JobSummary) -> None:
        """Set the job gauges: duration, documents by status, last success (a completed job only), not running."""
        m = self.metrics
        m.job_seconds.set(summary.seconds)
        m.job_documents.labels("ok").set(summary.ok)
        m.job_documents.labels("error").set(summary.errors)
        if summary.status == "completed":
            m.last_success.set(summary.finished_at)
        m.job_running.set(0)
