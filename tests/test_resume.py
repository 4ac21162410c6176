"""Every input gets exactly one fresh result: reruns reuse a result only on an exact match, one writer per folder,
a bug in one document is that document's error, and memory stays bounded behind a slow document."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from mapreduce_llm.config import JobSpec
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.errors import OutputInUseError
from mapreduce_llm.fingerprints import model_fingerprint, server_model_fingerprint
from mapreduce_llm.job import Job
from mapreduce_llm.output import OutputLock
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fakes import FakeEngine


def _spec(tmp_path: Path, source: Path, prompts: Path = PROMPTS, prompt: str = "qa", **extra: object) -> JobSpec:
    return JobSpec.model_validate(
        {"input": source, "output": tmp_path / "out", "prompt": prompt, "prompts_dir": prompts, **extra}
    )


def _run(
    spec: JobSpec, engine: FakeEngine, tokenizer: HFTokenizer, model_identity: str | None = None
) -> tuple[list[dict[str, object]], dict[str, object]]:
    job = Job(spec, select_prompts(spec.prompt, spec.prompts_dir), tokenizer, engine, model_identity=model_identity)
    asyncio.run(job.run())
    results = [json.loads(line) for line in (spec.output / "results.jsonl").read_text().splitlines()]
    return results, json.loads((spec.output / "summary.json").read_text())


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _echo_question(req: EngineRequest) -> str:
    """An answer that depends on the request, so a stale result is visible."""
    return f"Answer to request of {len(req.prompt_token_ids)} tokens."


ROWS = [
    {"id": "a", "text": "Alpha is the first letter. " * 20, "question": "What is alpha?"},
    {"id": "b", "text": "Beta is the second letter. " * 20, "question": "What is beta?"},
    {"id": "c", "text": "Gamma is the third letter. " * 20, "question": "What is gamma?"},
]


def test_unchanged_rerun_reuses_everything(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A rerun of the same input and settings reuses every result without an engine call."""
    src = _write(tmp_path / "in.jsonl", ROWS)
    engine = FakeEngine(tokenizer, respond=_echo_question)
    first, _ = _run(_spec(tmp_path, src), engine, tokenizer)
    calls = len(engine.requests)
    again, summary = _run(_spec(tmp_path, src), engine, tokenizer)
    assert again == first and len(engine.requests) == calls
    assert summary["resumed"] == 3 and summary["recomputed"] == {}
    assert all(r["fingerprints"]["input"] and r["fingerprints"]["settings"] for r in first)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda row: row.update(text="Beta is now the last letter. " * 20), "text"),
        (lambda row: row.update(question="Which letter comes second?"), "question"),
        (lambda row: row.update(topic="greek"), "metadata"),
    ],
)
def test_changed_input_is_recomputed(tmp_path: Path, tokenizer: HFTokenizer, change: object, field: str) -> None:
    """Changing a document's text, question or metadata recomputes that document, and only that one."""
    src = _write(tmp_path / "in.jsonl", ROWS)
    engine = FakeEngine(tokenizer, respond=_echo_question)
    first, _ = _run(_spec(tmp_path, src), engine, tokenizer)
    rows = [dict(r) for r in ROWS]
    change(rows[1])  # type: ignore[operator]
    _write(src, rows)
    again, summary = _run(_spec(tmp_path, src), engine, tokenizer)
    assert summary["resumed"] == 2 and summary["recomputed"] == {"input_changed": 1}
    assert again[0] == first[0] and again[2] == first[2]
    assert again[1]["fingerprints"]["input"] != first[1]["fingerprints"]["input"]
    assert again[1]["question"] == rows[1]["question"]
    if field == "metadata":
        assert again[1]["metadata"] == {"topic": "greek"}


def test_changed_prompt_file_recomputes_all(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """Editing the prompt version's file (same version number) recomputes every document."""
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS, prompts)
    src = _write(tmp_path / "in.jsonl", ROWS)
    engine = FakeEngine(tokenizer, respond=_echo_question)
    _run(_spec(tmp_path, src, prompts, prompt="qa@1.0.0"), engine, tokenizer)
    version = prompts / "qa" / "1.0.0.yaml"
    version.write_text(version.read_text().replace("Answer", "Reply", 1))
    calls = len(engine.requests)
    _, summary = _run(_spec(tmp_path, src, prompts, prompt="qa@1.0.0"), engine, tokenizer)
    assert summary["resumed"] == 0 and summary["recomputed"] == {"settings_changed": 3}
    assert len(engine.requests) > calls


def test_changed_sampling_recomputes_all(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A sampling override changes the settings fingerprint."""
    src = _write(tmp_path / "in.jsonl", ROWS)
    engine = FakeEngine(tokenizer, respond=_echo_question)
    _run(_spec(tmp_path, src), engine, tokenizer)
    _, summary = _run(_spec(tmp_path, src, sampling={"temperature": 0.7}), engine, tokenizer)
    assert summary["recomputed"] == {"settings_changed": 3}


def test_changed_model_files_recompute_all(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """Same model name, new weights: the model's identity comes from its files, so every result is redone."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (folder / "model.safetensors").write_bytes(b"weights v1" * 1000)
    store = tmp_path / "hashes.json"
    before = model_fingerprint(folder, store)
    assert model_fingerprint(folder, store) == before  # remembered, and stable
    src = _write(tmp_path / "in.jsonl", ROWS)
    engine = FakeEngine(tokenizer, respond=_echo_question)
    _run(_spec(tmp_path, src), engine, tokenizer, model_identity=before)
    (folder / "model.safetensors").write_bytes(b"weights v2" * 1000)
    after = model_fingerprint(folder, store)
    assert after != before
    calls = len(engine.requests)
    _, summary = _run(_spec(tmp_path, src), engine, tokenizer, model_identity=after)
    assert summary["recomputed"] == {"settings_changed": 3}
    assert summary["requests_from_cache"] == 0 and len(engine.requests) > calls  # new weights miss the cache too
    (folder / ".marker").write_text("not part of the model")
    assert model_fingerprint(folder, store) == after


def test_errors_and_old_records_are_recomputed(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """An earlier error record is retried; a record without fingerprints (older release) is not trusted."""
    src = _write(tmp_path / "in.jsonl", ROWS)
    engine = FakeEngine(tokenizer, respond=_echo_question)
    first, _ = _run(_spec(tmp_path, src), engine, tokenizer)
    results = tmp_path / "out" / "results.jsonl"
    first[0]["status"], first[0]["error"] = "error", {"code": "engine_request", "message": "x"}
    del first[1]["fingerprints"]
    results.write_text("".join(json.dumps(r) + "\n" for r in first))
    again, summary = _run(_spec(tmp_path, src), engine, tokenizer)
    assert summary["recomputed"] == {"previous_error": 1, "older_format": 1} and summary["resumed"] == 1
    assert [r["status"] for r in again] == ["ok", "ok", "ok"]


def test_job_into_a_folder_in_use_fails_before_any_work(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """Job.run refuses at once, sends nothing and leaves the other job's files alone."""
    src = _write(tmp_path / "in.jsonl", ROWS)
    holder = OutputLock(tmp_path / "out", "running-job")
    holder.acquire()
    (tmp_path / "out" / "results.partial.jsonl").write_text("the other job's line\n")
    engine = FakeEngine(tokenizer)
    with pytest.raises(OutputInUseError, match="running-job"):
        _run(_spec(tmp_path, src), engine, tokenizer)
    assert engine.requests == []
    assert (tmp_path / "out" / "results.partial.jsonl").read_text() == "the other job's line\n"
    holder.release()


class BuggyEngine(FakeEngine):
    """Hits an unexpected exception (a bug, not an engine failure) on the requests of one document."""

    def __init__(self, tokenizer: HFTokenizer, marker: str) -> None:
        super().__init__(tokenizer, respond=_echo_question)
        self.marker = tokenizer.encode_data(marker)

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        ids, m = request.prompt_token_ids, self.marker
        if any(ids[i : i + len(m)] == m for i in range(len(ids) - len(m) + 1)):
            raise ZeroDivisionError("a bug")
        return await super()._answer(request)


def test_a_bug_in_one_document_is_its_internal_error(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """An unexpected exception becomes that document's internal_error record with a traceback id; the rest run."""
    src = _write(tmp_path / "in.jsonl", ROWS)
    engine = BuggyEngine(tokenizer, "Gamma is the third")
    with capture_logs() as logs:
        results, summary = _run(_spec(tmp_path, src), engine, tokenizer)
    assert [r["status"] for r in results] == ["ok", "ok", "error"]
    error = results[2]["error"]
    assert error["code"] == "internal_error" and "ZeroDivisionError" in error["message"]
    logged = [e for e in logs if e["event"] == "document.internal_error"]
    assert len(logged) == 1 and logged[0]["traceback_id"] in error["message"]
    assert summary["status"] == "completed" and summary["errors_by_code"] == {"internal_error": 1}


class SlowFirstEngine(FakeEngine):
    """The first document's requests wait ``delay`` seconds; every other request is answered at once."""

    def __init__(self, tokenizer: HFTokenizer, marker: str, delay: float) -> None:
        super().__init__(tokenizer, respond=lambda _r: "Short summary.")
        self.marker = tokenizer.encode_data(marker)
        self.delay = delay

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        ids, m = request.prompt_token_ids, self.marker
        if any(ids[i : i + len(m)] == m for i in range(len(ids) - len(m) + 1)):
            await asyncio.sleep(self.delay)
        return await super()._answer(request)


def test_reorder_buffer_is_bounded_behind_a_slow_document(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """Behind one slow document, fresh, resumed and error records alike wait in a bounded buffer: reading pauses."""
    rows: list[dict[str, object]] = [{"id": "slow", "text": "Zeppelin airships were slow. " * 10}]
    for i in range(300):
        rows.append(
            {"id": f"d{i}", "text": f"Document {i} says little. " * 5} if i % 3 else {"id": f"e{i}", "text": ""}
        )
    src = _write(tmp_path / "in.jsonl", rows)
    spec = _spec(tmp_path, src, prompt="summarize", limits={"max_buffered_results": 20, "max_documents_in_flight": 4})
    engine = SlowFirstEngine(tokenizer, "Zeppelin", delay=1.0)
    job = Job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine)
    asyncio.run(job.run())
    # the bound, plus the documents in flight and read ahead when reading paused
    assert job.peak_buffered <= 20 + 4 + spec.limits.read_ahead
    results = [json.loads(line) for line in (spec.output / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    # A rerun whose first document is slow again (changed): the 300 reused records wait in the same bound.
    rows[0]["text"] = "Zeppelin airships were slower still. " * 10
    _write(src, rows)
    job = Job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine)
    summary = asyncio.run(job.run())
    assert summary.resumed == 200 and summary.recomputed == {"input_changed": 1} and summary.errors == 100
    assert job.peak_buffered <= 20 + 4 + spec.limits.read_ahead


def test_a_served_model_is_identified_by_what_the_server_reports() -> None:
    """Behind an OpenAI-compatible server the model's files are out of sight: its id, root and context length
    identify it, so a server now serving another checkpoint under the same name gives a new identity."""
    before = server_model_fingerprint("http://h:8000/v1", {"id": "m", "root": "/models/a", "max_model_len": 2048})
    same = server_model_fingerprint("http://h:8000/v1/", {"id": "m", "root": "/models/a", "max_model_len": 2048})
    moved = server_model_fingerprint("http://h:8000/v1", {"id": "m", "root": "/models/b", "max_model_len": 2048})
    assert before == same and before != moved
