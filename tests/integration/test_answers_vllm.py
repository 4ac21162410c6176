"""Structured answers on the real stack: vLLM structured outputs and token logprobs, all-MiniLM-L6-v2 retrieval."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from mapreduce_llm.answers import answer_schema, parse_record, span_confidence, value_span
from mapreduce_llm.config import ChunkingConfig, JobSpec
from mapreduce_llm.documents import Document
from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.engines.vllm_ray import VLLMRayEngine
from mapreduce_llm.model_store import ensure_embedded_model
from mapreduce_llm.planning import plan_document
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.results import DocumentResult
from mapreduce_llm.runner import run_job
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import CORPUS, PROMPTS
from tests.integration.conftest import TEST_ENGINE

FACT = "The access code for the Halvorsen archive is 4417."
QUESTION = "What is the access code for the Halvorsen archive?"


def test_schema_constrained_output_parses_and_reports_token_logprobs(engine: VLLMRayEngine) -> None:
    tokenizer = HFTokenizer(ensure_embedded_model())
    messages = [{"role": "user", "content": f"Text: {FACT}\nQuestion: {QUESTION}\nReply in JSON."}]
    ids = tokenizer.encode_template(tokenizer.render_chat(messages))
    request = EngineRequest(
        request_id="schema-1",
        prompt_token_ids=ids,
        max_tokens=96,
        stage="map",
        json_schema=answer_schema(120, 40),
        timeout_s=300,
    )
    out = asyncio.run(engine.generate(request))
    record = parse_record(out.text)
    assert not isinstance(record, str), record  # the schema made it a valid record
    assert len(record.answer) <= 40 and len(record.quote) <= 120
    assert out.tokens is not None and out.token_logprobs is not None
    # The tokens spell the text (plus the stop token, which the text leaves out).
    assert "".join(out.tokens).startswith(out.text) and len(out.token_logprobs) == out.completion_tokens
    span = value_span(out.text, "answer")
    assert span is not None and span_confidence(out, *span) != out.mean_logprob  # the answer's own tokens
    assert all(lp <= 0 or math.isclose(lp, 0, abs_tol=1e-6) for lp in out.token_logprobs)


def test_qa_job_records_similarity_answers_and_verbatim_evidence(engine: VLLMRayEngine, tmp_path: Path) -> None:
    """A real qa@2.0.0 job: every chunk's similarity is recorded, the chunk holding the planted fact is the
    most similar (real all-MiniLM-L6-v2), and whatever evidence the answer cites is verbatim document text."""
    text = (CORPUS / "python-howtos.md").read_text(encoding="utf-8")[:9_000]
    at = text.find("\n\n", 5_000)
    text = text[:at] + "\n\n" + FACT + text[at:]
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "needle", "text": text, "question": QUESTION}) + "\n")
    spec = JobSpec.model_validate(
        {
            "input": source,
            "output": tmp_path / "out",
            "prompt": "qa@2.0.0",
            "prompts_dir": PROMPTS,
            "engine": TEST_ENGINE.model_dump(),
        }
    )
    summary = run_job(spec, engine=engine)
    assert summary.ok == 1
    [result] = [
        DocumentResult.model_validate_json(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    ]
    assert result.retrieval is not None and len(result.retrieval.similarities) == result.chunks > 1
    plan = plan_document(
        Document(id="needle", text=text, question=QUESTION, source="t"),
        select_prompts("qa@2.0.0", PROMPTS).base,
        HFTokenizer(ensure_embedded_model()),
        TEST_ENGINE.max_model_len,
        ChunkingConfig(),
    )
    [holding] = [c.index for c in plan.chunks if c.start <= at + 2 < c.end]
    scores = result.retrieval.similarities
    assert max(range(len(scores)), key=scores.__getitem__) == holding
    assert len(result.answers) == result.chunks
    assert all(
        a.status in {"kept", "not_found", "unsupported", "low_confidence", "off_topic", "parse_failure"}
        for a in result.answers
    )
    for evidence in result.provenance:
        assert text[evidence.start : evidence.end] == evidence.quote
    assert result.reretrieval is not None  # whether it ran, and why, is always recorded
    if result.not_found:
        assert result.output == "NOT FOUND" and result.provenance == []
    else:
        assert result.provenance and result.confidence is not None
