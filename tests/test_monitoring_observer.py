"""MetricsObserver (monitoring/observer.py): a job's requests, documents and answers as Prometheus figures."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from mapreduce_llm.config import ChunkingConfig, JobSpec
from mapreduce_llm.documents import Document
from mapreduce_llm.monitoring.drift import build_baseline
from mapreduce_llm.monitoring.observer import MetricsObserver, top_k
from mapreduce_llm.monitoring.profiles import profile_document
from mapreduce_llm.planning import plan_document
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.results import JobSummary, VersionDrift
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS, SUMMARIZE, make_job
from tests.fake_embeddings import FakeEmbedder
from tests.fakes import FakeEngine
from tests.test_monitoring_drift import PYTHON, _profiles
from tests.test_monitoring_profiles import SUMMARY

BOUNDED_LABELS = {
    "task",
    "version",
    "stage",
    "status",
    "code",
    "class",
    "query",
    "quality",
    "signal",
    "label",
    "le",
    "mapped",
    "outcome",
}
TV = {"task": "summarize", "version": SUMMARIZE}


@pytest.fixture
def observed(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str) -> tuple[MetricsObserver, JobSummary]:
    """A job of two good documents and a blank one, heard by a MetricsObserver."""
    src = tmp_path / "in.jsonl"
    lines = [
        {"id": "long", "text": corpus_text[:12_000]},
        {"id": "short", "text": "Ray runs Python code on a cluster."},
        {"id": "blank", "text": "   "},
    ]
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    spec = JobSpec.model_validate(
        {"input": src, "output": tmp_path / "out", "prompts_dir": PROMPTS, "engine": {"max_model_len": 1024}}
    )
    observer = MetricsObserver()
    engine = FakeEngine(tokenizer, max_model_len=1024)
    summary = asyncio.run(
        make_job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine, observer=observer).run()
    )
    return observer, summary


def _value(observer: MetricsObserver, name: str, **labels: str) -> float:
    value = observer.metrics.registry.get_sample_value(name, labels)
    assert value is not None, f"no sample {name}{labels}"
    return value


def _total(observer: MetricsObserver, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` that have ``labels``, whatever their other labels."""
    return sum(
        sample.value
        for metric in observer.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_counters_add_up_to_the_summary(observed: tuple[MetricsObserver, JobSummary]) -> None:
    """Documents, chunks, requests and tokens exported equal what summary.json reports."""
    observer, summary = observed
    assert _value(observer, "mapreduce_llm_documents_total", **TV, status="ok") == summary.ok == 2
    # A document that could not be read may have no prompt version (task and version "unknown").
    assert _total(observer, "mapreduce_llm_documents_total", status="error") == 1
    assert _total(observer, "mapreduce_llm_document_errors_total", code="empty") == 1
    assert _value(observer, "mapreduce_llm_chunks_total", **TV) == summary.chunks
    for stage, count in summary.requests.items():
        assert _value(observer, "mapreduce_llm_engine_requests_total", stage=stage, **TV, status="ok") == count
    prompt = sum(_value(observer, "mapreduce_llm_prompt_tokens_total", stage=s, **TV) for s in summary.requests)
    assert prompt == summary.prompt_tokens
    assert _value(observer, "mapreduce_llm_job_documents", status="ok") == 2
    assert _value(observer, "mapreduce_llm_job_last_success_timestamp_seconds") == summary.finished_at
    assert _value(observer, "mapreduce_llm_job_running") == 0


def test_distributions_are_histograms_in_base_units(observed: tuple[MetricsObserver, JobSummary]) -> None:
    """Latency in seconds, lengths in tokens, one observation per request or document."""
    observer, summary = observed
    maps = summary.requests["map"]
    assert _value(observer, "mapreduce_llm_request_duration_seconds_count", stage="map", **TV) == maps
    assert _value(observer, "mapreduce_llm_prompt_length_tokens_count", stage="map", **TV) == maps
    assert _value(observer, "mapreduce_llm_document_stage_duration_seconds_count", stage="total", **TV) == 2
    assert _value(observer, "mapreduce_llm_output_confidence_ratio_sum", **TV) == pytest.approx(2 * math.exp(-0.2))


def test_labels_come_only_from_bounded_sets(observed: tuple[MetricsObserver, JobSummary]) -> None:
    """No metric carries a document id, source or text as a label."""
    observer, _ = observed
    names = set()
    for metric in observer.metrics.registry.collect():
        for sample in metric.samples:
            names.update(sample.labels)
            assert "long" not in sample.labels.values() and "short" not in sample.labels.values()
    assert names <= BOUNDED_LABELS


def test_a_profile_gives_length_classes_and_retrieval_similarity(tokenizer: HFTokenizer) -> None:
    """profiled(): the document's length, its map prompts' classes (topic none without a baseline) and its best
    chunk's similarity, by query kind (summaries compare chunks with the task's instruction)."""
    prompt = select_prompts(f"summarize@{SUMMARIZE}", PROMPTS).base
    doc = Document(id="d", text="Ray runs Python code on a cluster.", source="d")
    plan = plan_document(doc, prompt, tokenizer, 1024, ChunkingConfig(), 64)
    observer = MetricsObserver(low_similarity=2.0)  # every retrieval is "low"
    observer.profiled(profile_document(plan, FakeEmbedder()), plan)
    assert _value(observer, "mapreduce_llm_document_length_tokens_count", **TV) == 1
    assert _value(observer, "mapreduce_llm_prompt_class_total", **TV, **{"class": "short/none"}) == 1
    assert _value(observer, "mapreduce_llm_retrieval_top1_similarity_count", **TV) == 1
    assert _value(observer, "mapreduce_llm_retrievals_total", **TV, query="instruction", quality="low") == 1


def test_prompt_classes_take_their_topic_from_the_baseline(tokenizer: HFTokenizer) -> None:
    """With a baseline, a map prompt's class names the nearest baseline topic (or other), not none."""
    baseline = build_baseline("b", _profiles(PYTHON, 10), "x")
    observer = MetricsObserver(baseline=baseline)
    prompt = select_prompts("summarize@1.0.0", PROMPTS).base  # the version of the baseline's profiles
    doc = Document(id="d", text="python function class module import list dict string loop", source="d")
    plan = plan_document(doc, prompt, tokenizer, 1024, ChunkingConfig(), 64)
    observer.profiled(profile_document(plan, FakeEmbedder()), plan)
    classes = {
        s.labels["class"]
        for m in observer.metrics.registry.collect()
        for s in m.samples
        if s.name == "mapreduce_llm_prompt_class_total"
    }
    assert len(classes) == 1 and not classes.pop().endswith("/none")


def test_drift_scores_become_one_gauge_per_signal() -> None:
    """drift_scored sets mapreduce_llm_drift_score{signal, task, version}, the MMD statistic and p-value, and
    drift_insufficient 0."""
    observer = MetricsObserver()
    scores = {"embedding_centroid": 0.3, "prompt_class": 0.05}
    observer.drift_scored({"qa@2.0.0": VersionDrift(status="scored", scores=scores, mmd=0.04, mmd_p_value=0.002)})
    labels = {"task": "qa", "version": "2.0.0"}
    assert _value(observer, "mapreduce_llm_drift_score", signal="embedding_centroid", **labels) == 0.3
    assert _value(observer, "mapreduce_llm_drift_mmd", **labels) == 0.04
    assert _value(observer, "mapreduce_llm_drift_mmd_p_value", **labels) == 0.002
    assert _value(observer, "mapreduce_llm_drift_insufficient", **labels) == 0


def test_an_insufficient_sample_exports_its_flag_and_no_drift() -> None:
    """An insufficient task@version sets drift_insufficient 1 and no score, MMD or p-value gauge at all."""
    observer = MetricsObserver()
    observer.drift_scored({"qa@2.0.0": VersionDrift(status="insufficient", documents=3, baseline_documents=40)})
    assert _value(observer, "mapreduce_llm_drift_insufficient", task="qa", version="2.0.0") == 1
    drift_samples = [
        s.name
        for m in observer.metrics.registry.collect()
        for s in m.samples
        if s.name.startswith("mapreduce_llm_drift_") and s.name != "mapreduce_llm_drift_insufficient"
    ]
    assert drift_samples == []


def test_failed_job_is_not_a_success() -> None:
    """A failed job sets its duration and documents but not the last-success timestamp."""
    observer = MetricsObserver()
    observer.job_done(SUMMARY.model_copy(update={"status": "failed"}))
    assert _value(observer, "mapreduce_llm_job_last_success_timestamp_seconds") == 0
    assert _value(observer, "mapreduce_llm_job_duration_seconds") == 1.0
    assert _value(observer, "mapreduce_llm_job_running") == 0


def test_prompt_labels_are_exported_for_canary_views() -> None:
    """Each label pointing at a version is a 1-valued info series."""
    observer = MetricsObserver(labels={("qa", "1.0.0"): ["production"], ("qa", "1.1.0"): ["canary"]})
    assert _value(observer, "mapreduce_llm_prompt_label_info", task="qa", version="1.1.0", label="canary") == 1


def test_top_k_is_the_best_and_the_mean_of_the_best() -> None:
    """top_k gives the best similarity and the mean of the k best (of fewer when there are fewer)."""
    assert top_k([0.1, 0.9, 0.5, 0.7], 3) == (0.9, pytest.approx(0.7))
    assert top_k([0.4], 3) == (0.4, 0.4)


def test_not_found_answers_are_counted_per_version() -> None:
    """documents_not_found_total counts "not found" answers, exists at 0 for a question task and not for others."""
    from mapreduce_llm.results import DocumentResult, PromptInfo

    observer = MetricsObserver()
    qa = PromptInfo(name="qa", version="1.0.0")
    for not_found in (True, False, True):
        observer.document_done(DocumentResult(id="d", status="ok", prompt=qa, not_found=not_found), None)
    observer.document_done(DocumentResult(id="e", status="ok", prompt=PromptInfo(name="qa", version="1.1.0")), None)
    summarize = DocumentResult(id="s", status="ok", prompt=PromptInfo(name="summarize", version=SUMMARIZE))
    observer.document_done(summarize, None)
    done = DocumentResult(id="f", status="ok", prompt=PromptInfo(name="qa", version="2.0.0"), not_found=False)
    observer.document_done(done, None)
    assert _value(observer, "mapreduce_llm_documents_not_found_total", task="qa", version="1.0.0") == 2
    assert _value(observer, "mapreduce_llm_documents_not_found_total", task="qa", version="2.0.0") == 0
    absent = observer.metrics.registry.get_sample_value("mapreduce_llm_documents_not_found_total", TV)
    assert absent is None
