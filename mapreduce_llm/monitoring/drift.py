"""Drift: reference profiles per prompt version, and how far a job's documents are from them. Pure functions
over :class:`~mapreduce_llm.monitoring.profiles.DocumentProfile` records: no files, no models.

- a **version profile** (:class:`VersionProfile`), per task and prompt version of a **baseline**
  (:class:`Baseline`, built by ``mapreduce-llm drift baseline`` from a job's ``profile.jsonl``): the document
  length histogram, prompt class shares, the embedding centroid and spread, topic clusters (k-means over chunk
  embeddings), the retrieval similarity histogram and a seeded sample of chunk vectors (for the MMD test);
- **drift scores** (:func:`drift_scores`, streamed by :class:`DriftTally`) of a job's profiles against the
  baseline of the same task and version: PSI for the distributions, cosine distance between embedding
  centroids. The tally hands each task and version to a :class:`~mapreduce_llm.monitoring.verdicts.DriftGuard`,
  which withholds the scores of too small a sample and adds the MMD test; ``verdicts`` also has the levels.

PSI (population stability index) = sum over bins of (p - q) * ln(p / q) ; the credit-scoring convention
(Siddiqi, *Credit Risk Scorecards*, 2006) reads < 0.1 as stable, 0.1-0.25 as a moderate shift and > 0.25 as a
significant one. Bin shares are smoothed (half a count per bin) so that an empty bin does not make the index
infinite on small samples.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from pydantic import Field

from mapreduce_llm.common import RecordModel
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.monitoring.mmd import VectorSample, VectorSampler, sample_vectors
from mapreduce_llm.monitoring.profiles import DocumentProfile
from mapreduce_llm.monitoring.verdicts import DriftGuard
from mapreduce_llm.results import VersionDrift

DOCUMENT_TOKEN_EDGES: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
"""Upper edges of the document length bins (served-model tokens); one more bin above the last."""
SIMILARITY_EDGES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
"""Upper edges of the query-to-chunk cosine similarity bins; one more bin above the last."""
PROMPT_LENGTH_CLASSES: tuple[tuple[str, int], ...] = (("short", 256), ("medium", 1024), ("long", 4096))
"""Length bucket of a map prompt (tokens, inclusive upper bound); longer ones are ``xlong``."""
TOPICS = 3
"""Topic clusters per task and version in a baseline (k-means over chunk embeddings)."""
OTHER_TOPIC_QUANTILE = 0.05
"""A chunk less similar to its nearest baseline topic than this quantile of the baseline's own chunks is
in topic ``other``: data the baseline never saw."""
SMOOTHING = 0.5
"""Pseudo-count added to every bin before computing PSI."""

SIGNALS: dict[str, str] = {
    "document_length": "PSI of the document length histogram (served-model tokens)",
    "prompt_class": "PSI of the prompt class shares (map prompt length bucket × topic cluster)",
    "embedding_centroid": "cosine distance between the mean chunk embeddings",
    "retrieval_similarity": "PSI of the query-to-chunk similarity histogram",
}
"""The drift signals, each exported as ``mapreduce_llm_drift_score{signal=...}``."""

DriftScores = dict[str, VersionDrift]
"""Drift of a job per ``task@version`` (of both the job and the baseline): scores, or ``insufficient``."""


class VersionProfile(RecordModel):
    """The reference distribution of one task and prompt version."""

    documents: int
    chunks: int
    document_length_counts: list[int]
    """Documents per bin of :data:`DOCUMENT_TOKEN_EDGES`."""
    class_counts: dict[str, int]
    """Map prompts per class (``length/topic``)."""
    centroid: list[float] | None = None
    """Mean chunk embedding, normalised."""
    spread: float | None = None
    """Mean cosine distance of the chunk embeddings to the centroid."""
    topic_centroids: list[list[float]] = Field(default_factory=list)
    """k-means centres of the chunk embeddings (normalised): topics ``t0``, ``t1``, ..."""
    topic_min_similarity: float | None = None
    """Chunks less similar than this to their nearest topic centre are in topic ``other``."""
    similarity_counts: list[int] | None = None
    """Chunks per bin of :data:`SIMILARITY_EDGES`."""
    vector_sample: VectorSample | None = None
    """Chunk vectors of up to 100 documents (4 chunks each, seeded) for the MMD test. None without embeddings,
    and in baselines made before the test (their jobs get no p-value)."""


class Baseline(RecordModel):
    """``baselines/NAME.json``: reference profiles per ``task@version``."""

    name: str
    created_at: float
    source: str
    """The results folder it was built from."""
    embedding_model: str = "all-MiniLM-L6-v2"
    versions: dict[str, VersionProfile]


# ---- small math ---------------------------------------------------------------------------------------------
def bin_index(value: float, edges: Sequence[float]) -> int:
    """Index of the bin holding ``value``: the first upper edge ≥ value, or one past the last edge."""
    for i, edge in enumerate(edges):
        if value <= edge:
            return i
    return len(edges)


def histogram(values: Iterable[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin (``len(edges) + 1`` bins)."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bin_index(v, edges)] += 1
    return counts


def psi(expected: Mapping[str, int] | Sequence[int], actual: Mapping[str, int] | Sequence[int]) -> float:
    """Population stability index of ``actual`` against ``expected`` (counts per bin or per category)."""
    if isinstance(expected, Mapping) or isinstance(actual, Mapping):
        e_map = dict(expected) if isinstance(expected, Mapping) else dict(enumerate(expected))
        a_map = dict(actual) if isinstance(actual, Mapping) else dict(enumerate(actual))
        keys = sorted(set(e_map) | set(a_map), key=str)
        e = [float(e_map.get(k, 0)) for k in keys]  # type: ignore[call-overload]
        a = [float(a_map.get(k, 0)) for k in keys]  # type: ignore[call-overload]
    else:
        if len(expected) != len(actual):
            raise ValueError(f"histograms must have the same bins, got {len(expected)} and {len(actual)}")
        e, a = [float(x) for x in expected], [float(x) for x in actual]
    if not e or sum(e) == 0 or sum(a) == 0:
        return 0.0
    e_total, a_total = sum(e) + SMOOTHING * len(e), sum(a) + SMOOTHING * len(a)
    score = 0.0
    for ec, ac in zip(e, a, strict=True):
        p, q = (ac + SMOOTHING) / a_total, (ec + SMOOTHING) / e_total
        score += (p - q) * math.log(p / q)
    return score


def cosine_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """1 - cosine similarity."""
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    norm = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return 1.0 if norm == 0 else 1.0 - float(va @ vb) / norm


def _unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    n = float(np.linalg.norm(v))
    return v if n == 0 else v / n


def length_class(prompt_tokens: int) -> str:
    """Length bucket of one map prompt."""
    for name, limit in PROMPT_LENGTH_CLASSES:
        if prompt_tokens <= limit:
            return name
    return "xlong"


def topic_of(vector: Sequence[float] | None, reference: VersionProfile | None) -> str:
    """Topic cluster of one chunk embedding against a baseline: ``t<i>``, ``other``, or ``none`` (no data)."""
    if vector is None or reference is None or not reference.topic_centroids:
        return "none"
    sims = np.asarray(reference.topic_centroids, dtype=float) @ np.asarray(vector, dtype=float)
    best = int(np.argmax(sims))
    if reference.topic_min_similarity is not None and float(sims[best]) < reference.topic_min_similarity:
        return "other"
    return f"t{best}"


def prompt_classes(profile: DocumentProfile, reference: VersionProfile | None) -> list[str]:
    """Class of every map prompt of a document: ``length/topic`` (a bounded set: 4 x (TOPICS + 2))."""
    vectors: list[list[float] | None] = (
        list(profile.chunk_vectors) if profile.chunk_vectors else [None] * len(profile.map_prompt_tokens)
    )
    return [
        f"{length_class(n)}/{topic_of(v, reference)}" for n, v in zip(profile.map_prompt_tokens, vectors, strict=True)
    ]


def _topics(vectors: npt.NDArray[np.float64]) -> tuple[list[list[float]], float | None]:
    """k-means topic centres of unit vectors, and the similarity below which a chunk is ``other``."""
    from sklearn.cluster import KMeans

    k = min(TOPICS, len(vectors))
    if k == 0:
        return [], None
    if k == 1:
        centres = np.asarray([_unit(vectors.mean(axis=0))])
    else:
        km = KMeans(n_clusters=k, n_init=4, random_state=0).fit(vectors)
        centres = np.asarray([_unit(c) for c in km.cluster_centers_])
        # Order topics by size so that t0 is the largest: stable names across rebuilds of similar data.
        sizes = Counter(km.labels_.tolist())
        centres = centres[[i for i, _ in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))]]
    best = (vectors @ centres.T).max(axis=1)
    return [[round(float(x), 5) for x in c] for c in centres], float(np.quantile(best, OTHER_TOPIC_QUANTILE))


def version_profile(profiles: Sequence[DocumentProfile]) -> VersionProfile:
    """The reference profile of one task and version from its documents' profiles."""
    vector_rows = [v for p in profiles for v in (p.chunk_vectors or [])]
    centroid = spread = None
    topics: list[list[float]] = []
    topic_min = None
    if vector_rows:
        vectors = np.asarray(vector_rows, dtype=float)
        mean = _unit(vectors.mean(axis=0))
        centroid = [round(float(x), 5) for x in mean]
        spread = float(np.mean(1.0 - vectors @ mean))
        topics, topic_min = _topics(vectors)
    draft = VersionProfile(
        documents=len(profiles),
        chunks=sum(len(p.map_prompt_tokens) for p in profiles),
        document_length_counts=histogram((p.document_tokens for p in profiles), DOCUMENT_TOKEN_EDGES),
        class_counts={},
        centroid=centroid,
        spread=spread,
        topic_centroids=topics,
        topic_min_similarity=topic_min,
    )
    sims = [s for p in profiles for s in (p.similarities or [])]
    classes = Counter(c for p in profiles for c in prompt_classes(p, draft))
    return draft.model_copy(
        update={
            "class_counts": dict(sorted(classes.items())),
            "similarity_counts": histogram(sims, SIMILARITY_EDGES) if sims else None,
            "vector_sample": sample_vectors([(p.id, p.chunk_vectors) for p in profiles]),
        }
    )


def build_baseline(name: str, profiles: Sequence[DocumentProfile], source: str) -> Baseline:
    """A baseline with one reference profile per ``task@version`` found in ``profiles``."""
    by_key: dict[str, list[DocumentProfile]] = {}
    for p in profiles:
        by_key.setdefault(p.key, []).append(p)
    if not by_key:
        raise ConfigError(f"{source} has no document profiles to build baseline {name!r} from", parameter="results")
    return Baseline(
        name=name,
        created_at=time.time(),
        source=source,
        versions={k: version_profile(v) for k, v in sorted(by_key.items())},
    )


# ---- drift ----------------------------------------------------------------------------------------------------
def drift_scores(reference: VersionProfile, profiles: Sequence[DocumentProfile]) -> dict[str, float]:
    """Drift of one task and version's documents against its reference, per signal of :data:`SIGNALS`.

    Signals that need embeddings are left out when either side has none. This is the definition, over
    profiles in memory; jobs compute the same numbers in one pass with :class:`VersionTally`.
    """
    if not profiles:
        return {}
    current = version_profile(profiles)
    classes = Counter(c for p in profiles for c in prompt_classes(p, reference))
    scores = {
        "document_length": psi(reference.document_length_counts, current.document_length_counts),
        "prompt_class": psi(reference.class_counts, dict(classes)),
    }
    if reference.centroid is not None and current.centroid is not None:
        scores["embedding_centroid"] = cosine_distance(reference.centroid, current.centroid)
    if reference.similarity_counts is not None and current.similarity_counts is not None:
        scores["retrieval_similarity"] = psi(reference.similarity_counts, current.similarity_counts)
    return {k: round(v, 6) for k, v in scores.items()}


class VersionTally:
    """What :func:`drift_scores` needs of one task and version's documents, summed one profile at a time.

    Memory is one vector and a few histograms however many documents are added. The scores equal
    :func:`drift_scores` over the same profiles in the same order: same bins, same classes, and the vectors
    are summed row by row, which is how numpy sums the stacked rows for their mean.
    """

    def __init__(self, reference: VersionProfile) -> None:
        self.reference = reference
        self.documents = 0
        self.chunks = 0
        self.sampler = VectorSampler()
        """The job's sample of chunk vectors for the MMD test."""
        self.length_counts = [0] * (len(DOCUMENT_TOKEN_EDGES) + 1)
        self.classes: Counter[str] = Counter()
        self.similarity_counts = [0] * (len(SIMILARITY_EDGES) + 1)
        self.similarities = 0
        self.vectors = 0
        self._vector_sum: npt.NDArray[np.float64] | None = None

    def add(self, profile: DocumentProfile) -> None:
        """Count one document's profile."""
        self.documents += 1
        self.chunks += len(profile.map_prompt_tokens)
        self.sampler.add(profile.id, profile.chunk_vectors)
        self.length_counts[bin_index(profile.document_tokens, DOCUMENT_TOKEN_EDGES)] += 1
        self.classes.update(prompt_classes(profile, self.reference))
        for s in profile.similarities or []:
            self.similarity_counts[bin_index(s, SIMILARITY_EDGES)] += 1
            self.similarities += 1
        for row in profile.chunk_vectors or []:
            vector = np.asarray(row, dtype=float)
            if self._vector_sum is None:
                self._vector_sum = np.zeros_like(vector)
            self._vector_sum += vector
            self.vectors += 1

    def scores(self) -> dict[str, float]:
        """Drift per signal, as :func:`drift_scores` gives it (empty before the first document)."""
        if not self.documents:
            return {}
        reference = self.reference
        scores = {
            "document_length": psi(reference.document_length_counts, self.length_counts),
            "prompt_class": psi(reference.class_counts, dict(self.classes)),
        }
        if reference.centroid is not None and self._vector_sum is not None:
            centroid = [round(float(x), 5) for x in _unit(self._vector_sum / self.vectors)]
            scores["embedding_centroid"] = cosine_distance(reference.centroid, centroid)
        if reference.similarity_counts is not None and self.similarities:
            scores["retrieval_similarity"] = psi(reference.similarity_counts, self.similarity_counts)
        return {k: round(v, 6) for k, v in scores.items()}


class DriftTally:
    """A job's drift against a baseline, one profile at a time: a :class:`VersionTally` per ``task@version``
    of the baseline; profiles of other versions are not scored. ``guard`` (default: 40 documents and 40 chunks
    per side) judges each version at the end."""

    def __init__(self, baseline: Baseline, guard: DriftGuard | None = None) -> None:
        self.baseline = baseline
        self.guard = guard or DriftGuard()
        self.versions: dict[str, VersionTally] = {}

    def add(self, profile: DocumentProfile) -> None:
        """Count one document's profile (ignored when its version is not in the baseline)."""
        key = profile.key
        if key not in self.versions:
            reference = self.baseline.versions.get(key)
            if reference is None:
                return
            self.versions[key] = VersionTally(reference)
        self.versions[key].add(profile)

    def scores(self) -> DriftScores:
        """Drift per ``task@version`` present in both the job and the baseline, as the guard judges it."""
        return {key: self.guard.judge(tally.reference, tally) for key, tally in sorted(self.versions.items())}


def job_drift(baseline: Baseline, profiles: Iterable[DocumentProfile], guard: DriftGuard | None = None) -> DriftScores:
    """Drift per ``task@version`` present in both the job and the baseline; streams ``profiles``."""
    tally = DriftTally(baseline, guard)
    for p in profiles:
        tally.add(p)
    return tally.scores()
