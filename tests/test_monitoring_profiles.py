"""Document profiles (monitoring/profiles.py): one per document, the worker beside the job, profile.jsonl."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mapreduce_llm.config import ChunkingConfig
from mapreduce_llm.documents import Document
from mapreduce_llm.embeddings import Vectors
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.monitoring.profiles import (
    PROFILE_FILE,
    PROFILE_PARTIAL_FILE,
    DocumentProfile,
    ProfileObserver,
    iter_profiles,
    merge_profiles,
    profile_document,
    read_profiles,
    write_profiles,
)
from mapreduce_llm.planning import DocumentPlan, plan_document
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.results import DocumentResult, JobSummary, PromptInfo
from mapreduce_llm.retrieval import ScoredPlan, chunk_scores
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fake_embeddings import FakeEmbedder
from tests.test_monitoring_drift import PYTHON, _profiles

SUMMARY = JobSummary.model_validate(
    {
        "job_id": "j",
        "status": "completed",
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
)


def _question_plan(tokenizer: HFTokenizer, corpus_text: str) -> DocumentPlan:
    prompt = select_prompts("qa@1.0.0", PROMPTS).base
    doc = Document(id="d", text=corpus_text[:8000], source="d", question="How do I sort a list?")
    return plan_document(doc, prompt, tokenizer, 1024, ChunkingConfig(), 64)


def _planned(tokenizer: HFTokenizer, n: int) -> list[tuple[DocumentResult, DocumentPlan]]:
    """``n`` small planned documents and their ok results, as a job hands them to its observers."""
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


def test_profile_of_a_planned_document(tokenizer: HFTokenizer, corpus_text: str) -> None:
    """A profile holds exact token counts, one vector and one query similarity per chunk, and no text."""
    plan = _question_plan(tokenizer, corpus_text)
    embedder = FakeEmbedder()
    profile = profile_document(plan, embedder)
    assert embedder.calls[0][0] == "How do I sort a list?"
    assert profile.document_tokens == sum(c.n_tokens for c in plan.chunks)
    assert profile.map_prompt_tokens == plan.map_prompt_tokens
    assert profile.chunk_vectors is not None and len(profile.chunk_vectors) == len(plan.chunks)
    assert profile.similarities is not None and len(profile.similarities) == len(plan.chunks)
    assert corpus_text[:40] not in profile.model_dump_json()


def test_scores_of_the_jobs_retrieval_are_reused(tokenizer: HFTokenizer, corpus_text: str) -> None:
    """A plan the job's retrieval scored is profiled without embedding again, to the same numbers."""
    plan = _question_plan(tokenizer, corpus_text)
    fresh = profile_document(plan, FakeEmbedder())
    scored = ScoredPlan.of(plan, chunk_scores(FakeEmbedder(), plan))
    embedder = FakeEmbedder()
    assert profile_document(scored, embedder) == fresh
    assert embedder.calls == []


def test_without_an_embedder_a_profile_has_counts_and_the_retrievals_similarities(
    tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """Embeddings off: no vectors; similarities only when the job's retrieval computed them."""
    plan = _question_plan(tokenizer, corpus_text)
    plain = profile_document(plan, None)
    assert plain.chunk_vectors is None and plain.similarities is None
    scored = profile_document(ScoredPlan.of(plan, chunk_scores(FakeEmbedder(), plan)), None)
    assert scored.chunk_vectors is None and scored.similarities is not None


def test_profiling_queue_is_bounded(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """With ``queue_size`` documents waiting for a slow worker, document_done waits for the oldest to finish."""
    embedder = GatedEmbedder()
    observer = ProfileObserver(embedder, output_dir=tmp_path, queue_size=2)
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
    observer.job_done(SUMMARY)
    assert observer.profiled == 3
    assert [p.id for p in read_profiles(tmp_path)] == ["d0", "d1", "d2"]


def test_a_worker_failure_stops_profiling_and_is_kept_not_swallowed(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """A profiling failure never fails a document: it is kept in ``failure`` (for the runner to raise), logged,
    and the documents after it are not profiled."""
    (first, first_plan), (second, second_plan) = _planned(tokenizer, 2)
    observer = ProfileObserver(GatedEmbedder(fail=True), output_dir=tmp_path, queue_size=1)
    observer.document_done(first, first_plan)
    observer.document_done(second, second_plan)  # waits for the first, which failed: no exception here
    observer.job_done(SUMMARY)
    assert isinstance(observer.failure, RuntimeError) and "crashed" in str(observer.failure)
    assert observer.profiled == 0 and not (tmp_path / PROFILE_FILE).exists()


def test_a_failing_sink_is_a_worker_failure(tokenizer: HFTokenizer) -> None:
    """A sink that raises (metrics, the drift tally) stops the profiling like the embedder would."""

    def broken(profile: DocumentProfile, plan: DocumentPlan) -> None:
        raise ValueError("sink broke")

    observer = ProfileObserver(sinks=[broken])
    for result, plan in _planned(tokenizer, 2):
        observer.document_done(result, plan)
    observer.job_done(SUMMARY)
    assert isinstance(observer.failure, ValueError)


def test_profiles_stream_to_a_partial_file(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """Each profile is on disk as soon as it is made; job_done merges them into profile.jsonl."""
    heard: list[str] = []
    observer = ProfileObserver(FakeEmbedder(), sinks=[lambda p, plan: heard.append(p.id)], output_dir=tmp_path)
    for result, plan in _planned(tokenizer, 2):
        observer.document_done(result, plan)
    observer.drain()
    assert len((tmp_path / PROFILE_PARTIAL_FILE).read_text().splitlines()) == 2
    assert not (tmp_path / PROFILE_FILE).exists()
    observer.job_done(SUMMARY)
    assert [p.id for p in read_profiles(tmp_path)] == heard == ["d0", "d1"]
    assert not (tmp_path / PROFILE_PARTIAL_FILE).exists()


def test_profiles_of_an_interrupted_run_are_merged_by_the_rerun(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """A run killed before job_done leaves its profiles in the partial file; the run that completes it keeps
    them (its documents are resumed, not profiled again)."""
    (first, first_plan), (second, second_plan) = _planned(tokenizer, 2)
    killed = ProfileObserver(FakeEmbedder(), output_dir=tmp_path)
    killed.document_done(first, first_plan)
    killed.close()
    rerun = ProfileObserver(FakeEmbedder(), output_dir=tmp_path)
    rerun.document_done(second, second_plan)
    rerun.job_done(SUMMARY)
    assert [p.id for p in read_profiles(tmp_path)] == ["d0", "d1"]


def test_merging_profiles_replaces_redone_documents_in_place(tmp_path: Path) -> None:
    """A rerun's profiles replace the earlier lines of the documents it redid; new ones follow; cut lines go."""
    old = _profiles(PYTHON, 3)
    write_profiles(tmp_path, old)
    redone = old[1].model_copy(update={"document_tokens": 1})
    new, newer = (old[0].model_copy(update={"id": "d3", "document_tokens": n}) for n in (2, 3))
    partial = tmp_path / PROFILE_PARTIAL_FILE
    lines = [p.model_dump_json() + "\n" for p in (redone, new, newer)]
    partial.write_text("".join(lines) + lines[0][:40])  # the last line was cut by a crash
    merge_profiles(tmp_path, partial)
    merged = list(iter_profiles(tmp_path))
    assert [(p.id, p.document_tokens) for p in merged] == [
        ("d0", old[0].document_tokens),
        ("d1", 1),
        ("d2", old[2].document_tokens),
        ("d3", 3),
    ]
    assert merged[0] == old[0] and merged[1] == redone
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert (tmp_path / PROFILE_FILE).read_text().endswith("\n")


def test_a_missing_profile_file_says_how_to_make_one(tmp_path: Path) -> None:
    """Reading profiles of a job run without monitoring names the setting and the drift profile command."""
    with pytest.raises(ConfigError, match=r"monitoring.embed.*drift profile"):
        iter_profiles(tmp_path)


def test_the_queue_needs_room_for_one_document() -> None:
    """queue_size below 1 is refused with the value."""
    with pytest.raises(ConfigError, match="at least 1, got 0"):
        ProfileObserver(queue_size=0)
