"""Retrieval: how similar each chunk is to the document's query, which chunks to map, and re-retrieval passages.

The query is the prompt version's ``query`` template filled from the document, else the document's question,
else the task's description. Query and chunks are embedded with all-MiniLM-L6-v2
(:mod:`mapreduce_llm.embeddings`) in one call (:class:`ChunkScores`, kept for the document's drift profile);
vectors are unit length, so a dot product is the cosine similarity. MiniLM
reads the first 256 word pieces of a text, so a long chunk is judged by its beginning — one reason
re-retrieval ranks finer *passages* instead of chunks.

Re-retrieval (FLARE, "active retrieval"): when the final answer is unsure, the question plus the tentative
answer is a better query than the question alone — it contains the words the evidence likely uses. The
document is cut into passages of ``retrieval.passage_tokens``, the passages most similar to that query are
put together (in document order) and the question is asked again of them alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np

from mapreduce_llm.chunking import Chunk, chunk_text
from mapreduce_llm.config import RetrievalConfig
from mapreduce_llm.embeddings import EMBEDDING_DIM, TextEmbedder, Vectors
from mapreduce_llm.planning import DocumentPlan
from mapreduce_llm.prompts import document_values
from mapreduce_llm.results import RetrievalInfo
from mapreduce_llm.tokenization import Tokenizer


def query_of(plan: DocumentPlan) -> tuple[str, Literal["question", "prompt", "task"]]:
    """(query text, kind): the prompt's ``query`` template filled from the document, else the document's
    question, else the task's description."""
    pf, doc = plan.prompt.file, plan.document
    if pf.query is not None:
        return pf.query.format(**document_values(pf, doc.question, doc.metadata)), "prompt"
    if doc.question:
        return doc.question, "question"
    return pf.description, "task"


def similarities(embedder: TextEmbedder, query: str, texts: Sequence[str]) -> list[float]:
    """Cosine similarity of ``query`` to each text (one embedding call)."""
    if not texts:
        return []
    rows = embedder.embed([query, *texts])
    return [round(float(s), 5) for s in rows[1:] @ rows[0]]


@dataclass(frozen=True, slots=True)
class ChunkScores:
    """A document's chunks compared with its query, from one embedding call of (query + chunks).

    The job's retrieval makes them; the document's profile (:mod:`mapreduce_llm.monitoring.profiles`) reuses
    them, vectors included, so a monitored job embeds each chunk once.
    """

    similarities: list[float]
    """Cosine similarity of the query to each chunk, in chunk order (5 decimals)."""
    vectors: Vectors
    """The chunks' unit embeddings, one row per chunk."""


@dataclass(frozen=True, slots=True)
class ScoredPlan(DocumentPlan):
    """A document's plan with its chunks' scores: what the job runs and reports once retrieval has scored it,
    so that the document's profile reuses the scores instead of embedding the chunks again."""

    scores: ChunkScores = field(kw_only=True)

    @classmethod
    def of(cls, plan: DocumentPlan, scores: ChunkScores) -> ScoredPlan:
        """``plan`` with ``scores``."""
        return cls(**{f.name: getattr(plan, f.name) for f in fields(DocumentPlan)}, scores=scores)


def scores_of(plan: DocumentPlan) -> ChunkScores | None:
    """The scores the job's retrieval gave a plan's chunks; None when it did not score them."""
    return plan.scores if isinstance(plan, ScoredPlan) else None


def chunk_scores(embedder: TextEmbedder, plan: DocumentPlan) -> ChunkScores:
    """Similarity of the document's query to each of its chunks, and the chunks' vectors (one embedding call)."""
    text = plan.document.text
    if not plan.chunks:
        return ChunkScores([], np.zeros((0, EMBEDDING_DIM), dtype=np.float32))
    rows = embedder.embed([query_of(plan)[0], *(text[c.start : c.end] for c in plan.chunks)])
    return ChunkScores([round(float(s), 5) for s in rows[1:] @ rows[0]], rows[1:])


def select_chunks(scores: Sequence[float], config: RetrievalConfig) -> list[int]:
    """Indices (in document order) of the chunks to map under ``config``."""
    if config.mode == "all":
        return list(range(len(scores)))
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: config.top_k]
    floor = config.min_similarity
    return sorted(i for i in ranked if floor is None or scores[i] >= floor)


def retrieve_chunks(plan: DocumentPlan, scores: ChunkScores, config: RetrievalConfig) -> RetrievalInfo:
    """What the document's result says about retrieval: its chunks' similarities, and which to map under
    ``config``."""
    return RetrievalInfo(
        query=query_of(plan)[1],
        mode=config.mode,
        similarities=scores.similarities,
        mapped=select_chunks(scores.similarities, config),
    )


@dataclass(frozen=True, slots=True)
class PassageSet:
    """The passages a re-retrieval call is given: their text joined, and where each sits in the document."""

    passages: tuple[Chunk, ...]
    text: str
    """The passages' text joined by ``separator``, in document order: what the model reads."""
    token_ids: tuple[int, ...]
    """The request's ``{chunk}`` slot: the passages' token ids joined by the separator's."""
    offsets: tuple[int, ...]
    """Where each passage starts in ``text``."""

    def to_document(self, start: int, end: int) -> tuple[Chunk, int, int] | None:
        """Map a span of ``text`` to (passage, start, end) in the document; None if it spans a separator."""
        for passage, offset in zip(self.passages, self.offsets, strict=True):
            length = passage.end - passage.start
            if offset <= start and end <= offset + length:
                return passage, passage.start + start - offset, passage.start + end - offset
        return None


def chunk_at(plan: DocumentPlan, position: int) -> str:
    """Id of the chunk holding character ``position`` of the document (passages are cut independently of
    chunks; results name evidence by chunk)."""
    for chunk in plan.chunks:
        if chunk.start <= position < chunk.end:
            return chunk.id
    return plan.chunks[-1].id


def passages_of(plan: DocumentPlan, tokenizer: Tokenizer, passage_tokens: int) -> list[Chunk]:
    """The document cut into passages of at most ``passage_tokens`` (at the best boundaries)."""
    size = max(16, min(passage_tokens, plan.chunk_budget))
    return chunk_text(plan.document.id, plan.document.text, tokenizer, size)


def best_passages(
    scores: Sequence[float],
    passages: Sequence[Chunk],
    document_text: str,
    count: int,
    budget: int,
    separator: str,
    separator_ids: Sequence[int],
) -> PassageSet:
    """The ``count`` most similar passages that fit ``budget`` tokens together, joined in document order."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    chosen: list[Chunk] = []
    used = 0
    for index in order:
        passage = passages[int(index)]
        extra = passage.n_tokens + (len(separator_ids) if chosen else 0)
        if used + extra > budget:
            continue
        chosen.append(passage)
        used += extra
        if len(chosen) == count:
            break
    chosen.sort(key=lambda p: p.start)
    texts: list[str] = []
    offsets: list[int] = []
    ids: list[int] = []
    pos = 0
    for i, passage in enumerate(chosen):
        if i:
            pos += len(separator)
            ids.extend(separator_ids)
        offsets.append(pos)
        piece = document_text[passage.start : passage.end]
        texts.append(piece)
        ids.extend(passage.token_ids)
        pos += len(piece)
    return PassageSet(tuple(chosen), separator.join(texts), tuple(ids), tuple(offsets))
