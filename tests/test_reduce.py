"""The reduce tree: packs partials into calls that fit, re-splits oversized ones, always ends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from mapreduce_llm.config import ChunkingConfig
from mapreduce_llm.documents import Document
from mapreduce_llm.planning import plan_document
from mapreduce_llm.prompts import resolve_prompt
from mapreduce_llm.reduce import Partial, ReduceStage, SourceSpan, pack, reduce_tree, resplit
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS


def _p(n: int, chunk: int = 0) -> Partial:
    return Partial("x" * n, tuple(range(n)), (SourceSpan(chunk, chunk, chunk + 1),))


def test_pack_keeps_order_and_fits() -> None:
    """Groups are consecutive, each within capacity including separators."""
    parts = [_p(n, i) for i, n in enumerate([30, 30, 30, 50, 10, 90])]
    groups = pack(parts, capacity=100, separator_len=2)
    assert [p for g in groups for p in g] == parts
    for g in groups:
        assert sum(len(p.token_ids) for p in g) + 2 * (len(g) - 1) <= 100


def test_pack_refuses_oversized_partials() -> None:
    """An oversized partial must be re-split before packing."""
    with pytest.raises(ValueError, match="resplit"):
        pack([_p(101)], capacity=100, separator_len=0)


def test_resplit_cuts_at_boundaries_and_keeps_everything(tokenizer: HFTokenizer) -> None:
    """A partial too big for any call is cut into fitting pieces; no text is lost."""
    text = " ".join(f"Fact {i} is stated here." for i in range(300))
    big = Partial(text, tuple(tokenizer.encode_data(text)), (SourceSpan(3, 0, 10),))
    pieces = resplit(big, 100, tokenizer)
    assert len(pieces) > 1 and all(len(p.token_ids) <= 100 for p in pieces)
    assert "".join(p.text for p in pieces) == text
    assert all(p.sources == big.sources for p in pieces)


@pytest.mark.parametrize("n_chunks", [2, 5, 40, 300])
def test_reduce_tree_always_ends_within_budget(tokenizer: HFTokenizer, n_chunks: int) -> None:
    """Worst case (every output uses all reserved tokens): levels stay bounded, every call fits, nothing dropped."""
    prompt = resolve_prompt("summarize", PROMPTS)
    doc = Document(id="d", text="word " * 32 * n_chunks, source="mem")
    plan = plan_document(doc, prompt, tokenizer, 1024, ChunkingConfig(max_chunk_tokens=32), 200)
    assert len(plan.chunks) >= n_chunks * 0.9
    reserve = plan.reserved_output_tokens
    calls: list[tuple[str, int, int]] = []

    async def call(stage: ReduceStage, slot: list[int], group: Sequence[Partial], level: int) -> Partial:
        template = plan.collapse_template if stage == "collapse" else plan.reduce_template
        assert len(template.request_ids(slot)) + reserve <= plan.max_model_len
        calls.append((stage, level, len(group)))
        return Partial("y" * reserve, tuple(range(reserve)), tuple(s for p in group for s in p.sources))

    leaves = [
        Partial("y" * reserve, tuple(range(reserve)), (SourceSpan(i, i, i + 1),)) for i in range(len(plan.chunks))
    ]
    final, levels = asyncio.run(reduce_tree(leaves, plan, tokenizer, call, max_levels=12))
    assert sorted(s.chunk for s in final.sources) == list(range(len(plan.chunks)))
    assert calls[-1][0] == "reduce" and [c[0] for c in calls].count("reduce") == 1
    assert levels == max(c[1] for c in calls)
    assert levels <= (len(plan.chunks) - 1).bit_length() + 1


def test_single_chunk_needs_no_reduce(tokenizer: HFTokenizer) -> None:
    """A document that fits one chunk: its map output is final, 0 levels."""
    prompt = resolve_prompt("summarize", PROMPTS)
    plan = plan_document(Document(id="d", text="short", source="m"), prompt, tokenizer, 2048, ChunkingConfig())

    async def never(*_: object) -> Partial:
        raise AssertionError("no reduce call expected")

    final, levels = asyncio.run(reduce_tree([_p(5)], plan, tokenizer, never, max_levels=3))
    assert levels == 0 and final.text == "xxxxx"


def test_max_levels_fails_the_document(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """Hitting reduce.max_levels is a per-document error naming the setting."""
    from mapreduce_llm.errors import DocumentError

    prompt = resolve_prompt("summarize", PROMPTS)
    doc = Document(id="d", text="word " * 3000, source="mem")
    plan = plan_document(doc, prompt, tokenizer, 1024, ChunkingConfig(max_chunk_tokens=40), 200)

    async def call(stage: ReduceStage, slot: list[int], group: Sequence[Partial], level: int) -> Partial:
        return Partial("y" * 200, tuple(range(200)), ())

    leaves = [Partial("y" * 200, tuple(range(200)), ()) for _ in plan.chunks]
    with pytest.raises(DocumentError, match=r"reduce.max_levels=1"):
        asyncio.run(reduce_tree(leaves, plan, tokenizer, call, max_levels=1))


def test_text_the_tokenizer_drops_is_a_document_error(tokenizer: HFTokenizer) -> None:
    """A document whose characters the tokenizer all drops is refused with its own code."""
    from mapreduce_llm.errors import DocumentError

    prompt = resolve_prompt("summarize", PROMPTS)
    with pytest.raises(DocumentError, match="reads no tokens") as info:
        plan_document(Document(id="c", text="\x06\x06", source="m"), prompt, tokenizer, 2048, ChunkingConfig())
    assert info.value.code == "no_tokens"
