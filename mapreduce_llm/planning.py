"""Planning: turn one document into chunks and rendered stage templates that fit the context.

For every stage the budget is ``max_model_len - template tokens - reserved output tokens``, counted in the
served model's tokens with the document's own variables (its question) rendered in. Planning needs only the
tokenizer: ``mapreduce-llm plan`` runs it without an engine, printing a :class:`PlanRow` per document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from mapreduce_llm.chunking import Chunk, chunk_text
from mapreduce_llm.config import ChunkingConfig
from mapreduce_llm.documents import Document
from mapreduce_llm.errors import DocumentError
from mapreduce_llm.prompts import PromptRef, StageTemplate, document_values, render_stage
from mapreduce_llm.tokenization import Tokenizer

MIN_CHUNK_TOKENS = 32
"""A map prompt leaving fewer tokens than this for the chunk is refused."""


@dataclass(frozen=True, slots=True)
class DocumentPlan:
    """Everything needed to run one document, with exact token counts."""

    document: Document
    prompt: PromptRef
    chunks: list[Chunk]
    map_template: StageTemplate
    collapse_template: StageTemplate
    reduce_template: StageTemplate
    max_model_len: int
    reserved_output_tokens: int
    separator_ids: tuple[int, ...]

    @property
    def chunk_budget(self) -> int:
        """Largest chunk the map prompt has room for."""
        return self.max_model_len - self.map_template.overhead - self.reserved_output_tokens

    def capacity(self, stage: str) -> int:
        """Tokens available for ``{partials}`` in a collapse or reduce call."""
        template = self.collapse_template if stage == "collapse" else self.reduce_template
        return self.max_model_len - template.overhead - self.reserved_output_tokens

    @property
    def map_prompt_tokens(self) -> list[int]:
        """Exact prompt size of every map request."""
        return [self.map_template.overhead + c.n_tokens for c in self.chunks]


def plan_document(
    document: Document,
    prompt: PromptRef,
    tokenizer: Tokenizer,
    max_model_len: int,
    chunking: ChunkingConfig,
    reserved_output_tokens: int | None = None,
) -> DocumentPlan:
    """Chunk a document and render its stage templates; raises DocumentError when it cannot fit."""
    pf = prompt.file
    reserve = reserved_output_tokens or pf.reserved_output_tokens
    try:
        values = document_values(pf, document.question, document.metadata)
    except KeyError as missing:
        field = missing.args[0]
        raise DocumentError(
            f"{document.source}: prompt {prompt.ref} needs {field!r} but the document has none; "
            f'add a non-empty "{field}" field to it',
            document_id=document.id,
            code="missing_variable",
        ) from None
    templates = {stage: render_stage(pf, stage, values, tokenizer) for stage in ("map", "collapse", "reduce")}
    separator = tuple(tokenizer.encode_data(pf.partial_separator))
    plan_budget = max_model_len - templates["map"].overhead - reserve
    if plan_budget < MIN_CHUNK_TOKENS:
        raise DocumentError(
            f"{document.source}: the map prompt of {prompt.ref} with this document's variables takes "
            f"{templates['map'].overhead} tokens; with {reserve} reserved for output only {plan_budget} of "
            f"max_model_len {max_model_len} remain for text (need {MIN_CHUNK_TOKENS}); shorten the "
            "question, lower reserved_output_tokens or raise engine.max_model_len",
            document_id=document.id,
            code="prompt_too_long",
        )
    for stage in ("collapse", "reduce"):
        room = max_model_len - templates[stage].overhead - reserve
        # Two partial outputs (each at most `reserve` tokens) must fit, or reducing could not make progress.
        needed = 2 * reserve + len(separator)
        if room < needed:
            raise DocumentError(
                f"{document.source}: a {stage} call of {prompt.ref} has room for {room} tokens of partial "
                f"outputs but needs {needed} (two outputs of up to {reserve} tokens); lower "
                "reserved_output_tokens or raise engine.max_model_len",
                document_id=document.id,
                code="reduce_budget",
            )
    max_tokens = min(plan_budget, chunking.max_chunk_tokens or plan_budget)
    chunks = chunk_text(document.id, document.text, tokenizer, max_tokens, chunking.min_chunk_fraction)
    if not chunks:
        raise DocumentError(
            f"{document.source}: the model's tokenizer reads no tokens in this text (its {len(document.text)} "
            "characters are all ones it drops, such as control characters); check the document's encoding",
            document_id=document.id,
            code="no_tokens",
        )
    return DocumentPlan(
        document=document,
        prompt=prompt,
        chunks=chunks,
        map_template=templates["map"],
        collapse_template=templates["collapse"],
        reduce_template=templates["reduce"],
        max_model_len=max_model_len,
        reserved_output_tokens=reserve,
        separator_ids=separator,
    )


@dataclass(frozen=True, slots=True)
class PlanRow:
    """One document's row of ``mapreduce-llm plan``: its chunks and token counts, or why it cannot run."""

    item: DocumentPlan | DocumentError

    TABLE_HEADER: ClassVar[str] = (
        f"{'document':40} {'version':>8} {'tokens':>8} {'budget':>7} {'chunks':>6} {'max prompt':>10}  note"
    )
    """The column titles of :meth:`table_line`."""

    def as_json(self) -> dict[str, Any]:
        """The row as ``plan --json`` prints it (status ``ok`` with every chunk, or ``error`` with its code)."""
        item = self.item
        if isinstance(item, DocumentError):
            return {"id": item.document_id, "status": "error", "code": item.code, "error": str(item)}
        return {
            "id": item.document.id,
            "status": "ok",
            "prompt": item.prompt.ref,
            "tokens": sum(c.n_tokens for c in item.chunks),
            "chunk_budget": item.chunk_budget,
            "chunks": [
                {"id": c.id, "start": c.start, "end": c.end, "tokens": c.n_tokens, "boundary": c.boundary.name.lower()}
                for c in item.chunks
            ],
            "map_requests": len(item.chunks),
            "max_prompt_tokens": max(item.map_prompt_tokens),
            "reduce_capacity": item.capacity("reduce"),
        }

    def table_line(self) -> str:
        """The row under :attr:`TABLE_HEADER` (the document id cut to 40 characters)."""
        item = self.item
        if isinstance(item, DocumentError):
            dashes = f"{'-':>8} {'-':>8} {'-':>7} {'-':>6} {'-':>10}"
            return f"{item.document_id[:40]:40} {dashes}  error {item.code}: {item}"
        tokens = sum(c.n_tokens for c in item.chunks)
        return (
            f"{item.document.id[:40]:40} {item.prompt.version:>8} {tokens:>8} {item.chunk_budget:>7} "
            f"{len(item.chunks):>6} {max(item.map_prompt_tokens):>10}"
        )
