"""monitored(spec) (monitoring/__init__.py) through run_job: the one path by which every job is monitored."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mapreduce_llm.config import JobSpec
from mapreduce_llm.embeddings import Vectors
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.errors import ConfigError, EngineError
from mapreduce_llm.monitoring import JobMonitor, PushError, monitored
from mapreduce_llm.monitoring.baselines import BaselineStore
from mapreduce_llm.monitoring.drift import build_baseline, job_drift
from mapreduce_llm.monitoring.metrics import LAST_SUCCESS
from mapreduce_llm.monitoring.profiles import PROFILE_FILE, read_profiles
from mapreduce_llm.monitoring.verdicts import DriftGuard
from mapreduce_llm.observers import NoObserver
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.results import JobSummary
from mapreduce_llm.runner import run_job
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS, SUMMARIZE, make_job
from tests.fake_embeddings import FakeEmbedder
from tests.fake_pushgateway import FakePushgateway
from tests.fakes import FakeEngine

TEXTS = [
    "Ray runs Python code on a cluster. Tasks and actors are scheduled on its nodes.",
    "vLLM serves language models with continuous batching and a paged KV cache.",
    "Prometheus scrapes metrics over HTTP and evaluates alerting rules on them.",
]


def _spec(tmp_path: Path, name: str, monitoring: dict[str, Any], **fields: Any) -> JobSpec:
    """A job over the three short TEXTS into ``tmp_path/name`` (one chunk each), monitored as given."""
    src = tmp_path / f"{name}.jsonl"
    question = fields.pop("question", None)
    rows = [{"id": f"d{i}", "text": t, **({"question": question} if question else {})} for i, t in enumerate(TEXTS)]
    src.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = {
        "input": src,
        "output": tmp_path / name,
        "prompts_dir": PROMPTS,
        "engine": {"max_model_len": 1024},
        "sampling": {"reserved_output_tokens": 32},
        "monitoring": monitoring,
        **fields,
    }
    return JobSpec.model_validate(data)


def _run(spec: JobSpec, tokenizer: HFTokenizer, embedder: FakeEmbedder | None = None) -> JobSummary:
    return run_job(spec, engine=FakeEngine(tokenizer, max_model_len=1024), embedder=embedder or FakeEmbedder())


def _free_url() -> str:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{free.getsockname()[1]}"


class DyingEngine(FakeEngine):
    """Answers ``answers`` requests, then is gone: every later request raises EngineError (the job stops)."""

    def __init__(self, tokenizer: HFTokenizer, answers: int) -> None:
        super().__init__(tokenizer, max_model_len=1024)
        self.answers = answers

    async def generate(self, request: EngineRequest) -> EngineOutput:
        if len(self.requests) >= self.answers:
            raise EngineError("the engine is gone")
        return await super().generate(request)


class FailingEmbedder(FakeEmbedder):
    """An embedding model that crashes on every call."""

    def embed(self, texts: list[str]) -> Vectors:
        raise RuntimeError("embedding model crashed")


@pytest.fixture
def baselines(tmp_path: Path, tokenizer: HFTokenizer) -> Path:
    """A baseline ``week1`` made from a first monitored job's profile.jsonl (embeddings on)."""
    week1 = _spec(tmp_path, "week1", {"embed": True})
    _run(week1, tokenizer)
    folder = tmp_path / "baselines"
    BaselineStore(folder).save(build_baseline("week1", read_profiles(week1.output), "week1"))
    return folder


def test_without_monitoring_nothing_is_exported(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A spec without a monitoring section: no observer, no profile.jsonl, no drift in the summary."""
    spec = _spec(tmp_path, "plain", {})
    with monitored(spec) as monitoring:
        assert isinstance(monitoring.observer, NoObserver) and monitoring.metrics is None
    summary = _run(spec, tokenizer)
    assert summary.drift is None and not (spec.output / PROFILE_FILE).exists()
    assert json.loads((spec.output / "summary.json").read_text())["drift"] is None


def test_drift_reaches_the_summary_the_file_and_the_pushgateway(
    tmp_path: Path, tokenizer: HFTokenizer, baselines: Path
) -> None:
    """A job with a baseline (drift minimums lowered to its three documents) and a Pushgateway: its drift (equal
    to the drift of the profiles it wrote) is in the returned summary and summary.json, and its figures replace
    its Pushgateway group: drift gauges, the MMD p-value and drift_insufficient 0 too."""
    with FakePushgateway() as gateway:
        monitoring = {
            "baseline": "week1",
            "baselines_dir": str(baselines),
            "pushgateway": gateway.url,
            "drift_min_documents": 3,
            "drift_min_chunks": 3,
        }
        spec = _spec(tmp_path, "week2", monitoring, job_id="nightly")
        summary = _run(spec, tokenizer)
    expected = job_drift(BaselineStore(baselines).load("week1"), read_profiles(spec.output), DriftGuard(3, 3))
    scored = expected[f"summarize@{SUMMARIZE}"]
    assert summary.drift == expected and scored.status == "scored"
    assert set(scored.scores) >= {"embedding_centroid", "prompt_class"} and scored.mmd_p_value is not None
    assert json.loads((spec.output / "summary.json").read_text())["drift"] == {
        key: judged.model_dump() for key, judged in expected.items()
    }
    (push,) = gateway.pushes
    assert push.method == "PUT" and push.path == "/metrics/job/nightly/task/summarize"
    samples = push.samples()
    version = {"task": "summarize", "version": SUMMARIZE}
    drift = frozenset({"signal": "embedding_centroid", **version}.items())
    assert samples[("mapreduce_llm_drift_score", drift)] == scored.scores["embedding_centroid"]
    assert samples[("mapreduce_llm_drift_mmd_p_value", frozenset(version.items()))] == scored.mmd_p_value
    assert samples[("mapreduce_llm_drift_insufficient", frozenset(version.items()))] == 0
    assert samples[(LAST_SUCCESS, frozenset())] == summary.finished_at


def test_a_job_under_the_drift_minimum_is_flagged_not_scored(
    tmp_path: Path, tokenizer: HFTokenizer, baselines: Path
) -> None:
    """The default minimum (20 documents) against a three-document job and baseline: summary.json's drift says
    insufficient with the counts, and the Pushgateway gets drift_insufficient 1 and no drift score or p-value."""
    with FakePushgateway() as gateway:
        monitoring = {"baseline": "week1", "baselines_dir": str(baselines), "pushgateway": gateway.url}
        spec = _spec(tmp_path, "week2", monitoring, job_id="nightly")
        summary = _run(spec, tokenizer)
    assert summary.drift is not None
    judged = summary.drift[f"summarize@{SUMMARIZE}"]
    assert (judged.status, judged.documents, judged.chunks, judged.scores) == ("insufficient", 3, 3, {})
    on_disk = json.loads((spec.output / "summary.json").read_text())["drift"][f"summarize@{SUMMARIZE}"]
    assert on_disk["status"] == "insufficient" and on_disk["baseline_documents"] == 3
    assert on_disk["note"].startswith("the job has 3 documents")
    (push,) = gateway.pushes
    samples = push.samples()
    version = frozenset({"task": "summarize", "version": SUMMARIZE}.items())
    assert samples[("mapreduce_llm_drift_insufficient", version)] == 1
    assert not {name for name, _ in samples} & {"mapreduce_llm_drift_score", "mapreduce_llm_drift_mmd_p_value"}


def test_metrics_are_served_while_the_job_runs(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """/metrics answers from the block's start (job_running 1) with the job's figures, and not after it."""
    spec = _spec(tmp_path, "served", {"metrics_port": 0})
    with monitored(spec, embedder=FakeEmbedder()) as monitoring:
        url = f"http://127.0.0.1:{monitoring.port}/metrics"
        assert "mapreduce_llm_job_running 1.0" in urllib.request.urlopen(url, timeout=5).read().decode()
        engine = FakeEngine(tokenizer, max_model_len=1024)
        job = make_job(spec, select_prompts(spec.prompt, PROMPTS), tokenizer, engine, observer=monitoring.observer)
        asyncio.run(job.run())
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    assert f'mapreduce_llm_documents_total{{status="ok",task="summarize",version="{SUMMARIZE}"}} 3.0' in body
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_metrics_linger_after_the_job_for_a_last_scrape(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """With metrics_linger_s, /metrics keeps answering with the final figures that long after the job's end."""
    spec = _spec(tmp_path, "linger", {"metrics_port": 0, "metrics_linger_s": 1.0})
    scraped: list[str] = []
    with monitored(spec, embedder=FakeEmbedder()) as monitoring:
        url = f"http://127.0.0.1:{monitoring.port}/metrics"
        engine = FakeEngine(tokenizer, max_model_len=1024)
        job = make_job(spec, select_prompts(spec.prompt, PROMPTS), tokenizer, engine, observer=monitoring.observer)
        asyncio.run(job.run())
        scrape = threading.Timer(0.3, lambda: scraped.append(urllib.request.urlopen(url, timeout=5).read().decode()))
        scrape.start()
        ended = time.perf_counter()
    assert time.perf_counter() - ended >= 1.0
    scrape.join()
    assert "mapreduce_llm_job_running 0.0" in scraped[0]


def test_chunks_are_embedded_once_for_retrieval_and_profiles(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """Retrieval on and embeddings on: each document's query and chunks are embedded in one call, by the one
    embedder given, and its profile has the vectors of that call."""
    spec = _spec(
        tmp_path,
        "qa",
        {"embed": True},
        prompt="qa@1.0.0",
        question="What runs on a cluster?",
        retrieval={"mode": "top_k"},
    )
    embedder = FakeEmbedder()
    _run(spec, tokenizer, embedder)
    scoring = [call for call in embedder.calls if call[0] == "What runs on a cluster?"]
    assert len(scoring) == len(TEXTS) == len(embedder.calls)
    profiles = read_profiles(spec.output)
    assert len(profiles) == len(TEXTS) and all(p.chunk_vectors and p.similarities for p in profiles)


def test_a_failed_job_pushes_without_its_last_success(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """The engine dies after the first document: the job's error is raised, its figures update the group (POST)
    without the last-success gauge, and its profiles of the finished document are kept."""
    with FakePushgateway() as gateway:
        spec = _spec(tmp_path, "failing", {"pushgateway": gateway.url}, limits={"max_documents_in_flight": 1})
        with pytest.raises(EngineError, match="gone"):
            run_job(spec, engine=DyingEngine(tokenizer, answers=1), embedder=FakeEmbedder())
    (push,) = gateway.pushes
    assert push.method == "POST" and LAST_SUCCESS not in push.names()
    assert push.samples()[("mapreduce_llm_job_running", frozenset())] == 0
    assert json.loads((spec.output / "summary.json").read_text())["status"] == "failed"
    assert [p.id for p in read_profiles(spec.output)] == ["d0"]


def test_a_failed_job_raises_its_own_error_when_the_push_fails_too(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """The job's error wins over an unreachable Pushgateway (which is only logged then)."""
    spec = _spec(tmp_path, "failing", {"pushgateway": _free_url()}, limits={"max_documents_in_flight": 1})
    with pytest.raises(EngineError):
        run_job(spec, engine=DyingEngine(tokenizer, answers=0), embedder=FakeEmbedder())


def test_a_completed_job_raises_a_push_failure_after_writing_its_results(
    tmp_path: Path, tokenizer: HFTokenizer
) -> None:
    """An unreachable Pushgateway fails the command of a completed job, whose results are all written."""
    spec = _spec(tmp_path, "unpushed", {"pushgateway": _free_url()})
    with pytest.raises(PushError, match="results are written"):
        _run(spec, tokenizer)
    assert json.loads((spec.output / "summary.json").read_text())["status"] == "completed"
    assert len((spec.output / "results.jsonl").read_text().splitlines()) == len(TEXTS)


def test_a_profiling_failure_is_raised_after_the_results_are_written(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A crashing embedding model fails no document; the job's results are written, then the failure is raised."""
    spec = _spec(tmp_path, "crashing", {"embed": True})
    with pytest.raises(RuntimeError, match="crashed"):
        _run(spec, tokenizer, FailingEmbedder())
    results = [json.loads(line) for line in (spec.output / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results] == ["ok"] * len(TEXTS)


def test_a_missing_baseline_is_refused_before_the_engine_is_used(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """monitoring.baseline naming no file is a ConfigError on entry: no request reaches the engine."""
    spec = _spec(tmp_path, "nobase", {"baseline": "nope", "baselines_dir": str(tmp_path / "none")})
    engine = FakeEngine(tokenizer, max_model_len=1024)
    with pytest.raises(ConfigError, match="baseline 'nope' not found"):
        run_job(spec, engine=engine, embedder=FakeEmbedder())
    assert engine.requests == []


def test_the_monitor_finishes_profiles_before_drift_and_gauges(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """At the job's end the monitor has profiled every document before scoring drift and setting job_running 0."""
    spec = _spec(tmp_path, "ordered", {"embed": True})
    with monitored(spec, embedder=FakeEmbedder()) as monitoring:
        engine = FakeEngine(tokenizer, max_model_len=1024)
        job = make_job(spec, select_prompts(spec.prompt, PROMPTS), tokenizer, engine, observer=monitoring.observer)
        asyncio.run(job.run())
        monitor = monitoring.observer
        assert isinstance(monitor, JobMonitor) and monitor.profiles.profiled == len(TEXTS)
        assert monitor.summary is not None and monitor.summary.status == "completed"
