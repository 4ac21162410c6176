"""The job pipeline with an engine double: bad input never kills the job, budgets always hold, reruns resume."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapreduce_llm.config import JobSpec
from mapreduce_llm.documents import Document
from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.errors import DocumentError
from mapreduce_llm.pipeline import Job
from mapreduce_llm.prompts import Message, PromptFile, PromptRef, select_prompts
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fakes import FakeEngine


def _spec(tmp_path: Path, source: Path, prompt: str = "summarize", **extra: object) -> JobSpec:
    return JobSpec.model_validate(
        {"input": source, "output": tmp_path / "out", "prompt": prompt, "prompts_dir": PROMPTS, **extra}
    )


def _run(spec: JobSpec, engine: FakeEngine, tokenizer: HFTokenizer) -> list[dict[str, object]]:
    asyncio.run(Job(spec, select_prompts(spec.prompt, spec.prompts_dir), tokenizer, engine).run())
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
    assert long["prompt"] == {"name": "summarize", "version": "1.0.0"} and long["model"] == "fake-model"
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
    results = _run(_spec(tmp_path, src, prompt="qa"), engine, tokenizer)
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
    (result,) = _run(_spec(tmp_path, src, prompt="qa"), engine, tokenizer)
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
    job = Job(spec, prompt, tokenizer, engine)
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
    shutil.copytree(PROMPTS, prompts)
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
