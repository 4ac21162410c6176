"""Job observers (observers.py): the fan-out, the do-nothing default and the progress display."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from mapreduce_llm.config import JobSpec
from mapreduce_llm.observers import NoObserver, Observers, ProgressObserver
from mapreduce_llm.prompts import select_prompts
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


def _job(tmp_path: Path, tokenizer: HFTokenizer, progress: ProgressObserver) -> None:
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
