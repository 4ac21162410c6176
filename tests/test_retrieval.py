"""Retrieval (retrieval.py): the query, chunk scores from one embedding call, the chunks to map, scored plans."""

from __future__ import annotations

from dataclasses import fields

import pytest

from mapreduce_llm.config import ChunkingConfig, RetrievalConfig
from mapreduce_llm.documents import Document
from mapreduce_llm.planning import DocumentPlan, plan_document
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.retrieval import ScoredPlan, chunk_scores, query_of, retrieve_chunks, scores_of, select_chunks
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fake_embeddings import FakeEmbedder


@pytest.fixture
def plan(tokenizer: HFTokenizer, corpus_text: str) -> DocumentPlan:
    """A several-chunk document with a question (qa@1.0.0)."""
    prompt = select_prompts("qa@1.0.0", PROMPTS).base
    doc = Document(id="d", text=corpus_text[:8000], source="d", question="How do I sort a list?")
    return plan_document(doc, prompt, tokenizer, 1024, ChunkingConfig(), 64)


def test_the_query_is_the_question_else_the_task(plan: DocumentPlan, tokenizer: HFTokenizer) -> None:
    """A document's question is its query; without one, the task's description is."""
    assert query_of(plan) == ("How do I sort a list?", "question")
    summarize = select_prompts("summarize@1.0.0", PROMPTS).base
    bare = plan_document(
        Document(id="b", text="Ray runs code.", source="b"), summarize, tokenizer, 1024, ChunkingConfig()
    )
    assert query_of(bare) == (summarize.file.description, "task")


def test_chunk_scores_come_from_one_embedding_call(plan: DocumentPlan) -> None:
    """The query and every chunk are embedded in one call: a similarity and a unit vector per chunk."""
    embedder = FakeEmbedder()
    scores = chunk_scores(embedder, plan)
    (call,) = embedder.calls
    assert call[0] == "How do I sort a list?" and len(call) == len(plan.chunks) + 1
    assert len(scores.similarities) == scores.vectors.shape[0] == len(plan.chunks)
    assert scores.similarities == [round(float(v @ embedder.embed([call[0]])[0]), 5) for v in scores.vectors]


def test_a_scored_plan_is_the_plan_with_its_scores(plan: DocumentPlan) -> None:
    """ScoredPlan.of keeps every field of the plan and adds the scores; scores_of finds them (None if unscored)."""
    scores = chunk_scores(FakeEmbedder(), plan)
    scored = ScoredPlan.of(plan, scores)
    assert all(getattr(scored, f.name) == getattr(plan, f.name) for f in fields(DocumentPlan))
    assert scores_of(scored) is scores and scores_of(plan) is None


def test_top_k_maps_the_most_similar_chunks_in_document_order() -> None:
    """mode top_k keeps the k best chunks (ties to the earlier one), above min_similarity, in document order;
    mode all keeps every chunk."""
    scores = [0.1, 0.9, 0.5, 0.9, 0.2]
    assert select_chunks(scores, RetrievalConfig(mode="top_k", top_k=3)) == [1, 2, 3]
    assert select_chunks(scores, RetrievalConfig(mode="top_k", top_k=3, min_similarity=0.6)) == [1, 3]
    assert select_chunks(scores, RetrievalConfig()) == [0, 1, 2, 3, 4]


def test_the_result_records_the_similarities_and_the_mapped_chunks(plan: DocumentPlan) -> None:
    """retrieve_chunks is what results.jsonl says: query kind, mode, similarities, mapped chunks."""
    scores = chunk_scores(FakeEmbedder(), plan)
    info = retrieve_chunks(plan, scores, RetrievalConfig(mode="top_k", top_k=2))
    assert info.query == "question" and info.mode == "top_k"
    assert info.similarities == scores.similarities and len(info.mapped) == 2
