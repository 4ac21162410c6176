"""Where chunks are made: cut a document into pieces of at most N tokens of the served model.

One tokenizer pass encodes the whole document with character offsets; chunks are slices of that token
sequence, so a chunk's size is exact and the ids sent to the engine are exactly the ids counted here.

Each chunk ends at the best boundary in the last part of its window — a paragraph break, else a sentence
end or line break, else a space between words, else any token edge — preferring the latest one of the best
kind. Boundary strengths are computed for all tokens at once with numpy, and each chunk looks at its own
window only, so the work is linear in the text (a 10 MB document without a single line break included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from mapreduce_llm.tokenization import Offsets, Tokenizer


class Boundary(IntEnum):
    """How clean the cut at the end of a chunk is (higher is better)."""

    NONE = 0  # inside a word, or inside a multi-byte character's tokens
    TOKEN = 1  # between two tokens of a word
    WORD = 2  # at a space
    SENTENCE = 3  # after a sentence end, or at a line break
    PARAGRAPH = 4  # at a blank line
    END = 5  # end of the document


@dataclass(frozen=True, slots=True)
class Chunk:
    """A contiguous piece of one document: its token ids and the character span they cover."""

    document_id: str
    index: int
    start: int
    """First character (inclusive) of the chunk in the document text."""
    end: int
    """Last character (exclusive)."""
    token_ids: tuple[int, ...]
    boundary: Boundary
    """The kind of boundary the chunk ends on."""

    @property
    def id(self) -> str:
        """Stable chunk id: ``document_id#index``."""
        return f"{self.document_id}#{self.index}"

    @property
    def n_tokens(self) -> int:
        """Exact size in the served model's tokens."""
        return len(self.token_ids)


_SENTENCE_END = ".!?…。！？"
_CLOSERS = "\"')]»”’"
_SPACES = " \t\n\r\f\v\u00a0\u2028\u2029\u3000"


def _codes(chars: str) -> npt.NDArray[np.uint32]:
    return np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32)


_SENTENCE_CODES = _codes(_SENTENCE_END)
_CLOSER_CODES = _codes(_CLOSERS)
_SPACE_CODES = _codes(_SPACES)
_NL = ord("\n")


def boundary_strengths(text: str, offsets: Offsets) -> npt.NDArray[np.int8]:
    """Strength of cutting *before* each token (index i: cut between token i-1 and token i).

    Index 0 is never a useful cut and gets NONE; cuts where the previous token overlaps the next one
    (a multi-byte character split over two tokens) get NONE too.
    """
    n = len(offsets)
    strengths = np.zeros(n, dtype=np.int8)
    if n < 2:
        return strengths
    off = offsets
    cut = off[:-1, 1]  # character position of the cut before tokens 1..n-1
    clean = cut <= off[1:, 0]
    # Pad the code points so that positions cut-3 .. cut+1 are always valid.
    cps = np.concatenate([np.zeros(3, np.uint32), _codes(text), np.zeros(2, np.uint32)])
    pos = cut + 3

    def at(delta: int) -> npt.NDArray[np.uint32]:
        picked: npt.NDArray[np.uint32] = cps[pos + delta]
        return picked

    c_m3, c_m2, c_m1, c_0, c_p1 = at(-3), at(-2), at(-1), at(0), at(1)
    space_m1, space_0 = np.isin(c_m1, _SPACE_CODES), np.isin(c_0, _SPACE_CODES)
    newlines = (c_m2 == _NL).astype(np.int8) + (c_m1 == _NL) + (c_0 == _NL) + (c_p1 == _NL)
    # Sentence end: a terminal mark, possibly followed by a closing quote/bracket, then the cut at a space.
    term_m1 = np.isin(c_m1, _SENTENCE_CODES)
    term_m2 = np.isin(c_m2, _SENTENCE_CODES) | (np.isin(c_m3, _SENTENCE_CODES) & np.isin(c_m2, _CLOSER_CODES))
    sentence = (term_m1 & space_0) | (term_m2 & space_m1)

    level = np.full(n - 1, Boundary.TOKEN, dtype=np.int8)
    level[space_m1 | space_0] = Boundary.WORD
    level[sentence | (newlines >= 1)] = Boundary.SENTENCE
    level[newlines >= 2] = Boundary.PARAGRAPH
    level[~clean] = Boundary.NONE
    strengths[1:] = level
    return strengths


def plan_cuts(
    n_tokens: int, strengths: npt.NDArray[np.int8], max_tokens: int, min_fraction: float = 0.5
) -> list[tuple[int, int, Boundary]]:
    """Choose chunk token ranges ``[start, end)`` of at most ``max_tokens`` tokens covering ``0..n_tokens``.

    Within each window the cut goes at the latest position of the strongest boundary found at or after
    ``min_fraction`` of the window; if only NONE cuts are there, the best earlier clean cut is used, and
    failing that the window is cut at its full size.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    cuts: list[tuple[int, int, Boundary]] = []
    start = 0
    floor = max(1, int(max_tokens * min_fraction))
    while start < n_tokens:
        limit = start + max_tokens
        if limit >= n_tokens:
            cuts.append((start, n_tokens, Boundary.END))
            break
        end, kind = _best_cut(strengths, start + floor, limit)
        if kind == Boundary.NONE:
            end, kind = _best_cut(strengths, start + 1, limit)
            if kind == Boundary.NONE:
                end, kind = limit, Boundary.NONE
        cuts.append((start, end, kind))
        start = end
    return cuts


def _best_cut(strengths: npt.NDArray[np.int8], lo: int, hi: int) -> tuple[int, Boundary]:
    """Latest index in ``[lo, hi]`` with the highest strength (cut before that token)."""
    window = strengths[lo : hi + 1]
    best = int(window.max())
    last = len(window) - 1 - int(np.argmax(window[::-1] == best))
    return lo + last, Boundary(best)


def chunk_encoded(
    document_id: str,
    text: str,
    ids: Sequence[int],
    offsets: Offsets,
    max_tokens: int,
    min_fraction: float = 0.5,
) -> list[Chunk]:
    """Cut an already encoded document into chunks; spans tile the text from 0 to ``len(text)``."""
    n = len(ids)
    strengths = boundary_strengths(text, offsets)
    chunks = []
    for index, (s, e, kind) in enumerate(plan_cuts(n, strengths, max_tokens, min_fraction)):
        char_start = 0 if s == 0 else int(offsets[s - 1, 1])
        char_end = len(text) if e == n else int(offsets[e - 1, 1])
        chunks.append(Chunk(document_id, index, char_start, char_end, tuple(ids[s:e]), kind))
    return chunks


def chunk_text(
    document_id: str, text: str, tokenizer: Tokenizer, max_tokens: int, min_fraction: float = 0.5
) -> list[Chunk]:
    """Encode ``text`` once with the served model's tokenizer and cut it into chunks of ≤ ``max_tokens``."""
    ids, offsets = tokenizer.encode_data_with_offsets(text)
    return chunk_encoded(document_id, text, ids, offsets, max_tokens, min_fraction)
