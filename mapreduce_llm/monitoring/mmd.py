"""A drift test with a p-value: MMD between two samples of chunk embeddings, with a permutation test over
documents. numpy only; bounded in memory and time whatever the corpus size.

- **Statistic**: the unbiased estimate of MMD² (maximum mean discrepancy; Gretton et al., "A kernel two-sample
  test", JMLR 2012) with an RBF kernel ``exp(-|a - b|² / (2 σ²))``, σ² the median squared distance between the
  pooled vectors (the "median heuristic"). 0 when both samples come from one distribution; it can fall slightly
  below 0 then.
- **p-value**: the share of :data:`PERMUTATIONS` seeded relabellings whose statistic is at least the observed one,
  ``(1 + count) / (1 + permutations)`` (Phipson & Smyth 2010: never 0; the smallest is 1/501). A relabelling moves
  whole *documents* between the two sides: chunks of one document resemble each other, so shuffling chunks one at
  a time would treat them as independent and understate the p-value.
- **Bounds**: each side is a :class:`VectorSample` of at most :data:`MAX_DOCUMENTS` documents (those whose seeded
  hash of their id is smallest, so the same documents whatever order they arrive in) and at most
  :data:`CHUNKS_PER_DOCUMENT` chunks of each (evenly spaced): at most 400 vectors a side, one kernel of 800 by 800.
  A baseline stores its sample (float16, base64: about 300 kB at most for 384-dimensional vectors).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mapreduce_llm.common import RecordModel

MAX_DOCUMENTS = 100
"""Documents per side in a sample, at most."""
CHUNKS_PER_DOCUMENT = 4
"""Chunk vectors kept of each sampled document, at most (evenly spaced through the document)."""
PERMUTATIONS = 500
"""Relabellings of the permutation test."""
SEED = 0
"""Seed of the document sampling and of the permutations."""

Matrix = npt.NDArray[np.float64]


class VectorSample(RecordModel):
    """Chunk embeddings of a sample of documents: the rows of each document in turn, float16 little-endian,
    base64 (float16 keeps about as much as the profiles' 4 decimals)."""

    documents_seen: int
    """Documents with vectors the sample was drawn from."""
    chunks_per_document: list[int]
    """Rows of each sampled document, in sample order."""
    dim: int
    data: str

    @property
    def documents(self) -> int:
        """Documents in the sample."""
        return len(self.chunks_per_document)

    def vectors(self) -> Matrix:
        """The rows, ``(sum(chunks_per_document), dim)``."""
        raw = np.frombuffer(base64.b64decode(self.data), dtype="<f2")
        return raw.astype(np.float64).reshape(sum(self.chunks_per_document), self.dim)

    def groups(self) -> npt.NDArray[np.int64]:
        """The document (index in the sample) of every row."""
        return np.repeat(np.arange(self.documents), self.chunks_per_document)


def _key(seed: int, document_id: str) -> bytes:
    """The seeded rank of a document: the sample keeps the documents with the smallest keys."""
    return hashlib.blake2b(f"{seed}\0{document_id}".encode(), digest_size=8).digest()


class VectorSampler:
    """Draws a :class:`VectorSample` from documents added one at a time; memory is the sample's.

    The documents kept are the ``max_documents`` whose ``(seed, id)`` hash is smallest (bottom-k sampling), so
    the sample does not depend on the order documents are added in: a job's tally and ``drift check`` over its
    profile.jsonl draw the same one.
    """

    def __init__(
        self, max_documents: int = MAX_DOCUMENTS, chunks_per_document: int = CHUNKS_PER_DOCUMENT, seed: int = SEED
    ) -> None:
        if max_documents < 2 or chunks_per_document < 1:
            raise ValueError(
                f"a vector sample needs max_documents >= 2 and chunks_per_document >= 1, got {max_documents} "
                f"and {chunks_per_document}"
            )
        self.max_documents = max_documents
        self.chunks_per_document = chunks_per_document
        self.seed = seed
        self.documents_seen = 0
        self._dim = 0
        # (-key, id, rows as float16 bytes): the heap's top is the document to drop first. Equal ids (a version
        # profiled twice) are told apart by their vectors, so the sample still does not depend on the order.
        self._heap: list[tuple[int, str, bytes]] = []

    def add(self, document_id: str, vectors: Sequence[Sequence[float]] | None) -> None:
        """Offer one document's chunk vectors (nothing happens for a document without vectors)."""
        if not vectors:
            return
        self.documents_seen += 1
        rows = np.asarray(vectors, dtype=np.float64)
        if len(rows) > self.chunks_per_document:
            rows = rows[np.linspace(0, len(rows) - 1, self.chunks_per_document).round().astype(int)]
        self._dim = rows.shape[1]
        entry = (-int.from_bytes(_key(self.seed, document_id), "big"), document_id, rows.astype("<f2").tobytes())
        if len(self._heap) < self.max_documents:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heappushpop(self._heap, entry)

    def sample(self) -> VectorSample | None:
        """The sample, documents by increasing key (None: no document had vectors)."""
        if not self._heap:
            return None
        kept = sorted(self._heap, reverse=True)
        row_bytes = 2 * self._dim
        return VectorSample(
            documents_seen=self.documents_seen,
            chunks_per_document=[len(data) // row_bytes for _, _, data in kept],
            dim=self._dim,
            data=base64.b64encode(b"".join(data for _, _, data in kept)).decode("ascii"),
        )


def sample_vectors(documents: Sequence[tuple[str, Sequence[Sequence[float]] | None]]) -> VectorSample | None:
    """The :class:`VectorSample` of ``(document id, chunk vectors)`` pairs, with the default bounds and seed."""
    sampler = VectorSampler()
    for document_id, vectors in documents:
        sampler.add(document_id, vectors)
    return sampler.sample()


@dataclass(frozen=True, slots=True)
class MMDResult:
    """One two-sample test."""

    statistic: float
    """Unbiased MMD² estimate."""
    p_value: float
    permutations: int
    documents: tuple[int, int]
    """Documents of the two samples."""
    vectors: tuple[int, int]
    """Chunk vectors of the two samples."""


def rbf_kernel(vectors: Matrix) -> Matrix:
    """RBF kernel matrix of the rows, bandwidth by the median heuristic (σ² = median squared distance)."""
    norms = (vectors * vectors).sum(axis=1)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2.0 * (vectors @ vectors.T), 0.0)
    upper = squared[np.triu_indices(len(vectors), k=1)]
    median = float(np.median(upper)) if upper.size else 0.0
    result: Matrix = np.exp(-squared / (2.0 * median if median > 0 else 1.0))
    return result


def _statistics(kernel: Matrix, groups: npt.NDArray[np.int64], chosen: Matrix) -> Matrix:
    """Unbiased MMD² for each labelling of the documents: ``chosen`` is (labellings, documents), 1 for a
    document of the first sample; ``groups`` the document of every kernel row.

    Pairs of rows of the same document are left out (as the diagonal is in the usual estimate): within a
    document they are far more alike than any two documents, and would keep the statistic above 0 for samples
    of one distribution."""
    same = groups[:, None] == groups[None, :]
    inner = np.where(same, 0.0, kernel)
    sides = chosen[:, groups]
    through = sides @ inner
    xx = (through * sides).sum(axis=1)
    xy = through.sum(axis=1) - xx
    yy = float(inner.sum()) - 2.0 * xy - xx
    sizes = np.bincount(groups).astype(np.float64)
    n = chosen @ sizes
    m = float(sizes.sum()) - n
    own = chosen @ (sizes * sizes)
    other = float((sizes * sizes).sum()) - own
    result: Matrix = (
        xx / np.maximum(n * n - own, 1.0) + yy / np.maximum(m * m - other, 1.0) - 2.0 * xy / np.maximum(n * m, 1.0)
    )
    return result


def mmd_test(
    first: VectorSample, second: VectorSample, *, permutations: int = PERMUTATIONS, seed: int = SEED
) -> MMDResult | None:
    """Do the two samples come from one distribution? MMD² and its permutation p-value (None: fewer than 2
    documents on a side, or vectors of different sizes)."""
    if first.documents < 2 or second.documents < 2 or first.dim != second.dim:
        return None
    pooled = np.vstack([first.vectors(), second.vectors()])
    groups = np.concatenate([first.groups(), second.groups() + first.documents])
    kernel = rbf_kernel(pooled)
    documents = first.documents + second.documents
    rng = np.random.default_rng(seed)
    # Row 0: the observed labelling (the first sample's documents); then a random set of as many documents each.
    order = np.vstack([np.arange(documents), rng.random((permutations, documents)).argsort(axis=1)])
    chosen = np.zeros((permutations + 1, documents))
    np.put_along_axis(chosen, order[:, : first.documents], 1.0, axis=1)
    stats = _statistics(kernel, groups, chosen)
    observed = float(stats[0])
    extreme = int((stats[1:] >= observed - 1e-12).sum())
    return MMDResult(
        statistic=observed,
        p_value=(1 + extreme) / (1 + permutations),
        permutations=permutations,
        documents=(first.documents, second.documents),
        vectors=(len(first.groups()), len(second.groups())),
    )
