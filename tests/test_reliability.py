"""Reliability with engine doubles: the output cache, retries with backoff, timeouts that measure a stopped
engine (not a slow one), the circuit breaker, fatal engine errors, and a cache that cannot be used."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mapreduce_llm.cache import RequestCache
from mapreduce_llm.config import JobSpec
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.engines.client import EngineClient
from mapreduce_llm.errors import EngineError, RequestError
from mapreduce_llm.job import Job
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.results import DocumentResult
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fakes import BrokenEngine, FakeEngine, HungEngine, SharedEngine


def _corpus(tmp_path: Path, n: int = 4) -> Path:
    src = tmp_path / "docs"
    src.mkdir()
    for i in range(n):
        (src / f"d{i}.txt").write_text(" ".join(f"Sentence {j} of document {i}." for j in range(400)))
    return src


def _spec(tmp_path: Path, src: Path, **engine: object) -> JobSpec:
    return JobSpec.model_validate(
        {
            "input": src,
            "output": tmp_path / "out",
            "prompts_dir": PROMPTS,
            "engine": {"max_model_len": 1024, "retry_backoff_s": 0.01, **engine},
        }
    )


def _job(spec: JobSpec, engine: FakeEngine, tokenizer: HFTokenizer, prompt: str = "summarize") -> Job:
    return Job(spec, select_prompts(prompt, PROMPTS), tokenizer, engine)


class DyingEngine(FakeEngine):
    """Answers ``budget`` requests, then fails like a dead engine (fatal)."""

    def __init__(self, tokenizer: HFTokenizer, budget: int) -> None:
        super().__init__(tokenizer, max_model_len=1024)
        self.budget = budget
        self.answered: list[list[int]] = []

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        if len(self.answered) >= self.budget:
            raise EngineError("engine died")
        out = await super()._answer(request)
        self.answered.append(request.prompt_token_ids)
        return out


class FlakyEngine(FakeEngine):
    """Fails each request ``failures`` times (transiently, or by hanging) before answering it."""

    def __init__(self, tokenizer: HFTokenizer, failures: int, mode: str = "error") -> None:
        super().__init__(tokenizer, max_model_len=1024)
        self.failures = failures
        self.mode = mode
        self.attempts: dict[str, int] = {}

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        key = request.request_id  # the same across retries of one request
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.attempts[key] <= self.failures:
            if self.mode == "hang":
                await asyncio.sleep(60)
            raise RequestError("engine hiccup", transient=self.mode != "reject")
        return await super()._answer(request)


def test_rerun_after_a_dead_engine_reuses_every_finished_request(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A job stopped by a dead engine keeps its finished requests; the rerun sends only the others."""
    src = _corpus(tmp_path)
    spec = _spec(tmp_path, src)
    dying = DyingEngine(tokenizer, budget=9)
    with pytest.raises(EngineError):
        asyncio.run(_job(spec, dying, tokenizer).run())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "failed" and "engine died" in summary["fatal_error"]

    healthy = FakeEngine(tokenizer, max_model_len=1024)
    summary2 = asyncio.run(_job(spec, healthy, tokenizer).run())
    assert len(dying.answered) >= 9
    # Every answered request is reused (some more than once: identical collapse inputs share one output).
    assert summary2.ok == 4 and summary2.requests_from_cache >= len(dying.answered)
    finished = {tuple(ids) for ids in dying.answered}
    assert not finished & {tuple(r.prompt_token_ids) for r in healthy.requests}
    assert summary2.requests_sent == len(healthy.requests)
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 and len({json.loads(line)["id"] for line in lines}) == 4


def test_a_new_prompt_version_does_not_reuse_old_outputs(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """Cached outputs are keyed by prompt version content: another version recomputes everything."""
    src = tmp_path / "qa.jsonl"
    src.write_text(json.dumps({"id": "q", "text": "The code is 42. " * 300, "question": "Code?"}) + "\n")
    spec = _spec(tmp_path, src).model_copy(update={"prompt": "qa@1.0.0"})
    first = FakeEngine(tokenizer, max_model_len=1024, respond=lambda r: "42")
    asyncio.run(_job(spec, first, tokenizer, "qa@1.0.0").run())
    second = FakeEngine(tokenizer, max_model_len=1024, respond=lambda r: "42")
    summary = asyncio.run(_job(spec, second, tokenizer, "qa@1.1.0").run())
    assert summary.requests_from_cache == 0 and len(second.requests) == len(first.requests)


def test_transient_failures_are_retried(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """Each request failing twice still succeeds with two retries; every attempt is counted as sent."""
    spec = _spec(tmp_path, _corpus(tmp_path, 1), request_retries=2, circuit_breaker_failures=100)
    engine = FlakyEngine(tokenizer, failures=2)
    summary = asyncio.run(_job(spec, engine, tokenizer).run())
    assert summary.ok == 1 and summary.requests_sent == 3 * sum(summary.requests.values())


def test_retries_are_bounded_then_the_document_fails(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """When retries run out the document gets an engine_request error record; the job completes."""
    spec = _spec(tmp_path, _corpus(tmp_path, 2), request_retries=1, circuit_breaker_failures=100)
    engine = FlakyEngine(tokenizer, failures=5)
    summary = asyncio.run(_job(spec, engine, tokenizer).run())
    assert summary.status == "completed" and summary.errors == 2
    assert summary.errors_by_code == {"engine_request": 2}
    assert max(engine.attempts.values()) == 2


def test_rejected_requests_are_not_retried(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A request the engine rejects (not transient) fails its document at once."""
    spec = _spec(tmp_path, _corpus(tmp_path, 1), request_retries=3)
    engine = FlakyEngine(tokenizer, failures=1, mode="reject")
    summary = asyncio.run(_job(spec, engine, tokenizer).run())
    assert summary.errors == 1 and max(engine.attempts.values()) == 1


def test_hung_requests_time_out_and_are_retried(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A request with no answer within request_timeout_s is cancelled and retried."""
    spec = _spec(tmp_path, _corpus(tmp_path, 1), request_timeout_s=0.2, request_retries=1, circuit_breaker_failures=100)
    engine = FlakyEngine(tokenizer, failures=1, mode="hang")
    summary = asyncio.run(_job(spec, engine, tokenizer).run())
    assert summary.ok == 1 and summary.requests_sent == 2 * sum(summary.requests.values())


def test_a_slow_engine_shared_by_64_requests_is_not_a_fault(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """66 map requests share a slow engine, so each takes several times request_timeout_s, but tokens keep
    coming: every document completes and no request is sent twice."""
    spec = _spec(tmp_path, _corpus(tmp_path, 11), request_timeout_s=0.3)
    engine = SharedEngine(tokenizer, step_s=0.002, tokens_per_request=8, max_model_len=1024)
    summary = asyncio.run(_job(spec, engine, tokenizer).run())
    assert summary.status == "completed" and summary.ok == 11
    assert engine.max_in_flight >= 64
    assert max(engine.latency.values()) > 3 * 0.3  # each request waited far longer than the timeout
    sent = Counter(engine.received)
    assert max(sent.values()) == 1 and summary.requests_sent == len(engine.received) == len(engine.requests)


def test_a_hung_engine_is_abandoned_after_the_timeout_then_the_document_fails(
    tmp_path: Path, tokenizer: HFTokenizer
) -> None:
    """An engine that takes requests and produces nothing: each attempt is cancelled about request_timeout_s
    after it was sent, retried, and then the document gets an engine_request error record."""
    src = tmp_path / "one.txt"
    src.write_text("A short document that fits in one chunk.")
    spec = _spec(
        tmp_path, src, request_timeout_s=0.2, request_retries=1, retry_backoff_s=0, circuit_breaker_failures=100
    )
    engine = HungEngine(tokenizer, max_model_len=1024)
    started = time.perf_counter()
    summary = asyncio.run(_job(spec, engine, tokenizer).run())
    assert summary.status == "completed" and summary.errors_by_code == {"engine_request": 1}
    assert [r.request_id for r in engine.requests] == [engine.requests[0].request_id] * 2  # one request, 2 attempts
    assert len(engine.cancelled) == 2  # both attempts aborted in the engine
    assert all(0.2 <= seconds < 0.2 + 0.05 + 0.3 for _, seconds in engine.cancelled)
    assert time.perf_counter() - started < 3


def test_a_request_that_always_fails_fails_only_its_document(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """Requests of one document fail on every attempt; the others' succeed in between, so the circuit breaker
    stays closed: that document gets an engine_request error record, the others complete."""
    src = tmp_path / "docs"
    src.mkdir()
    for name in ("a", "b", "poison", "c"):
        (src / f"{name}.txt").write_text(f"Document {name}. " * 40)
    poison = set(tokenizer.encode_data(" poison"))

    class PoisonedEngine(FakeEngine):
        async def _answer(self, request: EngineRequest) -> EngineOutput:
            if poison & set(request.prompt_token_ids):
                raise RequestError("engine error on this input", transient=True)
            return await super()._answer(request)

    spec = _spec(tmp_path, src, request_retries=2, circuit_breaker_failures=8)
    summary = asyncio.run(_job(spec, PoisonedEngine(tokenizer, max_model_len=1024), tokenizer).run())
    assert summary.status == "completed" and summary.ok == 3
    assert summary.errors_by_code == {"engine_request": 1}


def test_a_dead_engine_trips_the_circuit_breaker_and_keeps_finished_documents(
    tmp_path: Path, tokenizer: HFTokenizer
) -> None:
    """The engine fails every attempt after the first document: the job fails with EngineError after
    circuit_breaker_failures attempts in a row, in bounded time, with the first document kept."""
    spec = _spec(
        tmp_path, _corpus(tmp_path, 3), request_retries=10, circuit_breaker_failures=4, circuit_breaker_after_s=0
    )
    spec = spec.model_copy(update={"limits": spec.limits.model_copy(update={"max_documents_in_flight": 1})})
    engine = BrokenEngine(tokenizer, stage="reduce", max_model_len=1024)
    finished: list[DocumentResult] = []
    job = Job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine, on_result=finished.append)
    started = time.perf_counter()
    with pytest.raises(EngineError, match=r"failed 4 attempts in a row.*engine core died.*circuit_breaker_failures"):
        asyncio.run(job.run())
    assert time.perf_counter() - started < 5
    assert 4 <= engine.failed < 4 + 6  # stopped by the breaker, not by 11 attempts of each request
    assert [(r.id, r.status) for r in finished] == [("d0.txt", "ok")]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["ok"] == 1 and "circuit_breaker_failures" in summary["fatal_error"]


def test_a_corrupt_cache_file_is_a_warning_not_a_failure(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """cache.sqlite holds garbage: the job runs without the cache, says so once, and leaves the file alone."""
    spec = _spec(tmp_path, _corpus(tmp_path, 2))
    cache = tmp_path / "out" / "cache.sqlite"
    cache.parent.mkdir()
    garbage = b"this is not a database \x00\xff" * 100
    cache.write_bytes(garbage)
    with capture_logs() as logs:
        summary = asyncio.run(_job(spec, FakeEngine(tokenizer, max_model_len=1024), tokenizer).run())
    assert summary.status == "completed" and summary.ok == 2 and summary.requests_from_cache == 0
    warnings = [e for e in logs if e["event"] == "cache.unavailable"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning" and "not a database" in warnings[0]["error"]
    assert cache.read_bytes() == garbage


def test_a_locked_cache_is_a_warning_not_a_failure(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """Another process holds the cache's write lock for the whole job: the job completes without the cache."""
    spec = _spec(tmp_path, _corpus(tmp_path, 2))
    path = tmp_path / "out" / "cache.sqlite"
    with RequestCache(path) as cache:
        assert cache.get("warm-up") is None  # creates the database
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a writer that never commits
    engine = FakeEngine(tokenizer, max_model_len=1024)
    client = EngineClient(engine, spec.engine, job_id="locked", cache=RequestCache(path, busy_timeout_s=0.05))
    try:
        with capture_logs() as logs:
            summary = asyncio.run(
                Job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine, client=client).run()
            )
    finally:
        holder.rollback()
        holder.close()
    assert summary.status == "completed" and summary.ok == 2
    warnings = [e for e in logs if e["event"] == "cache.unavailable"]
    assert len(warnings) == 1 and "locked" in warnings[0]["error"]


def _stored(cache: Path) -> int:
    """Outputs committed to a job's cache so far (0 before the file or table exists)."""
    import sqlite3

    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(cache, timeout=5) as db:
            count: int = db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
            return count
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def test_driver_killed_mid_job_resumes_without_resending_finished_requests(tmp_path: Path) -> None:
    """SIGKILL the driver mid-job; the rerun finishes every document and re-sends no finished request."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    src = _corpus(tmp_path, 6)
    out, log1, log2 = tmp_path / "out", tmp_path / "sent-1.log", tmp_path / "sent-2.log"
    command = [sys.executable, "-m", "tests.job_with_fake_engine", str(src), str(out)]
    first = subprocess.Popen([*command, str(log1), "0.05"], cwd=ROOT)
    cache = out / "cache.sqlite"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None and _stored(cache) < 8:
        time.sleep(0.02)
    assert first.poll() is None, "the job ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert not (out / "results.jsonl").exists()

    with sqlite3.connect(cache) as db:
        finished = {key for (key,) in db.execute("SELECT key FROM outputs")}
    assert finished, "no request finished before the kill"

    rerun = subprocess.run([*command, str(log2), "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not list(out.glob(".results.jsonl.*")), "the killed run's temporary file is cleaned up"
    resent = set(log2.read_text().splitlines()) & finished
    assert resent == set(), f"{len(resent)} finished requests were sent again"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in results) == [f"d{i}.txt" for i in range(6)]
    assert all(r["status"] == "ok" for r in results)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests_from_cache"] + summary["resumed"] > 0  # the first run's work was reused
    assert summary["requests_sent"] == len(log2.read_text().splitlines())


def test_ctrl_c_flushes_and_the_rerun_resumes(tmp_path: Path) -> None:
    """SIGINT mid-job: the driver stops, summary.json says failed, finished work is kept, a rerun completes."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    src = _corpus(tmp_path, 6)
    out, log1, log2 = tmp_path / "out", tmp_path / "sent-1.log", tmp_path / "sent-2.log"
    command = [sys.executable, "-m", "tests.job_with_fake_engine", str(src), str(out)]
    # A shell that starts the test suite in the background makes its children ignore SIGINT, and Python then
    # installs no KeyboardInterrupt handler: give the driver the default disposition, as in a terminal.
    first = subprocess.Popen(
        [*command, str(log1), "0.2"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None and _stored(out / "cache.sqlite") < 8:
        time.sleep(0.02)
    assert first.poll() is None, "the job ended before it could be interrupted"
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode != 0 and "KeyboardInterrupt" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and not (out / "results.jsonl").exists()
    assert not list(out.glob(".results.jsonl.*")), "the incomplete ordered file is removed"

    rerun = subprocess.run([*command, str(log2), "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["ok"] == 6
    assert summary["requests_from_cache"] + summary["resumed"] > 0


def test_prompt_hash_ignores_defaults_but_not_content() -> None:
    """A field left at its default does not count (a new optional field in a later release keeps old cache
    entries valid); any real change does."""
    from mapreduce_llm.prompts import PromptFile, prompt_hash

    base = select_prompts("qa@1.0.0", PROMPTS).base.file
    spelled_out = PromptFile.model_validate({**base.model_dump(), "output": "text", "query": None})
    assert prompt_hash(spelled_out) == prompt_hash(base)
    changed = PromptFile.model_validate({**base.model_dump(), "reserved_output_tokens": 97})
    assert prompt_hash(changed) != prompt_hash(base)
