"""Drift math (monitoring/drift.py): PSI, cosine distance, classes, topics, reference profiles, streamed scores."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mapreduce_llm.errors import ConfigError
from mapreduce_llm.monitoring.drift import (
    DOCUMENT_TOKEN_EDGES,
    DriftTally,
    bin_index,
    build_baseline,
    cosine_distance,
    drift_scores,
    histogram,
    job_drift,
    length_class,
    psi,
    topic_of,
    version_profile,
)
from mapreduce_llm.monitoring.profiles import DocumentProfile, iter_profiles, write_profiles
from mapreduce_llm.monitoring.verdicts import DriftGuard, level
from tests.fake_embeddings import FakeEmbedder


def _profiles(vocabulary: list[str], n: int, seed: int = 0, length: int = 1500) -> list[DocumentProfile]:
    """Profiles of documents written with words from ``vocabulary`` (fake embeddings)."""
    import random

    rng = random.Random(seed)
    embedder = FakeEmbedder()
    out = []
    for i in range(n):
        chunks = [" ".join(rng.choices(vocabulary, k=40)) for _ in range(3)]
        vectors = embedder.embed(chunks)
        query = embedder.embed(["summarize the document"])[0]
        out.append(
            DocumentProfile(
                id=f"d{i}",
                task="summarize",
                version="1.0.0",
                document_tokens=length + rng.randint(-200, 200),
                map_prompt_tokens=[700, 700, 300],
                chunk_vectors=[[float(x) for x in v] for v in vectors],
                similarities=[float(s) for s in vectors @ query],
            )
        )
    return out


PYTHON = [
    "python",
    "function",
    "class",
    "module",
    "import",
    "list",
    "dict",
    "string",
    "loop",
    "exception",
    "iterator",
    "generator",
]
LEGAL = [
    "license",
    "copyright",
    "warranty",
    "liability",
    "software",
    "distribute",
    "terms",
    "conditions",
    "permission",
    "notice",
]


def test_psi_is_zero_for_equal_distributions() -> None:
    """Identical histograms have a PSI of 0; the same shares at another scale stay near 0 (smoothing)."""
    assert psi([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0)
    assert psi([100, 200, 300], [10, 20, 30]) < 0.01


def test_psi_grows_with_the_shift_and_stays_finite_on_empty_bins() -> None:
    """A moved distribution scores above the 0.25 convention; empty bins do not make it infinite."""
    small = psi([50, 50, 0], [45, 55, 0])
    large = psi([100, 0, 0], [0, 0, 100])
    assert small < 0.1 < 0.25 < large and math.isfinite(large)


def test_psi_on_categories_uses_the_union_of_keys() -> None:
    """Category counts are compared over the classes of both sides."""
    assert psi({"a": 10, "b": 10}, {"a": 10, "b": 10}) == pytest.approx(0.0)
    assert psi({"a": 20}, {"b": 20}) > 0.25


def test_psi_rejects_histograms_with_different_bins() -> None:
    """Histograms of different bins are a programming error, said plainly."""
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2], [1, 2, 3])


def test_histogram_edges_are_inclusive_upper_bounds() -> None:
    """A value on an edge falls in that edge's bin; values above the last edge go in the extra bin."""
    assert bin_index(256, DOCUMENT_TOKEN_EDGES) == 0 and bin_index(257, DOCUMENT_TOKEN_EDGES) == 1
    assert histogram([1, 300, 10**6], (256, 512)) == [1, 1, 1]


def test_cosine_distance() -> None:
    """0 for the same direction, 1 for orthogonal vectors, 2 for opposite ones."""
    assert cosine_distance([1, 0], [2, 0]) == pytest.approx(0.0)
    assert cosine_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert cosine_distance([1, 0], [-1, 0]) == pytest.approx(2.0)


def test_length_classes_are_a_bounded_set() -> None:
    """Map prompts fall in four length buckets."""
    assert [length_class(n) for n in (10, 256, 257, 5000, 10**6)] == ["short", "short", "medium", "xlong", "xlong"]


def test_same_kind_stays_under_thresholds_and_other_kind_goes_over() -> None:
    """Held-out documents of the baseline's kind score low; documents of another vocabulary score high."""
    reference = version_profile(_profiles(PYTHON, 60, seed=1))
    same = drift_scores(reference, _profiles(PYTHON, 60, seed=2))
    other = drift_scores(reference, _profiles(LEGAL, 60, seed=3))
    assert set(same) == {"document_length", "prompt_class", "embedding_centroid", "retrieval_similarity"}
    assert all(level(signal, score) != "alert" for signal, score in same.items()), same
    assert level("embedding_centroid", other["embedding_centroid"]) == "alert"
    assert level("prompt_class", other["prompt_class"]) == "alert"


def test_unseen_topics_are_other_and_no_baseline_is_none() -> None:
    """A chunk unlike every baseline topic is ``other``; without a baseline the topic is ``none``."""
    reference = version_profile(_profiles(PYTHON, 20))
    assert len(reference.topic_centroids) == 3 and reference.topic_min_similarity is not None
    legal = _profiles(LEGAL, 1)[0].chunk_vectors
    assert legal is not None
    assert topic_of(legal[0], reference) == "other"
    assert topic_of(legal[0], None) == "none"


def test_signals_without_embeddings_are_left_out() -> None:
    """Profiles without vectors still get the length and class signals."""
    plain = [p.model_copy(update={"chunk_vectors": None, "similarities": None}) for p in _profiles(PYTHON, 10)]
    scores = drift_scores(version_profile(plain), plain)
    assert set(scores) == {"document_length", "prompt_class"}


def _versioned(profiles: list[DocumentProfile], version: str, *, plain: bool = False) -> list[DocumentProfile]:
    update: dict[str, object] = {"version": version}
    if plain:
        update.update(chunk_vectors=None, similarities=None)
    return [p.model_copy(update={**update, "id": f"{p.id}@{version}"}) for p in profiles]


def test_streaming_drift_equals_the_in_memory_scores(tmp_path: Path) -> None:
    """job_drift over a stream of profiles (read back from profile.jsonl, or in another order) gives exactly
    drift_scores' numbers, and the same MMD test."""
    baseline = build_baseline(
        "b", _profiles(PYTHON, 40, seed=1) + _versioned(_profiles(PYTHON, 20, seed=4), "2.0.0", plain=True), "x"
    )
    groups = {
        "summarize@1.0.0": _profiles(PYTHON, 30, seed=2) + _profiles(LEGAL, 25, seed=3, length=300),
        "summarize@2.0.0": _versioned(_profiles(LEGAL, 15, seed=5), "2.0.0", plain=True),
    }
    unknown = _versioned(_profiles(PYTHON, 5, seed=6), "9.9.9")  # not in the baseline: not scored
    everything = [p for group in groups.values() for p in group] + unknown
    write_profiles(tmp_path, everything)
    expected = {key: drift_scores(baseline.versions[key], group) for key, group in groups.items()}
    assert set(expected["summarize@1.0.0"]) == {
        "document_length",
        "prompt_class",
        "embedding_centroid",
        "retrieval_similarity",
    }
    guard = DriftGuard(min_documents=1, min_chunks=1)
    streamed = job_drift(baseline, iter_profiles(tmp_path), guard)
    assert {key: judged.scores for key, judged in streamed.items()} == expected
    backwards = job_drift(baseline, iter(everything[::-1]), guard)  # the vector sample ignores the order
    assert {k: (v.mmd, v.mmd_p_value) for k, v in backwards.items()} == {
        k: (v.mmd, v.mmd_p_value) for k, v in streamed.items()
    }
    assert streamed["summarize@1.0.0"].mmd_p_value is not None


def test_levels_follow_the_documented_thresholds() -> None:
    """PSI: ok up to 0.1, warn up to 0.25, alert above; centroid distance: 0.1 and 0.2 (monitoring/verdicts.py)."""
    assert [level("prompt_class", s) for s in (0.1, 0.2, 0.26)] == ["ok", "warn", "alert"]
    assert [level("embedding_centroid", s) for s in (0.1, 0.15, 0.21)] == ["ok", "warn", "alert"]


def test_the_tally_scores_only_versions_in_the_baseline() -> None:
    """Profiles of a version the baseline does not know are not scored; an empty tally scores nothing."""
    baseline = build_baseline("b", _profiles(PYTHON, 10), "x")
    tally = DriftTally(baseline)
    assert tally.scores() == {}
    for p in _versioned(_profiles(PYTHON, 3), "9.9.9"):
        tally.add(p)
    assert tally.scores() == {}


def test_a_baseline_needs_profiles() -> None:
    """Building a baseline from no profiles says where none were found."""
    with pytest.raises(ConfigError, match="out/empty has no document profiles"):
        build_baseline("b", [], "out/empty")
