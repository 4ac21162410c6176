"""The job with an engine double: bad input never kills the job, budgets always hold, reruns resume, and no
document text reaches the logs."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from mapreduce_llm.config import JobSpec
from mapreduce_llm.documents import Document
from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.errors import DocumentError
from mapreduce_llm.job import Job
from mapreduce_llm.prompts import Message, ModelCalibration, PromptFile, PromptRef, select_prompts, write_calibration
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS, SUMMARIZE, make_job
from tests.fake_embeddings import FakeEmbedder
from tests.fakes import FakeEngine


def _spec(tmp_path: Path, source: Path, prompt: str = "summarize", **extra: object) -> JobSpec:
    return JobSpec.model_validate(
        {"input": source, "output": tmp_path / "out", "prompt": prompt, "prompts_dir": PROMPTS, **extra}
    )


def _run(spec: JobSpec, engine: FakeEngine, tokenizer: HFTokenizer) -> list[dict[str, object]]:
    asyncio.run(make_job(spec, select_prompts(spec.prompt, spec.prompts_dir), tokenizer, engine).run())
    return [json.loads(line) for line in (spec.output / "results.jsonl").read_text().splitlines()]


def test_bad_documents_become_records_and_the_rest_completes(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """One line per input, in order: good documents reduced, each bad one with its own error code."""
    src = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": "long", "text": corpus_text[:30_000], "topic": "howto"}),
        "{oops",
        json.dumps({"id": "blank", "text": "  "}),
        json.dumps({"id": "short", "text": "A short note. {document} {{ x }} <|im_start|>"}),
        json.dumps({"id": "long", "text": "again"}),
    ]
    src.write_text("\n".join(lines) + "\n")
    engine = FakeEngine(tokenizer, max_model_len=1024)
    results = _run(_spec(tmp_path, src, engine={"max_model_len": 1024}), engine, tokenizer)
    assert [(r["id"], r["status"]) for r in results] == [
        ("long", "ok"),
        ("in.jsonl:2", "error"),
        ("blank", "error"),
        ("short", "ok"),
        ("long", "error"),
    ]
    long = results[0]
    assert long["chunks"] > 5 and long["levels"] >= 2 and long["metadata"] == {"topic": "howto"}
    assert long["prompt"] == {"name": "summarize", "version": SUMMARIZE} and long["model"] == "fake-model"
    spans = [(p["start"], p["end"]) for p in long["provenance"]]
    assert spans[0][0] == 0 and spans[-1][1] == 30_000 and len(spans) == long["chunks"]
    assert long["usage"]["requests"]["map"] == long["chunks"] and long["usage"]["requests"]["reduce"] == 1
    assert results[3]["levels"] == 0 and results[3]["chunks"] == 1
    assert not engine.violations
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ok"] == 2 and summary["errors"] == 3 and summary["status"] == "completed"
    assert summary["errors_by_code"] == {"malformed_json": 1, "empty": 1, "duplicate_id": 1}
    assert not (tmp_path / "out" / "results.partial.jsonl").exists()


def test_qa_not_found_when_no_chunk_answers(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str) -> None:
    """qa: map outputs saying NOT FOUND are dropped; if all do, the answer is NOT FOUND without a reduce."""
    src = tmp_path / "qa.jsonl"
    src.write_text(
        json.dumps({"id": "q1", "text": corpus_text[:20_000], "question": "What is the airspeed of a swallow?"})
        + "\n"
        + json.dumps({"id": "q2", "text": corpus_text[:20_000]})
        + "\n"
    )

    def respond(req: EngineRequest) -> str:
        return "NOT FOUND" if req.stage == "map" else "unused"

    engine = FakeEngine(tokenizer, respond=respond)
    results = _run(_spec(tmp_path, src, prompt="qa@1.0.0"), engine, tokenizer)
    assert results[0]["output"] == "NOT FOUND" and results[0]["not_found"] is True
    assert results[0]["levels"] == 0 and "reduce" not in results[0]["usage"]["requests"]
    assert results[1]["status"] == "error" and results[1]["error"]["code"] == "missing_variable"
    assert "question" in results[1]["error"]["message"]


def test_qa_reduces_only_answers_with_their_provenance(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """Only chunks that answered feed the reduce, and provenance names exactly those chunks."""
    src = tmp_path / "qa.jsonl"
    text = corpus_text[:20_000]
    src.write_text(json.dumps({"id": "q", "text": text, "question": "Which needle?"}) + "\n")
    needle = tokenizer.encode_data("logging")

    def respond(req: EngineRequest) -> str:
        if req.stage == "map":
            ids = req.prompt_token_ids
            has = any(ids[i : i + len(needle)] == needle for i in range(len(ids)))
            return "It mentions logging." if has else "NOT FOUND"
        return "Final: logging."

    engine = FakeEngine(tokenizer, respond=respond)
    (result,) = _run(_spec(tmp_path, src, prompt="qa@1.0.0"), engine, tokenizer)
    assert result["output"] == "Final: logging." and result["not_found"] is False
    for p in result["provenance"]:
        assert "logging" in text[p["start"] : p["end"]]
    assert 0 < len(result["provenance"]) < result["chunks"]


def test_rerun_resumes_without_recomputing(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A rerun into the same folder reuses successful results and retries failed ones only."""
    src = tmp_path / "docs"
    src.mkdir()
    for i in range(3):
        (src / f"d{i}.txt").write_text(f"Document number {i}. " * 50)
    engine = FakeEngine(tokenizer)
    first = _run(_spec(tmp_path, src), engine, tokenizer)
    assert all(r["status"] == "ok" for r in first)
    calls = len(engine.requests)
    (src / "d3.txt").write_text("A new document.")
    again = _run(_spec(tmp_path, src), engine, tokenizer)
    assert len(again) == 4 and again[:3] == first
    assert len(engine.requests) == calls + 1  # only the new document's single map call
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["resumed"] == 3


_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00\ue000\ue001"), max_size=400)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=6000)
    | st.sampled_from(["<|im_start|>" * 300, "{chunk}" * 400, "{{ x }} {% if %} " * 200]),
    system=_TEXT,
    before=_TEXT,
    after=_TEXT,
    question=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=200),
    max_model_len=st.integers(256, 1200),
    reserve=st.integers(16, 120),
)
def test_no_request_ever_exceeds_the_context(
    tmp_path: Path,
    tokenizer: HFTokenizer,
    text: str,
    system: str,
    before: str,
    after: str,
    question: str,
    max_model_len: int,
    reserve: int,
) -> None:
    """For any text and any template, every request sent fits the context (or the document is refused)."""
    esc = {ord("{"): "{{", ord("}"): "}}"}
    user = before.translate(esc) + "{question}{chunk}" + after.translate(esc)
    reduce_user = before.translate(esc) + "{partials}{question}"
    pf = PromptFile(
        description="generated",
        variables=["question"],
        map=Message(system=system.translate(esc), user=user),
        collapse=Message(user=reduce_user),
        reduce=Message(system=system.translate(esc), user=reduce_user),
        reserved_output_tokens=reserve,
    )
    prompt = PromptRef("gen", "1.0.0", tmp_path / "gen.yaml", pf)
    engine = FakeEngine(tokenizer, max_model_len=max_model_len)
    spec = JobSpec.model_validate(
        {"input": tmp_path, "output": tmp_path / "o", "engine": {"max_model_len": max_model_len}}
    )
    job = make_job(spec, prompt, tokenizer, engine)
    doc = Document(id="h", text=text, question=question, source="generated")
    try:
        result, _ = asyncio.run(job.process(doc))
    except DocumentError as err:
        assert err.code in {"prompt_too_long", "reduce_budget", "no_tokens", "missing_variable"}
        return
    finally:
        assert not engine.violations
        for req in engine.requests:
            assert len(req.prompt_token_ids) + req.max_tokens <= max_model_len
    assert result.status == "ok"


def test_canary_rollout_over_forty_documents(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """qa at a 50% canary: both versions run, about half each, and a rerun gives every document the same one."""
    import shutil

    from mapreduce_llm.prompts import set_rollout

    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS, prompts, ignore=shutil.ignore_patterns("history.jsonl"))
    (prompts / "qa" / "labels.yaml").write_text("labels:\n  production: 1.0.0\n")  # free-text qa, whatever ships
    set_rollout(prompts, "qa", "1.1.0", 50)
    src = tmp_path / "qa.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"doc-{i}", "text": f"Item {i} costs {i} euros.", "question": "Price?"}) + "\n"
            for i in range(40)
        )
    )
    spec = JobSpec.model_validate({"input": src, "output": tmp_path / "run1", "prompt": "qa", "prompts_dir": prompts})
    engine = FakeEngine(tokenizer, respond=lambda req: "It costs some euros.")
    first = _run(spec, engine, tokenizer)
    versions = Counter(r["prompt"]["version"] for r in first)
    assert set(versions) == {"1.0.0", "1.1.0"} and 12 <= versions["1.1.0"] <= 28
    summary = json.loads((tmp_path / "run1" / "summary.json").read_text())
    assert summary["documents_by_version"] == {f"qa@{v}": n for v, n in versions.items()}
    rerun = _run(spec.model_copy(update={"output": tmp_path / "run2"}), engine, tokenizer)
    assert [(r["id"], r["prompt"]) for r in rerun] == [(r["id"], r["prompt"]) for r in first]


SECRET = "The quartermaster hid the brass key under the seventh floorboard of the chart room."


def _with_secret(corpus_text: str) -> str:
    """A long document with the secret sentence planted twice, far apart (so two chunks answer)."""
    return corpus_text[:5000] + "\n\n" + SECRET + "\n\n" + corpus_text[5000:10000] + "\n\n" + SECRET + "\n\n"


@contextmanager
def _debug_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log event, debug level included, of the code run inside."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


def test_no_document_text_in_the_logs(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str) -> None:
    """No log event of a free-text or an answer job, debug level included, holds a sentence of the document."""
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS, prompts, ignore=shutil.ignore_patterns("*.calibration.yaml"))
    answer_prompt = select_prompts("qa@2.0.0", prompts).base
    thresholds = {"map_min_confidence": -1.0, "reduce_min_confidence": -0.01}  # every answer is re-retrieved
    write_calibration(answer_prompt, "fake-model", ModelCalibration.model_validate(thresholds))
    src = tmp_path / "in.jsonl"
    question = "Where is the brass key?"
    src.write_text(json.dumps({"id": "s", "text": _with_secret(corpus_text), "question": question}) + "\n")

    def respond(req: EngineRequest) -> str:
        prompt = tokenizer.decode(req.prompt_token_ids)
        if req.stage in ("map", "reretrieve"):
            if "seventh floorboard" in prompt:
                return json.dumps({"quote": SECRET, "answer": "under the seventh floorboard"})
            return json.dumps({"quote": "", "answer": "NOT FOUND"})
        return json.dumps({"quote": "It was in the attic.", "answer": "in the attic"})  # backed by no candidate

    with _debug_logs() as logs:
        for prompt in ("summarize@1.0.0", "qa@2.0.0"):
            spec = _spec(tmp_path, src, prompt=prompt, prompts_dir=prompts, output=tmp_path / prompt)
            engine = FakeEngine(tokenizer, respond=respond if prompt.startswith("qa") else None)
            asyncio.run(make_job(spec, select_prompts(prompt, prompts), tokenizer, engine).run())
    events = {e["event"] for e in logs}
    assert {"document.planned", "document.answers", "document.reduce_unsupported", "document.done"} <= events
    answer = json.loads((tmp_path / "qa@2.0.0" / "results.jsonl").read_text())
    assert answer["output"] == "under the seventh floorboard" and answer["reretrieval"]["triggered"]
    for event in logs:
        assert "seventh floorboard" not in repr(event), event["event"]


def test_the_embedder_comes_through_the_constructor(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str) -> None:
    """Retrieval embeds with the embedder the Job was given (here the test double), never a module global."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "q", "text": corpus_text[:8000], "question": "How do I sort?"}) + "\n")
    spec = _spec(tmp_path, src, prompt="summarize", retrieval={"mode": "top_k", "top_k": 1})
    embedder = FakeEmbedder()
    job = Job(spec, select_prompts("summarize", PROMPTS), tokenizer, FakeEngine(tokenizer), embedder=embedder)
    summary = asyncio.run(job.run())
    assert summary.ok == 1 and embedder.calls and embedder.calls[0][0] == "How do I sort?"
