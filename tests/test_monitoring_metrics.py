"""JobMetrics (monitoring/metrics.py): every mapreduce_llm_* series, in a registry of its own, in base units."""

from __future__ import annotations

from mapreduce_llm.monitoring.metrics import LAST_SUCCESS, JobMetrics

COUNTERS = {
    "documents",
    "documents_not_found",
    "document_errors",
    "chunks",
    "engine_requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "prompt_class",
    "retrievals",
    "map_answers",
    "answer_parse_failures",
    "reretrievals",
}
HISTOGRAMS = {
    "request_duration_seconds",
    "document_stage_duration_seconds",
    "reduce_levels",
    "prompt_length_tokens",
    "document_length_tokens",
    "output_length_tokens",
    "output_confidence_ratio",
    "retrieval_top1_similarity",
    "retrieval_topk_similarity",
    "chunk_similarity",
}
GAUGES = {
    "drift_score",
    "drift_insufficient",
    "drift_mmd",
    "drift_mmd_p_value",
    "prompt_label_info",
    "job_duration_seconds",
    "job_documents",
    "job_last_success_timestamp_seconds",
    "job_running",
}


def test_the_series_are_the_documented_ones() -> None:
    """Every family is mapreduce_llm_* and of its documented type (no summaries); none is added or renamed."""
    found = {(family.name, family.type) for family in JobMetrics().registry.collect()}
    expected = {
        *((f"mapreduce_llm_{name}", "counter") for name in COUNTERS),
        *((f"mapreduce_llm_{name}", "histogram") for name in HISTOGRAMS),
        *((f"mapreduce_llm_{name}", "gauge") for name in GAUGES),
    }
    assert found == expected


def test_counters_are_exported_with_total() -> None:
    """Counters' samples end in _total, as Prometheus expects."""
    metrics = JobMetrics()
    metrics.chunks.labels("qa", "1.0.0").inc()
    (family,) = [f for f in metrics.registry.collect() if f.name == "mapreduce_llm_chunks"]
    assert {s.name for s in family.samples} == {"mapreduce_llm_chunks_total", "mapreduce_llm_chunks_created"}


def test_names_carry_base_units() -> None:
    """Durations are in seconds, lengths in tokens, similarities and confidence are plain ratios."""
    names = {family.name for family in JobMetrics().registry.collect()}
    for name in names:
        if "duration" in name:
            assert name.endswith("_seconds"), name
        if "length" in name:
            assert name.endswith("_tokens"), name
    assert "mapreduce_llm_output_confidence_ratio" in names


def test_each_job_counts_in_its_own_registry() -> None:
    """Two JobMetrics in one process (two jobs, or tests) do not share figures."""
    first, second = JobMetrics(), JobMetrics()
    first.documents.labels("qa", "1.0.0", "ok").inc()
    labels = {"task": "qa", "version": "1.0.0", "status": "ok"}
    assert first.registry.get_sample_value("mapreduce_llm_documents_total", labels) == 1
    assert second.registry.get_sample_value("mapreduce_llm_documents_total", labels) is None


def test_last_success_names_the_gauge_a_failed_job_does_not_push() -> None:
    """LAST_SUCCESS is the name of the last-success gauge (left out of a failed job's push)."""
    metrics = JobMetrics()
    metrics.last_success.set(5)
    assert metrics.registry.get_sample_value(LAST_SUCCESS) == 5


def test_similarity_histograms_keep_their_sum() -> None:
    """Similarity buckets start at 0, so the histogram keeps its _sum (a mean can be taken)."""
    metrics = JobMetrics()
    metrics.top1.labels("qa", "1.0.0").observe(0.5)
    metrics.top1.labels("qa", "1.0.0").observe(-0.1)
    labels = {"task": "qa", "version": "1.0.0"}
    assert metrics.registry.get_sample_value("mapreduce_llm_retrieval_top1_similarity_sum", labels) == 0.4
    bucket = {**labels, "le": "0.0"}
    assert metrics.registry.get_sample_value("mapreduce_llm_retrieval_top1_similarity_bucket", bucket) == 1
