"""Where the reduce tree is built: merge partial outputs level by level until one call fits.

At each level the partial outputs either all fit in one ``reduce`` call — then that call writes the final
output — or they are packed, in document order, into ``collapse`` calls that each fit, and the collapse
outputs become the next level's partials. A partial too large for any call is re-split at its best
boundaries (it is never dropped and never sent over budget).

Every collapse output is at most ``reserved_output_tokens`` long and planning checks that two such outputs
fit one call, so each level at least halves the number of partials: the tree has at most
``ceil(log2(chunks)) + 1`` levels, and ``reduce.max_levels`` bounds it regardless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mapreduce_llm.chunking import chunk_text
from mapreduce_llm.common import ReduceStage as ReduceStage  # re-exported: callers import it from here
from mapreduce_llm.errors import DocumentError
from mapreduce_llm.planning import DocumentPlan
from mapreduce_llm.tokenization import Tokenizer


@dataclass(frozen=True, slots=True)
class SourceSpan:
    """A piece of the document that fed an output: chunk index and its character span."""

    chunk: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Partial:
    """An intermediate output (of a map or collapse call) on its way to the final reduce."""

    text: str
    token_ids: tuple[int, ...]
    """The text encoded as data (special tokens split): what the next call receives."""
    sources: tuple[SourceSpan, ...]
    mean_logprob: float | None = None


CallFn = Callable[[ReduceStage, list[int], Sequence[Partial], int], Awaitable[Partial]]
"""Runs one collapse/reduce call: (stage, the ``{partials}`` token ids, the partials, level) → output."""


def joined_ids(partials: Sequence[Partial], separator: Sequence[int]) -> list[int]:
    """The ``{partials}`` slot: partial outputs joined by the separator."""
    ids: list[int] = []
    for i, p in enumerate(partials):
        if i:
            ids.extend(separator)
        ids.extend(p.token_ids)
    return ids


def joined_size(partials: Sequence[Partial], separator_len: int) -> int:
    """Token count of :func:`joined_ids` without building it."""
    return sum(len(p.token_ids) for p in partials) + separator_len * max(0, len(partials) - 1)


def resplit(partial: Partial, capacity: int, tokenizer: Tokenizer) -> list[Partial]:
    """Cut a partial larger than ``capacity`` into pieces that fit, at its best boundaries."""
    if len(partial.token_ids) <= capacity:
        return [partial]
    pieces = chunk_text("partial", partial.text, tokenizer, capacity)
    return [Partial(partial.text[c.start : c.end], c.token_ids, partial.sources, partial.mean_logprob) for c in pieces]


def pack(partials: Sequence[Partial], capacity: int, separator_len: int) -> list[list[Partial]]:
    """Group partials in order into groups whose joined size fits ``capacity`` (each partial must fit alone)."""
    groups: list[list[Partial]] = []
    current: list[Partial] = []
    size = 0
    for p in partials:
        n = len(p.token_ids)
        if n > capacity:
            raise ValueError(f"partial of {n} tokens exceeds capacity {capacity}; resplit it first")
        extra = n + (separator_len if current else 0)
        if current and size + extra > capacity:
            groups.append(current)
            current, size = [], 0
            extra = n
        current.append(p)
        size += extra
    if current:
        groups.append(current)
    return groups


async def reduce_tree(
    partials: Sequence[Partial],
    plan: DocumentPlan,
    tokenizer: Tokenizer,
    call: CallFn,
    max_levels: int,
) -> tuple[Partial, int]:
    """Reduce partial outputs to one final output; returns it and the number of levels used.

    A single partial from a single-chunk document is already final (0 levels).
    """
    if not partials:
        raise ValueError("reduce_tree needs at least one partial")
    if len(partials) == 1 and len(plan.chunks) == 1:
        return partials[0], 0
    separator = list(plan.separator_ids)
    items = list(partials)
    level = 0
    while True:
        level += 1
        if joined_size(items, len(separator)) <= plan.capacity("reduce"):
            final = await call("reduce", joined_ids(items, separator), items, level)
            return final, level
        if level >= max_levels:
            raise DocumentError(
                f"{plan.document.source}: {len(items)} partial outputs still do not fit one reduce call after "
                f"{level - 1} collapse levels (reduce.max_levels={max_levels}); raise reduce.max_levels, lower "
                "reserved_output_tokens or raise engine.max_model_len",
                document_id=plan.document.id,
                code="reduce_levels",
            )
        capacity = plan.capacity("collapse")
        fitted = [piece for p in items for piece in resplit(p, capacity, tokenizer)]
        groups = pack(fitted, capacity, len(separator))
        items = list(await asyncio.gather(*(call("collapse", joined_ids(g, separator), g, level) for g in groups)))
