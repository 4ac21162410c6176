"""Prometheus metrics of a job: what it processed, how each prompt version behaved, and drift.

:class:`JobMetrics` holds every metric in its own ``CollectorRegistry`` (prefix ``mapreduce_llm_``, base
units, counters ending ``_total``, histograms; labels only from bounded sets — stage, task, prompt version,
status, error code, class, signal — never document ids or text). :class:`MetricsObserver` fills it from the
pipeline's :class:`~mapreduce_llm.pipeline.JobObserver` hooks. :func:`serve_metrics` serves ``/metrics``
while a job runs; :func:`push_metrics` sends the final figures to a Pushgateway.

With embeddings on (or a baseline given) the observer also embeds every planned document's chunks and its
query in a worker thread, exports retrieval similarity, writes ``DIR/profile.jsonl`` at the end, and — with
a baseline — sets one drift gauge per signal, task and version. Its memory does not grow with the corpus: at
most :data:`PROFILE_QUEUE` documents wait to be profiled, each profile is appended to
``DIR/profile.partial.jsonl`` as it is made, drift is a running tally, and the final merge streams.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, start_http_server

from mapreduce_llm.config import JobSpec
from mapreduce_llm.drift import (
    PROFILE_PARTIAL_FILE,
    Baseline,
    DocumentProfile,
    DriftTally,
    merge_profiles,
    profile_document,
    prompt_classes,
    top_k,
)
from mapreduce_llm.embeddings import Embedder, TextEmbedder
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.planning import DocumentPlan
from mapreduce_llm.prompts import PromptRef
from mapreduce_llm.results import DocumentResult, JobSummary

log = structlog.get_logger(__name__)

TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
SIMILARITY_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0)
# Histograms with negative bucket bounds get no _sum in prometheus-client, hence similarity buckets start at 0
# (negative values count in the first bucket) and confidence is a probability rather than a logprob.
LEVEL_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 16, 32)

LOW_SIMILARITY = 0.2
"""Default top-1 similarity below which a document's retrieval counts as low (MiniLM cosine; unrelated
texts score around 0–0.15, a question and the passage that answers it usually above 0.4)."""
TOP_K = 3
PROFILE_QUEUE = 32
"""Documents waiting to be profiled at most. When the worker thread falls this far behind, the job waits for
it (the plans of queued documents, token ids and all, are what the queue holds). Embedding a document's
chunks is much quicker than generating its outputs, so a job should rarely wait; the bound matters when
the engine outpaces the embedder (or the embedder stalls)."""


class JobMetrics:
    """Every metric of a job, in a dedicated registry (so that tests and several jobs do not collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        tv = ["task", "version"]
        self.documents = Counter(
            "mapreduce_llm_documents_total", "Documents finished, by status.", [*tv, "status"], registry=r
        )
        self.document_errors = Counter(
            "mapreduce_llm_document_errors_total", "Failed documents by error code.", [*tv, "code"], registry=r
        )
        self.chunks = Counter("mapreduce_llm_chunks_total", "Chunks documents were cut into.", tv, registry=r)
        self.requests = Counter(
            "mapreduce_llm_engine_requests_total",
            "Engine requests by stage and status (ok, error).",
            ["stage", *tv, "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "mapreduce_llm_prompt_tokens_total", "Prompt tokens sent to the engine.", ["stage", *tv], registry=r
        )
        self.completion_tokens = Counter(
            "mapreduce_llm_completion_tokens_total", "Tokens the engine generated.", ["stage", *tv], registry=r
        )
        self.cached_tokens = Counter(
            "mapreduce_llm_cached_prompt_tokens_total",
            "Prompt tokens served from vLLM's prefix cache.",
            ["stage", *tv],
            registry=r,
        )
        self.request_seconds = Histogram(
            "mapreduce_llm_request_duration_seconds",
            "Engine request latency, submission to last token.",
            ["stage", *tv],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "mapreduce_llm_document_stage_duration_seconds",
            "Per-document time in each stage (plan, map, reduce, total).",
            ["stage", *tv],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.reduce_levels = Histogram(
            "mapreduce_llm_reduce_levels", "Reduce levels per document.", tv, buckets=LEVEL_BUCKETS, registry=r
        )
        self.prompt_length = Histogram(
            "mapreduce_llm_prompt_length_tokens",
            "Prompt length of each engine request.",
            ["stage", *tv],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.document_length = Histogram(
            "mapreduce_llm_document_length_tokens",
            "Document length in the served model's tokens.",
            tv,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.output_length = Histogram(
            "mapreduce_llm_output_length_tokens",
            "Generated tokens per request (the reduce stage's, or the map stage's for one-chunk documents, "
            "is the final output).",
            ["stage", *tv],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.prompt_classes = Counter(
            "mapreduce_llm_prompt_class_total",
            "Map prompts by class: length bucket/topic cluster (topic from the baseline's centroids, or none).",
            [*tv, "class"],
            registry=r,
        )
        self.confidence = Histogram(
            "mapreduce_llm_output_confidence_ratio",
            "Confidence of each final output: geometric mean probability of its tokens, exp(mean_logprob).",
            tv,
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.top1 = Histogram(
            "mapreduce_llm_retrieval_top1_similarity",
            "Cosine similarity of the query to its most similar chunk, per document.",
            tv,
            buckets=SIMILARITY_BUCKETS,
            registry=r,
        )
        self.topk = Histogram(
            "mapreduce_llm_retrieval_topk_similarity",
            f"Mean cosine similarity of the query to its {TOP_K} most similar chunks, per document.",
            tv,
            buckets=SIMILARITY_BUCKETS,
            registry=r,
        )
        self.retrievals = Counter(
            "mapreduce_llm_retrievals_total",
            "Documents whose chunks were compared with their query, by query kind (question, or the task's "
            "instruction) and quality (low: top-1 under the threshold).",
            [*tv, "query", "quality"],
            registry=r,
        )
        self.chunk_similarity = Histogram(
            "mapreduce_llm_chunk_similarity",
            "Cosine similarity of each chunk to its document's query, by whether retrieval had it mapped.",
            [*tv, "mapped"],
            buckets=SIMILARITY_BUCKETS,
            registry=r,
        )
        self.map_answers = Counter(
            "mapreduce_llm_map_answers_total",
            "Structured map answers by what became of them (kept, not_found, unsupported, low_confidence, "
            "off_topic, parse_failure).",
            [*tv, "status"],
            registry=r,
        )
        self.parse_failures = Counter(
            "mapreduce_llm_answer_parse_failures_total",
            "Engine outputs of output: answer prompts that held no valid record (any stage).",
            tv,
            registry=r,
        )
        self.reretrievals = Counter(
            "mapreduce_llm_reretrievals_total",
            "Documents whose final answer was under the calibrated confidence and re-retrieved, by outcome "
            "(accepted: a re-retrieved answer replaced it; kept: none did).",
            [*tv, "outcome"],
            registry=r,
        )
        self.drift = Gauge(
            "mapreduce_llm_drift_score",
            "Drift of the job's documents against the baseline, per signal (PSI or cosine distance).",
            ["signal", *tv],
            registry=r,
        )
        self.prompt_label = Gauge(
            "mapreduce_llm_prompt_label_info",
            "1 for each label (production, canary, ...) pointing at a prompt version.",
            [*tv, "label"],
            registry=r,
        )
        self.job_seconds = Gauge("mapreduce_llm_job_duration_seconds", "Wall-clock duration of the job.", registry=r)
        self.job_documents = Gauge(
            "mapreduce_llm_job_documents", "Documents of the job, by status (ok, error).", ["status"], registry=r
        )
        self.last_success = Gauge(
            "mapreduce_llm_job_last_success_timestamp_seconds",
            "Unix time at which the job last completed.",
            registry=r,
        )
        self.job_running = Gauge("mapreduce_llm_job_running", "1 while the job runs.", registry=r)


class MetricsObserver:
    """Turns a job's events into :class:`JobMetrics`; implements :class:`~mapreduce_llm.pipeline.JobObserver`.

    ``embedder``: embed chunks and queries (retrieval similarity, topics, profile.jsonl); ``baseline``: the
    reference whose topics name the prompt classes and against which drift is scored at the end.
    ``output_dir``: where ``profile.jsonl`` goes (needs ``embedder`` or ``baseline`` to be useful, but is
    written whenever given). Embedding runs in one worker thread so that the event loop keeps feeding the engine;
    ``queue_size`` bounds the documents waiting for it (:data:`PROFILE_QUEUE`).
    """

    def __init__(
        self,
        metrics: JobMetrics | None = None,
        *,
        embedder: TextEmbedder | None = None,
        baseline: Baseline | None = None,
        output_dir: Path | None = None,
        labels: Mapping[tuple[str, str], list[str]] | None = None,
        low_similarity: float = LOW_SIMILARITY,
        queue_size: int = PROFILE_QUEUE,
    ) -> None:
        if queue_size < 1:
            raise ConfigError(
                f"queue_size must be at least 1, got {queue_size}", parameter="queue_size", value=queue_size
            )
        self.metrics = metrics or JobMetrics()
        self.embedder = embedder
        self.baseline = baseline
        self.output_dir = output_dir
        self.low_similarity = low_similarity
        self.queue_size = queue_size
        self.profiled = 0
        """Profiles made by this run."""
        self.drift: dict[str, dict[str, float]] = {}
        self._tally = DriftTally(baseline) if baseline is not None else None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="profile")
        self._pending: deque[Future[None]] = deque()
        self._partial: TextIO | None = None
        self.finished = False
        """True once ``job_done`` ran: the figures are final."""
        self.metrics.job_running.set(1)
        for (task, version), names in (labels or {}).items():
            for name in names:
                self.metrics.prompt_label.labels(task, version, name).set(1)

    # ---- JobObserver -------------------------------------------------------------------------------------
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
        """Count one document; profile it (in the worker thread) when it was planned.

        Called on the job's event loop: when ``queue_size`` documents already wait to be profiled, it blocks
        until the oldest is done. A failure of the worker thread is raised here (or at ``job_done``).
        """
        m = self.metrics
        task, version = (result.prompt.name, result.prompt.version) if result.prompt else ("unknown", "unknown")
        m.documents.labels(task, version, result.status).inc()
        if result.error is not None:
            m.document_errors.labels(task, version, result.error.code).inc()
        if result.status == "ok":
            m.chunks.labels(task, version).inc(result.chunks)
            m.reduce_levels.labels(task, version).observe(result.levels)
            t = result.timings
            for stage, seconds in (("plan", t.plan_s), ("map", t.map_s), ("reduce", t.reduce_s), ("total", t.total_s)):
                m.stage_seconds.labels(stage, task, version).observe(seconds)
            if result.mean_logprob is not None:
                m.confidence.labels(task, version).observe(math.exp(result.mean_logprob))
            self._answers(result, task, version)
        if plan is not None:
            self._make_room()
            similarities = result.retrieval.similarities if result.retrieval is not None else None
            self._pending.append(self._pool.submit(self._profile, plan, result.mean_logprob, similarities))

    def _make_room(self) -> None:
        """Forget profiling jobs that are done (a finished future holds no plan) and wait for the oldest while
        the queue is full; one worker finishes them in order. ``result()`` re-raises a worker failure."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.queue_size):
            self._pending.popleft().result()

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

    def _profile(self, plan: DocumentPlan, mean_logprob: float | None, similarities: list[float] | None) -> None:
        m, task, version = self.metrics, plan.prompt.task, plan.prompt.version
        profile = profile_document(plan, self.embedder, mean_logprob)
        if profile.similarities is None and similarities is not None:
            profile = profile.model_copy(update={"similarities": similarities})  # computed by the job's retrieval
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
        self.add_profile(profile)

    def drain(self) -> None:
        """Wait until every queued document is profiled; re-raises a failure of the worker thread."""
        while self._pending:
            self._pending.popleft().result()

    def add_profile(self, profile: DocumentProfile) -> None:
        """Keep one document's profile: append it to the partial profile file, count it towards drift."""
        with self._lock:
            self.profiled += 1
            if self._tally is not None:
                self._tally.add(profile)
            if self.output_dir is not None:
                if self._partial is None:
                    self.output_dir.mkdir(parents=True, exist_ok=True)
                    # Appends: the profiles of an interrupted run are merged by the run that completes it.
                    self._partial = (self.output_dir / PROFILE_PARTIAL_FILE).open("a", encoding="utf-8")
                self._partial.write(profile.model_dump_json() + "\n")
                self._partial.flush()

    def job_done(self, summary: JobSummary) -> None:
        """Finish profiling, score drift, write profile.jsonl and set the job gauges.

        A failure of the worker thread is re-raised here, after the profiles made are flushed to the partial
        file (the rerun merges them), not silently dropped.
        """
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)
            self._pending.clear()
            if self._partial is not None:
                self._partial.close()
                self._partial = None
        m = self.metrics
        if self._tally is not None and self.baseline is not None:
            self.drift = self._tally.scores()
            for key, scores in self.drift.items():
                task, _, version = key.partition("@")
                for signal, score in scores.items():
                    m.drift.labels(signal, task, version).set(score)
            log.info("job.drift", baseline=self.baseline.name, scores=self.drift)
        partial = self.output_dir / PROFILE_PARTIAL_FILE if self.output_dir is not None else None
        if partial is not None and partial.is_file():
            merge_profiles(partial.parent, partial)
            partial.unlink()
        m.job_seconds.set(summary.seconds)
        m.job_documents.labels("ok").set(summary.ok)
        m.job_documents.labels("error").set(summary.errors)
        if summary.status == "completed":
            m.last_success.set(summary.finished_at)
        m.job_running.set(0)
        self.finished = True


@contextmanager
def serve_metrics(registry: CollectorRegistry, port: int | None, host: str = "127.0.0.1") -> Iterator[int | None]:
    """Serve ``http://HOST:PORT/metrics`` for the duration of the block; yields the bound port (None: off).

    ``port`` 0 picks a free port.
    """
    if port is None:
        yield None
        return
    server, thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_port)
    log.info("metrics.serving", url=f"http://{host}:{bound}/metrics")
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def push_metrics(registry: CollectorRegistry, url: str, job: str, task: str, timeout: float = 10.0) -> None:
    """Replace the Pushgateway group ``{job, task}`` with the registry's current figures."""
    push_to_gateway(url, job=job, registry=registry, grouping_key={"task": task}, timeout=timeout)
    log.info("metrics.pushed", url=url, job=job, task=task, at=time.time())


def job_task(spec: JobSpec) -> str:
    """The task a job runs (the Pushgateway groups a job's figures by job name and task)."""
    return spec.prompt.partition("@")[0]


def build_observer(
    spec: JobSpec,
    *,
    embed: bool | None = None,
    baseline: str | None = None,
    baselines_dir: Path | None = None,
    low_similarity: float = LOW_SIMILARITY,
) -> MetricsObserver:
    """The metrics observer of a job: embeddings on when asked, or by default when a baseline is given;
    the baseline loaded from ``baselines_dir`` (default :func:`~mapreduce_llm.drift.default_baselines_dir`);
    the task's prompt labels exported for canary-vs-production views."""
    from mapreduce_llm.drift import default_baselines_dir, load_baseline
    from mapreduce_llm.prompts import default_prompts_dir, load_labels

    reference = load_baseline(baselines_dir or default_baselines_dir(), baseline) if baseline else None
    use_embeddings = embed if embed is not None else reference is not None
    task = job_task(spec)
    labels: dict[tuple[str, str], list[str]] = {}
    for name, version in load_labels(spec.prompts_dir or default_prompts_dir(), task).labels.items():
        labels.setdefault((task, version), []).append(name)
    return MetricsObserver(
        embedder=Embedder() if use_embeddings else None,
        baseline=reference,
        output_dir=spec.output,
        labels=labels,
        low_similarity=low_similarity,
    )
