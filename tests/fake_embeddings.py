"""A deterministic stand-in for all-MiniLM-L6-v2: hashed bag of words, so texts sharing words are similar."""

from __future__ import annotations

import re
import zlib

import numpy as np

from mapreduce_llm.embeddings import EMBEDDING_DIM, Vectors


class FakeEmbedder:
    """Unit vectors from word counts hashed into 384 dimensions; ``calls`` keeps every batch embedded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> Vectors:
        self.calls.append(list(texts))
        rows = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                rows[i, zlib.crc32(word.encode()) % EMBEDDING_DIM] += 1.0
            norm = float(np.linalg.norm(rows[i]))
            if norm:
                rows[i] /= norm
        return rows
