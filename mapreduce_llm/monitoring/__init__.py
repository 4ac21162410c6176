"""Monitoring a job as its spec's ``monitoring:`` section says: Prometheus metrics, document profiles, drift.

=====================  ==========================================================================================
:mod:`.metrics`        :class:`JobMetrics`: every ``mapreduce_llm_*`` series, its buckets and bounded label sets
:mod:`.observer`       :class:`MetricsObserver`: counts requests, documents and answers; sets job and drift gauges
:mod:`.profiles`       :class:`DocumentProfile`, ``profile.jsonl``, :class:`ProfileObserver` (the worker thread)
:mod:`.drift`          PSI, centroid distance, topics, version profiles, scores, :class:`DriftTally`
:mod:`.mmd`            the MMD permutation test on chunk embeddings, and the vector samples it compares
:mod:`.verdicts`       :class:`DriftGuard` (minimum samples, the MMD test beside the scores), levels, printed lines
:mod:`.baselines`      :class:`BaselineStore`: ``NAME.json`` files in the baselines folder
:mod:`.export`         :func:`serve_metrics` (``/metrics``) and :func:`push_metrics` (Pushgateway)
=====================  ==========================================================================================

:func:`monitored` is the one way a job is monitored: :func:`mapreduce_llm.runner.run_job` enters it, so a job
started by the CLI, by ``submit`` on a Ray cluster, as a RayJob, by a test or by a benchmark exports the same
figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog

from mapreduce_llm.atomic import write_atomic
from mapreduce_llm.config import JobSpec
from mapreduce_llm.embeddings import TextEmbedder, shared_embedder
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.errors import OutputInUseError
from mapreduce_llm.monitoring.baselines import BaselineStore
from mapreduce_llm.monitoring.drift import DriftScores, DriftTally
from mapreduce_llm.monitoring.export import PushError, push_metrics, serve_metrics
from mapreduce_llm.monitoring.metrics import JobMetrics
from mapreduce_llm.monitoring.observer import MetricsObserver
from mapreduce_llm.monitoring.profiles import DocumentProfile, ProfileObserver, ProfileSink
from mapreduce_llm.monitoring.verdicts import DriftGuard, level
from mapreduce_llm.observers import JobObserver, NoObserver
from mapreduce_llm.output import SUMMARY_FILE, OutputLock
from mapreduce_llm.planning import DocumentPlan
from mapreduce_llm.prompts import PromptRef, default_prompts_dir, load_labels
from mapreduce_llm.results import DocumentResult, JobSummary

log = structlog.get_logger(__name__)

__all__ = [
    "BaselineStore",
    "DocumentProfile",
    "DriftGuard",
    "DriftScores",
    "JobMetrics",
    "JobMonitor",
    "MetricsObserver",
    "Monitoring",
    "ProfileObserver",
    "PushError",
    "job_task",
    "level",
    "monitored",
    "push_metrics",
    "serve_metrics",
]


def job_task(spec: JobSpec) -> str:
    """The task a job runs (the Pushgateway groups a job's figures by job name and task)."""
    return spec.prompt.partition("@")[0]


def prompt_labels(spec: JobSpec) -> dict[tuple[str, str], list[str]]:
    """The labels of the job's task (``prompts/<task>/labels.yaml``) by the ``(task, version)`` they point at."""
    task = job_task(spec)
    labels: dict[tuple[str, str], list[str]] = {}
    for name, version in load_labels(spec.prompts_dir or default_prompts_dir(), task).labels.items():
        labels.setdefault((task, version), []).append(name)
    return labels


class JobMonitor:
    """The observer of a monitored job: metrics and profiles as the job goes; at its end the profiles are
    finished first, then drift is scored from them, then the job gauges are set."""

    def __init__(self, metrics: MetricsObserver, profiles: ProfileObserver, tally: DriftTally | None) -> None:
        self.metrics = metrics
        self.profiles = profiles
        self.tally = tally
        self.summary: JobSummary | None = None
        """The summary the job ended with (None until it ends)."""
        self.drift: DriftScores | None = None
        """The job's drift, once it ended (None: no baseline, or the profiling failed)."""

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        """Count the request."""
        self.metrics.request_done(prompt, request, output)

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        """Count the document and queue its profile."""
        self.metrics.document_done(result, plan)
        self.profiles.document_done(result, plan)

    def job_done(self, summary: JobSummary) -> None:
        """Finish the profiles, score drift, set the gauges."""
        try:
            self.profiles.job_done(summary)
            if self.tally is not None and self.profiles.failure is None:
                self.drift = self.tally.scores()
                self.metrics.drift_scored(self.drift)
                drift = {key: judged.model_dump(exclude_none=True) for key, judged in self.drift.items()}
                log.info("job.drift", baseline=self.tally.baseline.name, drift=drift)
        finally:
            self.metrics.job_done(summary)
            self.summary = summary


@dataclass
class Monitoring:
    """What :func:`monitored` hands the job: give :attr:`observer` to the :class:`~mapreduce_llm.job.Job`."""

    observer: JobObserver
    """Hears the job (a :class:`JobMonitor`; a do-nothing observer when monitoring is off)."""
    metrics: JobMetrics | None = None
    """The job's series (None: monitoring is off)."""
    port: int | None = None
    """The port ``/metrics`` is served on (None: not served)."""
    drift: DriftScores | None = None
    """The job's drift against the baseline, once the block has ended (None: no baseline)."""

    def with_drift(self, summary: JobSummary) -> JobSummary:
        """``summary`` as summary.json has it after the block: with the drift scores, when there are some."""
        return summary if self.drift is None else summary.model_copy(update={"drift": self.drift})


@contextmanager
def monitored(spec: JobSpec, *, embedder: TextEmbedder | None = None) -> Iterator[Monitoring]:
    """Monitor the job the block runs, as ``spec.monitoring`` says (nothing when it is off).

    On entry, before the job starts: the baseline is loaded and ``/metrics`` bound (either failing is a
    ConfigError); the prompt labels of the job's task are exported. ``embedder`` (default: the process's shared
    all-MiniLM-L6-v2) embeds for the profiles; give the job the same one, so that one model serves both.
    While the block runs, ``/metrics`` is served (and ``monitoring.metrics_linger_s`` longer once the job has
    ended) and every document the job computes is profiled into ``OUTPUT/profile.jsonl``. When the block ends,
    if the job reached its end (completed or failed):

    1. its drift scores are added to ``summary.json`` (rewritten atomically under the output folder's lock);
    2. with ``monitoring.pushgateway``, its figures are pushed — one rule for every ending (see
       :func:`~mapreduce_llm.monitoring.export.push_metrics`): a completed job replaces its Pushgateway group,
       a failed or interrupted one updates it without the last-success time, so the group keeps the time of the
       last completed run;
    3. a completed job then raises a push failure (:class:`PushError`) or a profiling failure; a failed job's
       own error wins and those are only logged.

    A job that never reached its end (refused before it started, its engine never came up) pushes nothing.
    """
    config = spec.monitoring
    if not config.enabled:
        yield Monitoring(NoObserver())
        return
    baseline = BaselineStore(config.baselines_dir).load(config.baseline) if config.baseline else None
    embed = config.embed if config.embed is not None else baseline is not None
    metrics = MetricsObserver(labels=prompt_labels(spec), baseline=baseline)
    guard = DriftGuard(config.drift_min_documents, config.drift_min_chunks)
    tally = DriftTally(baseline, guard) if baseline is not None else None
    sinks: list[ProfileSink] = [metrics.profiled]
    if tally is not None:
        sinks.append(lambda profile, _plan: tally.add(profile))
    profiler = ProfileObserver((embedder or shared_embedder()) if embed else None, sinks=sinks, output_dir=spec.output)
    monitor = JobMonitor(metrics, profiler, tally)
    handle = Monitoring(monitor, metrics.metrics)
    try:
        with serve_metrics(metrics.metrics.registry, config.metrics_port, config.metrics_host) as port:
            handle.port = port
            try:
                yield handle
            finally:
                if port is not None and monitor.summary is not None:
                    time.sleep(config.metrics_linger_s)  # a last scrape of the final figures
    except BaseException:
        _finish(spec, monitor, handle, raising=False)
        raise
    _finish(spec, monitor, handle, raising=True)


def _finish(spec: JobSpec, monitor: JobMonitor, handle: Monitoring, *, raising: bool) -> None:
    """The end of a monitored job: drift into summary.json, the push, then the failures (``raising``)."""
    monitor.profiles.close()  # a job that never reached its end leaves the worker to stop
    summary = monitor.summary
    if summary is None:
        return
    handle.drift = monitor.drift
    if monitor.drift is not None:
        _write_summary(spec, handle.with_drift(summary))
    url = spec.monitoring.pushgateway
    if url:
        try:
            push_metrics(
                monitor.metrics.metrics.registry,
                url,
                spec.resolved_job_id,
                job_task(spec),
                completed=summary.status == "completed",
            )
        except PushError as exc:
            if raising:
                raise
            log.error("metrics.push_failed", error=str(exc))
    if raising and monitor.profiles.failure is not None:
        raise monitor.profiles.failure


def _write_summary(spec: JobSpec, summary: JobSummary) -> None:
    """Replace summary.json (the job wrote it without drift) under the output folder's lock."""
    lock = OutputLock(spec.output, spec.resolved_job_id)
    try:
        lock.acquire()
    except OutputInUseError as exc:
        log.warning("summary.drift_not_written", reason=str(exc))
        return
    try:
        write_atomic(spec.output / SUMMARY_FILE, json.dumps(summary.model_dump(), indent=2) + "\n")
    finally:
        lock.release()
