"""Job observers (observers.py): the fan-out, the do-nothing default, the progress bars and the progress log."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from mapreduce_llm.config import JobSpec
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.observers import NoObserver, Observers, ProgressLogObserver, ProgressObserver
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.results import DocumentResult, ErrorInfo
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS, make_job
from tests.fakes import FakeEngine


class Recorder:
    """Keeps every call it hears, tagged with its name."""

    def __init__(self, name: str, heard: list[tuple[str, str]]) -> None:
        self.name = name
        self.heard = heard

    def request_done(self, prompt: Any, request: Any, output: Any) -> None:
        self.heard.append((self.name, "request"))

    def document_done(self, result: Any, plan: Any) -> None:
        self.heard.append((self.name, "document"))

    def job_done(self, summary: Any) -> None:
        self.heard.append((self.name, "job"))


def test_observers_tell_every_observer_in_order() -> None:
    """Observers passes each event to every observer given, in order, skipping None."""
    heard: list[tuple[str, str]] = []
    both = Observers(Recorder("a", heard), None, Recorder("b", heard))
    both.request_done(None, None, None)
    both.document_done(None, None)
    both.job_done(None)
    assert heard == [(name, event) for event in ("request", "document", "job") for name in ("a", "b")]
    NoObserver().job_done(None)


def _job(tmp_path: Path, tokenizer: HFTokenizer, progress: ProgressObserver | ProgressLogObserver) -> None:
    src = tmp_path / "in.jsonl"
    rows = [{"id": "a", "text": "Alpha is a letter. " * 200}, {"id": "b", "text": ""}, {"id": "c", "text": "Gamma."}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = JobSpec.model_validate(
        {"input": src, "output": tmp_path / "out", "prompts_dir": PROMPTS, "engine": {"max_model_len": 1024}}
    )
    engine = FakeEngine(tokenizer, max_model_len=1024, respond=lambda _r: "A summary.")
    prompts = select_prompts("summarize", PROMPTS)
    asyncio.run(make_job(spec, prompts, tokenizer, engine, observer=progress, on_result=progress.on_result).run())


def test_progress_counts_documents_errors_and_calls_by_stage(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """As a job's observer and on_result, ProgressObserver counts documents (resumed ones too), errors and calls."""
    out = io.StringIO()
    with ProgressObserver(total=3, file=out) as progress:
        _job(tmp_path, tokenizer, progress)
        assert progress.documents.n == 3 and progress.errors == 1
        assert progress.stages["map"] >= 2 and progress.stages["reduce"] == 1
        assert progress.calls.n == sum(progress.stages.values())
    assert "documents" in out.getvalue() and "engine calls" in out.getvalue()
    with ProgressObserver(total=3, file=io.StringIO()) as rerun:
        _job(tmp_path, tokenizer, rerun)
        assert rerun.documents.n == 3 and rerun.errors == 1 and rerun.calls.n == 0  # two reused, one unreadable


def test_a_disabled_progress_display_prints_nothing(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """enabled=False (no terminal) still counts but writes nothing."""
    out = io.StringIO()
    with ProgressObserver(total=3, enabled=False, file=out) as progress:
        _job(tmp_path, tokenizer, progress)
        assert progress.errors == 1
    assert out.getvalue() == ""


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _output(prompt_tokens: int, completion_tokens: int) -> EngineOutput:
    return EngineOutput("r", "text", prompt_tokens, completion_tokens, None, "stop", 0.1)


def _result(ok: bool) -> DocumentResult:
    if ok:
        return DocumentResult(id="d", status="ok", output="done")
    return DocumentResult(id="d", status="error", error=ErrorInfo(code="empty", message="empty"))


def test_progress_log_reports_documents_requests_rates_and_eta() -> None:
    """A progress line: documents (reused too) of the total, errors, requests, tokens/s since the last line, ETA."""
    clock = FakeClock()
    progress = ProgressLogObserver(total=10, clock=clock)
    request = EngineRequest("r", [1, 2], 8, "map")
    progress.on_result(_result(ok=True))  # reused from an earlier run: counted, but not in the pace
    for ok in (True, False):
        progress.request_done(None, request, _output(100, 20))  # type: ignore[arg-type]
        progress.on_result(_result(ok))
        progress.document_done(_result(ok), None)
    progress.request_done(None, request, None)  # type: ignore[arg-type]
    clock.now += 20
    with capture_logs() as logs:
        progress.log_progress()
    (line,) = logs
    assert line["event"] == "job.progress" and line["log_level"] == "info"
    assert (line["documents"], line["total"], line["errors"], line["requests"]) == (3, 10, 1, 3)
    assert (line["prompt_tokens_per_s"], line["output_tokens_per_s"]) == (10.0, 2.0)
    assert (line["elapsed_s"], line["eta_s"]) == (20.0, 70.0)  # 7 left at 10 s per computed document
    clock.now += 10
    assert progress.figures()["output_tokens_per_s"] == 0.0  # nothing generated since the last line


def test_progress_log_has_no_eta_before_a_computed_document() -> None:
    """Without a total, or before this run computed a document, the ETA is None."""
    clock = FakeClock()
    progress = ProgressLogObserver(total=None, clock=clock)
    clock.now += 5
    assert progress.figures()["eta_s"] is None
    progress = ProgressLogObserver(total=4, clock=clock)
    progress.on_result(_result(ok=True))
    clock.now += 5
    assert progress.figures()["eta_s"] is None and progress.figures()["documents"] == 1


def test_progress_log_logs_at_a_steady_interval_while_open() -> None:
    """Opened as a context manager, it logs a line every interval until closed, even when nothing happens."""
    with capture_logs() as logs:
        with ProgressLogObserver(total=2, interval_s=0.02):
            deadline = time.monotonic() + 5
            while len(logs) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
        count = len(logs)
        time.sleep(0.1)
    assert count >= 3 and len(logs) == count  # no line after closing
    assert {entry["event"] for entry in logs} == {"job.progress"}


def test_progress_log_counts_a_real_job_without_document_text(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """As a job's observer and on_result it counts the job's documents and requests; its lines hold no text."""
    with capture_logs() as logs, ProgressLogObserver(total=3, interval_s=3600) as progress:
        _job(tmp_path, tokenizer, progress)
        progress.log_progress()
    line = next(entry for entry in logs if entry["event"] == "job.progress")
    assert (line["documents"], line["errors"], line["eta_s"]) == (3, 1, 0.0)
    assert line["requests"] >= 3 and progress.output_tokens > 0
    assert "Alpha" not in json.dumps(line)
