"""The flow of free-text prompts (``output: text``): map the selected chunks, drop "not found", reduce the rest.

Every selected chunk is mapped at once. Outputs that are empty, or that say the prompt's ``not_found`` reply (or
are less sure than ``not_found_below_mean_logprob``), are dropped; the rest go through the reduce tree
(:mod:`mapreduce_llm.reduce`) to one output. When nothing is left the answer is the ``not_found`` reply, without a
reduce call; a prompt without one fails the document instead (there is nothing to say).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from mapreduce_llm.common import ReduceStage
from mapreduce_llm.errors import DocumentError
from mapreduce_llm.flows.base import DocumentRun, Outcome
from mapreduce_llm.prompts import PromptFile
from mapreduce_llm.reduce import Partial, SourceSpan, reduce_tree
from mapreduce_llm.results import Provenance


async def text_flow(run: DocumentRun) -> Outcome:
    """Map the selected chunks, drop "not found" outputs, reduce the rest to one output."""
    plan, pf, doc = run.plan, run.prompt.file, run.document
    started = time.perf_counter()

    async def map_chunk(index: int) -> Partial:
        chunk = plan.chunks[index]
        out = await run.call("map", chunk.token_ids)
        return run.partial(out, (SourceSpan(index, chunk.start, chunk.end),))

    partials = list(await asyncio.gather(*(map_chunk(i) for i in run.selected)))
    map_s = time.perf_counter() - started
    kept = [p for p in partials if p.text and not says_not_found(pf, p)]

    async def reduce_call(stage: ReduceStage, slot: list[int], group: Sequence[Partial], level: int) -> Partial:
        out = await run.call(stage, slot)
        sources = tuple(s for p in group for s in p.sources)
        run.log.debug("document.reduce_call", stage=stage, level=level, inputs=len(group))
        return run.partial(out, sources)

    not_found = None if pf.not_found is None else not kept
    if not kept:
        if pf.not_found is None:
            raise DocumentError(
                f"{doc.source}: {_why_empty(run, len(partials))}", document_id=doc.id, code="empty_output"
            )
        final, levels = Partial(pf.not_found, (), ()), 0
    elif len(run.selected) < len(plan.chunks) and len(kept) == 1:
        final, levels = kept[0], 0
    else:
        final, levels = await reduce_tree(kept, plan, run.tokenizer, reduce_call, run.spec.reduce.max_levels)
    spans = sorted({(s.chunk, s.start, s.end) for s in final.sources})
    return Outcome(
        output=final.text,
        levels=levels,
        not_found=not_found,
        mean_logprob=final.mean_logprob,
        provenance=[Provenance(chunk_id=f"{doc.id}#{c}", start=s, end=e) for c, s, e in spans],
        map_s=map_s,
    )


def says_not_found(pf: PromptFile, partial: Partial) -> bool:
    """True when a map output is the prompt's "not found" reply, or less sure than its
    ``not_found_below_mean_logprob``."""
    if pf.not_found is None:
        return False
    if partial.text.upper().startswith(pf.not_found.upper()):
        return True
    threshold = pf.not_found_below_mean_logprob
    return threshold is not None and partial.mean_logprob is not None and partial.mean_logprob < threshold


def _why_empty(run: DocumentRun, mapped: int) -> str:
    """Why a prompt without a "not found" reply has nothing to reduce, and what to do."""
    retrieval = run.spec.retrieval
    if not run.selected:
        return (
            f"no chunk was selected by retrieval (mode {retrieval.mode}, min_similarity "
            f"{retrieval.min_similarity}); lower retrieval.min_similarity or use mode all"
        )
    return f"the model returned empty outputs for all {mapped} chunks; check the prompt or raise reserved_output_tokens"
