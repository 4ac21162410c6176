"""The MMD permutation test and its vector samples (monitoring/mmd.py), on seeded synthetic embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from mapreduce_llm.monitoring.mmd import (
    PERMUTATIONS,
    VectorSample,
    VectorSampler,
    mmd_test,
    rbf_kernel,
    sample_vectors,
)

Documents = list[tuple[str, list[list[float]]]]


def documents(prefix: str, n: int, *, seed: int, shift: float = 0.0, chunks: int = 3, dim: int = 384) -> Documents:
    """``n`` documents of unit chunk vectors: each document has its own topic (a random direction) and its chunks
    scatter around it; ``shift`` moves every topic along the first axis (another kind of document)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        topic = rng.normal(size=dim)
        topic[0] += shift
        rows = topic + 0.5 * rng.normal(size=(chunks, dim))
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out.append((f"{prefix}{i}", rows.round(4).tolist()))
    return out


def _sample(docs: Documents) -> VectorSample:
    sample = sample_vectors(docs)
    assert sample is not None
    return sample


def test_the_p_value_is_small_for_clearly_shifted_vectors() -> None:
    """20 documents of another kind against 40 of the baseline's: p at the permutation floor, MMD² well above 0."""
    result = mmd_test(_sample(documents("b", 40, seed=1)), _sample(documents("s", 20, seed=2, shift=8.0)))
    assert result is not None
    assert result.p_value == pytest.approx(1 / (1 + PERMUTATIONS)) and result.statistic > 0.02
    assert result.documents == (40, 20) and result.vectors == (120, 60)


def test_the_p_value_is_not_small_for_samples_of_one_distribution() -> None:
    """Other documents of the same kind: p far above 0.05 and MMD² near 0, at 5, 20 and 80 documents."""
    baseline = _sample(documents("b", 80, seed=1))
    for n, seed in ((5, 3), (20, 4), (80, 5)):
        result = mmd_test(baseline, _sample(documents("c", n, seed=seed)))
        assert result is not None
        assert result.p_value > 0.1 and abs(result.statistic) < 0.01, (n, result)


def test_the_test_is_calibrated_over_documents_not_chunks() -> None:
    """Over 60 pairs of same-kind samples of 8 documents of 4 alike chunks, about 5% fall under 0.05 (at most
    12%): relabelling whole documents keeps similar chunks of one document together."""
    p_values = []
    for trial in range(60):
        a = _sample(documents(f"a{trial}-", 8, seed=2 * trial, chunks=4, dim=32))
        b = _sample(documents(f"b{trial}-", 8, seed=2 * trial + 1, chunks=4, dim=32))
        result = mmd_test(a, b, permutations=200, seed=trial)
        assert result is not None
        p_values.append(result.p_value)
    assert np.mean(np.asarray(p_values) < 0.05) <= 0.12


def test_the_test_is_deterministic_with_a_seed() -> None:
    """The same samples and seed give the same p-value; another seed moves it only by permutation noise."""
    a, b = _sample(documents("a", 15, seed=1)), _sample(documents("b", 15, seed=2, shift=0.6))
    first, again, other = mmd_test(a, b, seed=7), mmd_test(a, b, seed=7), mmd_test(a, b, seed=8)
    assert first is not None and again is not None and other is not None
    assert first == again
    assert other.statistic == first.statistic and abs(other.p_value - first.p_value) < 0.1


def test_a_side_with_fewer_than_two_documents_is_not_tested() -> None:
    """One document on a side, or vectors of different sizes, give no test rather than a meaningless p-value."""
    assert mmd_test(_sample(documents("a", 1, seed=1)), _sample(documents("b", 10, seed=2))) is None
    assert mmd_test(_sample(documents("a", 5, seed=1, dim=8)), _sample(documents("b", 5, seed=2))) is None


def test_the_sample_is_bounded_and_the_same_in_any_order() -> None:
    """At most 100 documents and 4 chunks each (evenly spaced) are kept, chosen by a seeded hash of the id:
    the documents added in reverse order give the same sample; the count of documents seen is kept."""
    docs = documents("d", 150, seed=1, chunks=9, dim=16)
    forward, backward = _sample(docs), _sample(docs[::-1])
    assert forward == backward
    assert forward.documents == 100 and forward.documents_seen == 150
    assert set(forward.chunks_per_document) == {4} and forward.vectors().shape == (400, 16)
    sampler = VectorSampler(max_documents=2, chunks_per_document=2, seed=0)
    sampler.add("only", [[float(i), 0.0] for i in range(5)])
    sampler.add("empty", None)
    only = sampler.sample()
    assert only is not None and only.vectors()[:, 0].tolist() == [0.0, 4.0] and only.documents_seen == 1


def test_stored_vectors_keep_four_decimals() -> None:
    """float16 in base64 keeps chunk vectors as precisely as the profiles' 4 decimals, and survives JSON."""
    docs = documents("d", 3, seed=1)
    sample = _sample(docs)
    restored = VectorSample.model_validate_json(sample.model_dump_json()).vectors()
    original = np.asarray([row for _, rows in sorted(docs, key=lambda d: d[0]) for row in rows])
    assert np.abs(np.sort(restored, axis=None) - np.sort(original, axis=None)).max() < 1e-4


def test_the_kernel_bandwidth_is_the_median_distance() -> None:
    """RBF kernel: 1 on the diagonal, exp(-1/2) at the median squared distance (the median heuristic)."""
    vectors = np.asarray([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    kernel = rbf_kernel(vectors)
    assert np.allclose(np.diag(kernel), 1.0)
    assert kernel[0, 2] == pytest.approx(np.exp(-0.5))  # squared distances 1, 4, 5: the median is 4
