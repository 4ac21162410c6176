"""Job metrics: what a job with an engine double exports, in which units and labels, served and pushed."""

from __future__ import annotations

import asyncio
import http.server
import json
import math
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mapreduce_llm.config import ChunkingConfig, JobSpec
from mapreduce_llm.documents import Document
from mapreduce_llm.drift import PROFILE_FILE, PROFILE_PARTIAL_FILE, build_baseline, job_drift, read_profiles
from mapreduce_llm.embeddings import Vectors
from mapreduce_llm.job import Job
from mapreduce_llm.metrics import JobMetrics, MetricsObserver, push_metrics, serve_metrics
from mapreduce_llm.planning import DocumentPlan, plan_document
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.results import DocumentResult, JobSummary, PromptInfo
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fake_embeddings import FakeEmbedder
from tests.fakes import FakeEngine

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


def _job(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str, observer: MetricsObserver) -> JobSummary:
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
    engine = FakeEngine(tokenizer, max_model_len=1024)
    job = Job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine, observer=observer)
    return asyncio.run(job.run())


@pytest.fixture
def observed(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str) -> tuple[MetricsObserver, JobSummary]:
    """A job of two good documents and a blank one, observed with fake embeddings."""
    observer = MetricsObserver(embedder=FakeEmbedder(), output_dir=tmp_path / "out")
    return observer, _job(tmp_path, tokenizer, corpus_text, observer)


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
    tv = {"task": "summarize", "version": "1.0.0"}
    assert _value(observer, "mapreduce_llm_documents_total", **tv, status="ok") == summary.ok == 2
    # A document that could not be read may have no prompt version (task and version "unknown").
    assert _total(observer, "mapreduce_llm_documents_total", status="error") == 1
    assert _total(observer, "mapreduce_llm_document_errors_total", code="empty") == 1
    assert _value(observer, "mapreduce_llm_chunks_total", **tv) == summary.chunks
    for stage, count in summary.requests.items():
        assert _value(observer, "mapreduce_llm_engine_requests_total", stage=stage, **tv, status="ok") == count
    prompt = sum(_value(observer, "mapreduce_llm_prompt_tokens_total", stage=s, **tv) for s in summary.requests)
    assert prompt == summary.prompt_tokens
    assert _value(observer, "mapreduce_llm_job_documents", status="ok") == 2
    assert _value(observer, "mapreduce_llm_job_last_success_timestamp_seconds") == summary.finished_at
    assert _value(observer, "mapreduce_llm_job_running") == 0


def test_distributions_are_histograms_in_base_units(observed: tuple[MetricsObserver, JobSummary]) -> None:
    """Latency in seconds, lengths in tokens, one observation per request, document or retrieval."""
    observer, summary = observed
    tv = {"task": "summarize", "version": "1.0.0"}
    maps = summary.requests["map"]
    assert _value(observer, "mapreduce_llm_request_duration_seconds_count", stage="map", **tv) == maps
    assert _value(observer, "mapreduce_llm_prompt_length_tokens_count", stage="map", **tv) == maps
    assert _value(observer, "mapreduce_llm_document_stage_duration_seconds_count", stage="total", **tv) == 2
    assert _value(observer, "mapreduce_llm_document_length_tokens_count", **tv) == 2
    assert _value(observer, "mapreduce_llm_output_confidence_ratio_sum", **tv) == pytest.approx(2 * math.exp(-0.2))
    assert _value(observer, "mapreduce_llm_retrieval_top1_similarity_count", **tv) == 2
    retrievals = observer.metrics.registry.get_sample_value
    query = {**tv, "query": "instruction"}  # summaries compare chunks with the task's description
    low, ok = (retrievals("mapreduce_llm_retrievals_total", {**query, "quality": q}) or 0 for q in ("low", "ok"))
    assert low + ok == 2
    short = _value(observer, "mapreduce_llm_prompt_class_total", **tv, **{"class": "short/none"})
    medium = _value(observer, "mapreduce_llm_prompt_class_total", **tv, **{"class": "medium/none"})
    assert (short, medium) == (1, maps - 1)  # the short document's prompt, the long one's chunks (no baseline)


def test_labels_come_only_from_bounded_sets(observed: tuple[MetricsObserver, JobSummary]) -> None:
    """No metric carries a document id, source or text as a label."""
    observer, _ = observed
    names = set()
    for metric in observer.metrics.registry.collect():
        assert metric.name.startswith("mapreduce_llm_")
        for sample in metric.samples:
            names.update(sample.labels)
            assert "long" not in sample.labels.values() and "short" not in sample.labels.values()
    assert names <= BOUNDED_LABELS


def test_profiles_are_written_and_make_a_baseline(observed: tuple[MetricsObserver, JobSummary], tmp_path: Path) -> None:
    """profile.jsonl has one line per planned document; a baseline built from it scores the job near 0."""
    profiles = read_profiles(tmp_path / "out")
    assert sorted(p.id for p in profiles) == ["long", "short"]
    assert all(p.chunk_vectors and p.similarities for p in profiles)
    baseline = build_baseline("b", profiles, "out")
    rerun = MetricsObserver(embedder=FakeEmbedder(), baseline=baseline)
    for p in profiles:
        rerun.add_profile(p)
    rerun.job_done(JobSummary.model_validate({**_summary_fields(), "status": "completed"}))
    assert rerun.drift["summarize@1.0.0"]["embedding_centroid"] == pytest.approx(0.0, abs=1e-6)
    assert rerun.metrics.registry.get_sample_value(
        "mapreduce_llm_drift_score", {"signal": "embedding_centroid", "task": "summarize", "version": "1.0.0"}
    ) == pytest.approx(0.0, abs=1e-6)


def _summary_fields() -> dict[str, object]:
    return {
        "job_id": "j",
        "input": "in",
        "output": "out",
        "prompt": "summarize",
        "model": "m",
        "max_model_len": 1024,
        "started_at": 1.0,
        "finished_at": 2.0,
        "seconds": 1.0,
        "documents": 0,
        "ok": 0,
        "errors": 0,
    }


def test_a_rerun_merges_profiles(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str) -> None:
    """Profiles of documents redone by a rerun replace the earlier lines; the file keeps one per document."""
    for _ in range(2):
        observer = MetricsObserver(embedder=FakeEmbedder(), output_dir=tmp_path / "out")
        _job(tmp_path, tokenizer, corpus_text, observer)
    lines = (tmp_path / "out" / PROFILE_FILE).read_text().splitlines()
    assert len(lines) == 2


def _planned(tokenizer: HFTokenizer, n: int) -> list[tuple[DocumentResult, DocumentPlan]]:
    """``n`` small planned documents and their ok results, as a job hands them to its observer."""
    prompt = select_prompts("summarize@1.0.0", PROMPTS).base
    out = []
    for i in range(n):
        doc = Document(id=f"d{i}", text=f"Document {i} says Ray runs Python code on a cluster.", source=f"d{i}")
        plan = plan_document(doc, prompt, tokenizer, 1024, ChunkingConfig(), 64)
        result = DocumentResult(id=doc.id, status="ok", prompt=PromptInfo(name="summarize", version="1.0.0"), chunks=1)
        out.append((result, plan))
    return out


class GatedEmbedder(FakeEmbedder):
    """Embeds only once ``gate`` is set (a slow worker); ``fail`` makes every call raise instead."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.fail = fail

    def embed(self, texts: list[str]) -> Vectors:
        if self.fail:
            raise RuntimeError("embedding model crashed")
        assert self.gate.wait(30), "the test never opened the gate"
        return super().embed(texts)


def test_profiling_queue_is_bounded(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """With ``queue_size`` documents waiting for a slow worker, document_done waits for the oldest to finish."""
    embedder = GatedEmbedder()
    observer = MetricsObserver(embedder=embedder, output_dir=tmp_path, queue_size=2)
    returned = []

    def feed() -> None:
        for result, plan in _planned(tokenizer, 3):
            observer.document_done(result, plan)
            returned.append(result.id)

    feeder = threading.Thread(target=feed)
    feeder.start()
    deadline = time.monotonic() + 30
    while len(returned) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert returned == ["d0", "d1"]  # the third waits: two documents are queued and none is profiled
    embedder.gate.set()
    feeder.join(timeout=30)
    assert returned == ["d0", "d1", "d2"]
    observer.job_done(JobSummary.model_validate({**_summary_fields(), "status": "completed"}))
    assert observer.profiled == 3
    assert [p.id for p in read_profiles(tmp_path)] == ["d0", "d1", "d2"]


def test_a_worker_failure_is_raised_not_swallowed(tokenizer: HFTokenizer) -> None:
    """A profiling failure surfaces in the job: at the next document that waits for it, or at job_done."""
    (first, first_plan), (second, second_plan) = _planned(tokenizer, 2)
    observer = MetricsObserver(embedder=GatedEmbedder(fail=True), queue_size=1)
    observer.document_done(first, first_plan)
    with pytest.raises(RuntimeError, match="embedding model crashed"):
        observer.document_done(second, second_plan)  # waits for the first, which failed
    observer = MetricsObserver(embedder=GatedEmbedder(fail=True))
    observer.document_done(first, first_plan)
    with pytest.raises(RuntimeError, match="embedding model crashed"):
        observer.job_done(JobSummary.model_validate({**_summary_fields(), "status": "completed"}))


def test_profiles_stream_to_a_partial_file(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """Each profile is on disk as soon as it is made; job_done merges them into profile.jsonl."""
    observer = MetricsObserver(embedder=FakeEmbedder(), output_dir=tmp_path)
    for result, plan in _planned(tokenizer, 2):
        observer.document_done(result, plan)
    observer.drain()
    assert len((tmp_path / PROFILE_PARTIAL_FILE).read_text().splitlines()) == 2
    assert not (tmp_path / PROFILE_FILE).exists()
    observer.job_done(JobSummary.model_validate({**_summary_fields(), "status": "completed"}))
    assert [p.id for p in read_profiles(tmp_path)] == ["d0", "d1"]
    assert not (tmp_path / PROFILE_PARTIAL_FILE).exists()


def test_profiles_of_an_interrupted_run_are_merged_by_the_rerun(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """A run killed before job_done leaves its profiles in the partial file; the run that completes it keeps
    them (its documents are resumed, not profiled again)."""
    (first, first_plan), (second, second_plan) = _planned(tokenizer, 2)
    killed = MetricsObserver(embedder=FakeEmbedder(), output_dir=tmp_path)
    killed.document_done(first, first_plan)
    killed.drain()
    rerun = MetricsObserver(embedder=FakeEmbedder(), output_dir=tmp_path)
    rerun.document_done(second, second_plan)
    rerun.job_done(JobSummary.model_validate({**_summary_fields(), "status": "completed"}))
    assert [p.id for p in read_profiles(tmp_path)] == ["d0", "d1"]


def test_job_drift_is_the_drift_of_the_profiles_written(
    observed: tuple[MetricsObserver, JobSummary], tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """The drift a job computes on the fly equals drift scored afterwards from its profile.jsonl."""
    baseline = build_baseline("b", read_profiles(tmp_path / "out"), "out")
    (tmp_path / "again").mkdir()
    observer = MetricsObserver(embedder=FakeEmbedder(), baseline=baseline, output_dir=tmp_path / "again" / "out")
    _job(tmp_path / "again", tokenizer, corpus_text[5000:], observer)
    assert observer.drift == job_drift(baseline, read_profiles(tmp_path / "again" / "out"))
    assert set(observer.drift["summarize@1.0.0"]) == {
        "document_length",
        "prompt_class",
        "embedding_centroid",
        "retrieval_similarity",
    }


def test_failed_job_is_not_a_success() -> None:
    """A failed job sets its duration but not the last-success timestamp."""
    observer = MetricsObserver()
    observer.job_done(JobSummary.model_validate({**_summary_fields(), "status": "failed"}))
    registry = observer.metrics.registry
    assert registry.get_sample_value("mapreduce_llm_job_last_success_timestamp_seconds") == 0
    assert registry.get_sample_value("mapreduce_llm_job_duration_seconds") == 1.0


def test_prompt_labels_are_exported_for_canary_views() -> None:
    """Each label pointing at a version is a 1-valued info series."""
    observer = MetricsObserver(labels={("qa", "1.0.0"): ["production"], ("qa", "1.1.0"): ["canary"]})
    value = observer.metrics.registry.get_sample_value(
        "mapreduce_llm_prompt_label_info", {"task": "qa", "version": "1.1.0", "label": "canary"}
    )
    assert value == 1


def test_metrics_are_served_while_the_block_runs() -> None:
    """/metrics answers on loopback with the job's metric families, and stops afterwards."""
    metrics = JobMetrics()
    metrics.documents.labels("qa", "1.0.0", "ok").inc()
    with serve_metrics(metrics.registry, 0) as port:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'mapreduce_llm_documents_total{status="ok",task="qa",version="1.0.0"} 1.0' in body
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A minimal HTTP server recording what is pushed to it (the real Pushgateway is in tests/integration)."""
    received: list[tuple[str, str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            received.append(("PUT", self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    server.server_close()


def test_push_groups_by_job_and_task(gateway: tuple[str, list[tuple[str, str, bytes]]]) -> None:
    """The final figures replace the Pushgateway group /job/<job>/task/<task>."""
    url, received = gateway
    registry = CollectorRegistry()
    JobMetrics(registry).documents.labels("qa", "1.0.0", "ok").inc(3)
    push_metrics(registry, url, "nightly", "qa")
    ((method, path, body),) = received
    assert method == "PUT" and path == "/metrics/job/nightly/task/qa"
    assert b"mapreduce_llm_documents_total" in body
