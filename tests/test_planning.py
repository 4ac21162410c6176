"""Planning (planning.py): chunks and templates that fit the context, budget errors, and the rows of `plan`."""

from __future__ import annotations

import json

import pytest

from mapreduce_llm.chunking import Boundary
from mapreduce_llm.config import ChunkingConfig
from mapreduce_llm.documents import Document
from mapreduce_llm.errors import DocumentError
from mapreduce_llm.planning import PlanRow, plan_document
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS


def _doc(text: str, question: str | None = None) -> Document:
    return Document(id="doc-1", text=text, source="in.jsonl:1", question=question)


def test_every_map_prompt_fits_the_context(tokenizer: HFTokenizer, corpus_text: str) -> None:
    """Chunks stay within the map budget, so every map prompt plus reserved output fits max_model_len."""
    prompt = select_prompts("summarize@1.0.0", PROMPTS).base
    plan = plan_document(_doc(corpus_text[:20_000]), prompt, tokenizer, 1024, ChunkingConfig())
    assert len(plan.chunks) > 1 and all(c.n_tokens <= plan.chunk_budget for c in plan.chunks)
    assert max(plan.map_prompt_tokens) + plan.reserved_output_tokens <= 1024


@pytest.mark.parametrize(("max_model_len", "code"), [(200, "prompt_too_long"), (400, "reduce_budget")])
def test_a_context_too_small_is_a_document_error(tokenizer: HFTokenizer, max_model_len: int, code: str) -> None:
    """No room for text in a map call, or for two partial outputs in a reduce call: an error saying what to change."""
    prompt = select_prompts("summarize@1.0.0", PROMPTS).base
    with pytest.raises(DocumentError, match=r"raise engine\.max_model_len") as caught:
        plan_document(_doc("Some text."), prompt, tokenizer, max_model_len, ChunkingConfig())
    assert caught.value.code == code and caught.value.document_id == "doc-1"


def test_plan_row_json_lists_chunks_and_prompt_sizes(tokenizer: HFTokenizer, corpus_text: str) -> None:
    """An ok row has the document's tokens, every chunk with its span and boundary, and the largest map prompt."""
    prompt = select_prompts("summarize@1.0.0", PROMPTS).base
    plan = plan_document(_doc(corpus_text[:8_000]), prompt, tokenizer, 1024, ChunkingConfig())
    row = PlanRow(plan).as_json()
    assert list(row) == [
        "id",
        "status",
        "prompt",
        "tokens",
        "chunk_budget",
        "chunks",
        "map_requests",
        "max_prompt_tokens",
        "reduce_capacity",
    ]
    assert (row["id"], row["status"], row["prompt"]) == ("doc-1", "ok", "summarize@1.0.0")
    assert row["tokens"] == sum(c["tokens"] for c in row["chunks"]) and row["map_requests"] == len(plan.chunks)
    assert row["max_prompt_tokens"] == max(plan.map_prompt_tokens) and row["reduce_capacity"] == plan.capacity("reduce")
    assert {c["boundary"] for c in row["chunks"]} <= {b.name.lower() for b in Boundary}
    json.dumps(row)


def test_plan_row_of_an_error_names_its_code(tokenizer: HFTokenizer) -> None:
    """An error row carries the document id, status error, the code and the message, in JSON and in the table."""
    err = DocumentError("in.jsonl:2 (id 'b'): text is empty", document_id="b", code="empty")
    row = PlanRow(err)
    assert row.as_json() == {"id": "b", "status": "error", "code": "empty", "error": str(err)}
    assert row.table_line().startswith("b ") and row.table_line().endswith(f"error empty: {err}")


def test_plan_row_table_line_lines_up_with_the_header(tokenizer: HFTokenizer) -> None:
    """The table line has the version, tokens, budget, chunks and max prompt under the header's columns."""
    prompt = select_prompts("summarize@1.0.0", PROMPTS).base
    plan = plan_document(_doc("Short one."), prompt, tokenizer, 1024, ChunkingConfig())
    line = PlanRow(plan).table_line()
    assert line.split() == ["doc-1", "1.0.0", "3", str(plan.chunk_budget), "1", str(max(plan.map_prompt_tokens))]
    assert len(line) == PlanRow.TABLE_HEADER.index("  note")
