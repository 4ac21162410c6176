"""Every Prometheus series a job exports, in a registry of its own.

Names start with ``mapreduce_llm_``, values are in base units (seconds, tokens), counters end in ``_total`` and
distributions are histograms. Labels come only from bounded sets — stage, task, prompt version, status, error
code, class, query kind, quality, signal, label, mapped, outcome — never document ids or text. Who fills them:
:class:`~mapreduce_llm.monitoring.observer.MetricsObserver`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
"""Chunks the mean top-k similarity is taken over."""
LAST_SUCCESS = "mapreduce_llm_job_last_success_timestamp_seconds"
"""The one series a failed job does not push (see :func:`mapreduce_llm.monitoring.export.push_metrics`)."""


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
        self.not_found = Counter(
            "mapreduce_llm_documents_not_found_total",
            'Answered documents whose answer is "not found" (qa; 0 for every version that answers questions).',
            tv,
            registry=r,
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
        self.drift_insufficient = Gauge(
            "mapreduce_llm_drift_insufficient",
            "1 when a task@version had too few documents or chunks on either side (the job's, the baseline's) to "
            "be scored: no drift gauge is set for it; 0 when it was scored.",
            tv,
            registry=r,
        )
        self.drift_mmd = Gauge(
            "mapreduce_llm_drift_mmd",
            "MMD² (unbiased, RBF kernel) between samples of the baseline's and the job's chunk embeddings.",
            tv,
            registry=r,
        )
        self.drift_mmd_p_value = Gauge(
            "mapreduce_llm_drift_mmd_p_value",
            "Permutation p-value of the MMD test (over documents): small when the job's chunk embeddings do not "
            "come from the baseline's distribution.",
            tv,
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
            LAST_SUCCESS,
            "Unix time at which the job last completed.",
            registry=r,
        )
        self.job_running = Gauge("mapreduce_llm_job_running", "1 while the job runs.", registry=r)
