"""The free-text flow (flows/text.py) on one planned document, with an engine double behind a real EngineClient."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from mapreduce_llm.config import JobSpec
from mapreduce_llm.documents import Document
from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.engines.client import EngineClient
from mapreduce_llm.errors import DocumentError
from mapreduce_llm.flows import DocumentRun, Outcome, Params, flow_for
from mapreduce_llm.flows.answer import answer_flow
from mapreduce_llm.flows.text import says_not_found, text_flow
from mapreduce_llm.planning import plan_document
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.reduce import Partial
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fake_embeddings import FakeEmbedder
from tests.fakes import FakeEngine


def _run(
    tmp_path: Path,
    tokenizer: HFTokenizer,
    text: str,
    respond: Callable[[EngineRequest], str],
    prompt: str = "qa@1.0.0",
    selected: list[int] | None = None,
    **spec: object,
) -> tuple[DocumentRun, FakeEngine]:
    """A DocumentRun of ``text`` under ``prompt`` (max_model_len 1024), every chunk selected unless told."""
    job_spec = JobSpec.model_validate(
        {"input": tmp_path, "output": tmp_path / "out", "engine": {"max_model_len": 1024}, **spec}
    )
    ref = select_prompts(prompt, PROMPTS).base
    params = Params.of(ref, job_spec.sampling)
    doc = Document(id="d", text=text, question="Which module logs?", source="d.txt")
    plan = plan_document(doc, ref, tokenizer, 1024, job_spec.chunking, params.reserve)
    engine = FakeEngine(tokenizer, max_model_len=1024, respond=respond)
    run = DocumentRun(
        plan=plan,
        selected=list(range(len(plan.chunks))) if selected is None else selected,
        params=params,
        spec=job_spec,
        calibration=None,
        model="fake-model",
        tokenizer=tokenizer,
        embedder=FakeEmbedder(),
        client=EngineClient(engine, job_spec.engine, job_id="t"),
        log=structlog.get_logger(),
    )
    return run, engine


def _flow(run: DocumentRun) -> Outcome:
    return asyncio.run(text_flow(run))


def test_every_chunk_is_mapped_then_reduced_once(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str) -> None:
    """Each selected chunk gets one map call; the outputs fit one reduce call, whose output is final."""
    run, engine = _run(tmp_path, tokenizer, corpus_text[:12_000], lambda r: f"Output of a {r.stage} call.")
    outcome = _flow(run)
    chunks = len(run.plan.chunks)
    assert engine.stages().count("map") == chunks > 1 and engine.stages().count("reduce") == 1
    assert outcome.output == "Output of a reduce call." and outcome.levels == 1 and outcome.not_found is False
    assert [p.chunk_id for p in outcome.provenance] == [f"d#{i}" for i in range(chunks)]
    assert run.accounting.usage().requests == {"map": chunks, "reduce": 1}
    assert outcome.answer is None


def test_not_found_outputs_are_dropped_before_reducing(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """Map outputs saying the prompt's "not found" reply never reach the reducer; provenance names the others."""
    marker = tokenizer.encode_data("logging")

    def respond(req: EngineRequest) -> str:
        ids = req.prompt_token_ids
        if req.stage == "map":
            has = any(ids[i : i + len(marker)] == marker for i in range(len(ids)))
            return "It mentions logging." if has else "NOT FOUND"
        return "Final answer."

    run, engine = _run(tmp_path, tokenizer, corpus_text[:12_000], respond)
    outcome = _flow(run)
    reduce = next(r for r in engine.requests if r.stage == "reduce")
    assert "NOT FOUND" not in tokenizer.decode(reduce.prompt_token_ids)
    assert 0 < len(outcome.provenance) < len(run.plan.chunks) and outcome.not_found is False
    for p in outcome.provenance:
        assert "logging" in run.document.text[p.start : p.end]


def test_nothing_found_is_the_not_found_reply_without_a_reduce(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """When every map output says "not found", the output is that reply, with no reduce call and no provenance."""
    run, engine = _run(tmp_path, tokenizer, corpus_text[:12_000], lambda _r: "NOT FOUND")
    outcome = _flow(run)
    assert (outcome.output, outcome.levels, outcome.not_found, outcome.provenance) == ("NOT FOUND", 0, True, [])
    assert "reduce" not in engine.stages()


def test_a_single_retrieved_answer_is_final(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str) -> None:
    """When retrieval mapped only some chunks and one answered, its map output is final (no reduce call)."""
    run, engine = _run(tmp_path, tokenizer, corpus_text[:12_000], lambda _r: "The answer.", selected=[2])
    outcome = _flow(run)
    assert outcome.output == "The answer." and outcome.levels == 0 and engine.stages() == ["map"]
    [span] = outcome.provenance
    chunk = run.plan.chunks[2]
    assert (span.chunk_id, span.start, span.end) == ("d#2", chunk.start, chunk.end)


def test_empty_outputs_fail_a_prompt_without_a_not_found_reply(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """summarize has no "not found" reply: all-empty outputs, or no chunk retrieved, are the document's error."""
    run, _ = _run(tmp_path, tokenizer, corpus_text[:6000], lambda _r: "", prompt="summarize@1.0.0")
    with pytest.raises(DocumentError, match="empty outputs for all") as empty:
        _flow(run)
    assert empty.value.code == "empty_output"
    run, _ = _run(tmp_path, tokenizer, corpus_text[:6000], lambda _r: "x", prompt="summarize@1.0.0", selected=[])
    with pytest.raises(DocumentError, match="no chunk was selected by retrieval"):
        _flow(run)


def test_not_found_also_means_unsure(tmp_path: Path) -> None:
    """An output under not_found_below_mean_logprob counts as "not found", as does one starting with the reply."""
    qa = select_prompts("qa@1.0.0", PROMPTS).base.file
    strict = qa.model_copy(update={"not_found_below_mean_logprob": -1.0})
    assert says_not_found(qa, Partial("not found here", (), ()))
    assert not says_not_found(qa, Partial("Paris", (), (), mean_logprob=-3.0))
    assert says_not_found(strict, Partial("Paris", (), (), mean_logprob=-3.0))
    assert not says_not_found(strict, Partial("Paris", (), (), mean_logprob=-0.5))
    summarize = select_prompts("summarize@1.0.0", PROMPTS).base.file
    assert not says_not_found(summarize, Partial("NOT FOUND", (), ()))


def test_the_output_kind_picks_the_flow() -> None:
    """flow_for dispatches on the prompt file's output: text → text_flow, answer → answer_flow."""
    assert flow_for(select_prompts("summarize@1.0.0", PROMPTS).base.file) is text_flow
    assert flow_for(select_prompts("qa@2.0.0", PROMPTS).base.file) is answer_flow
