"""Drift: what a job's documents look like, reference profiles per prompt version, and drift scores.

Three layers:

- a **document profile** (:class:`DocumentProfile`), one per processed document, written by a job to
  ``DIR/profile.jsonl`` beside its results: token lengths, the embedding of every chunk and the query-to-chunk
  similarities — numbers only, never text (results.jsonl has no chunk text to recompute them from);
- a **baseline** (:class:`Baseline`), ``mapreduce-llm drift baseline --results DIR --name NAME``: per task and
  prompt version, the document length histogram, prompt class shares, the embedding centroid and spread, topic
  clusters (k-means over chunk embeddings) and the retrieval similarity histogram;
- **drift scores** (:func:`drift_scores`) of a job's profiles against the baseline of the same task and
  version: PSI for the distributions, cosine distance between embedding centroids.

PSI (population stability index) = sum over bins of (p - q) * ln(p / q) ; the credit-scoring convention
(Siddiqi, *Credit Risk Scorecards*, 2006) reads < 0.1 as stable, 0.1-0.25 as a moderate shift and > 0.25 as a
significant one. Bin shares are smoothed (half a count per bin) so that an empty bin does not make the index
infinite on small samples.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from mapreduce_llm.embeddings import TextEmbedder
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.planning import DocumentPlan

PROFILE_FILE = "profile.jsonl"
PROFILE_PARTIAL_FILE = "profile.partial.jsonl"
"""Profiles of a running job, appended as they are made; merged into ``profile.jsonl`` when the job ends (and
kept for the rerun when it does not)."""

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

PSI_WARN, PSI_ALERT = 0.1, 0.25
"""PSI thresholds (convention, see the module docstring)."""
CENTROID_WARN, CENTROID_ALERT = 0.1, 0.2
"""Cosine distance between embedding centroids. Calibrated on the shipped drift scenario
(benchmarks/drift_scenario.py): held-out Python docs vs their baseline stay below 0.05, license texts
reach 0.5 and more. Raise them for corpora whose topics vary more."""

SIGNALS: dict[str, str] = {
    "document_length": "PSI of the document length histogram (served-model tokens)",
    "prompt_class": "PSI of the prompt class shares (map prompt length bucket × topic cluster)",
    "embedding_centroid": "cosine distance between the mean chunk embeddings",
    "retrieval_similarity": "PSI of the query-to-chunk similarity histogram",
}
"""The drift signals, each exported as ``mapreduce_llm_drift_score{signal=...}``."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class DocumentProfile(_Model):
    """What one document looked like to the job; one line of ``profile.jsonl``. Numbers only, no text."""

    id: str
    task: str
    version: str
    document_tokens: int
    """The document's length in the served model's tokens (sum of its chunks)."""
    map_prompt_tokens: list[int]
    """Exact prompt length of every map request, in chunk order."""
    chunk_vectors: list[list[float]] | None = None
    """all-MiniLM-L6-v2 embedding of every chunk (unit vectors, 4 decimals); None without embeddings."""
    similarities: list[float] | None = None
    """Cosine similarity of the query (question, or the task description) to every chunk."""
    mean_logprob: float | None = None

    @property
    def key(self) -> str:
        """``task@version``."""
        return f"{self.task}@{self.version}"


class VersionProfile(_Model):
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


class Baseline(_Model):
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


# ---- profiles and baselines ---------------------------------------------------------------------------------
def read_profiles(results_dir: Path) -> list[DocumentProfile]:
    """The document profiles a job wrote into its results folder (all in memory; see :func:`iter_profiles`)."""
    return list(iter_profiles(results_dir))


def iter_profiles(results_dir: Path) -> Iterator[DocumentProfile]:
    """The document profiles a job wrote into its results folder, one at a time, in file order."""
    path = results_dir / PROFILE_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist; run the job with --embed (or --baseline) and --metrics-port/--pushgateway, "
            "or profile the input with `mapreduce-llm drift profile`",
            parameter="results",
        )
    return _read_lines(path)


def _read_lines(path: Path) -> Iterator[DocumentProfile]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield DocumentProfile.model_validate_json(line)


@contextmanager
def _atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` (rename) only once the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_profiles(results_dir: Path, profiles: Iterable[DocumentProfile]) -> Path:
    """Write ``profile.jsonl`` atomically (one line per document, in the given order), streaming."""
    path = results_dir / PROFILE_FILE
    with _atomic_writer(path) as fh:
        for p in profiles:
            fh.write(p.model_dump_json().encode() + b"\n")
    return path


def _profile_id(line: bytes) -> str | None:
    """The document id of one profile line; None for a line that is not a valid profile (cut by a crash)."""
    if not line.strip():
        return None
    try:
        return DocumentProfile.model_validate_json(line).id
    except ValueError:
        return None


def merge_profiles(results_dir: Path, new: Path) -> Path:
    """Merge the profiles in ``new`` (one JSON line per document) into ``profile.jsonl``, atomically.

    A document profiled again replaces its earlier line in place; new documents follow, in ``new``'s order
    (the last line wins when ``new`` has one twice). Invalid lines are dropped. Streams both files: memory
    holds document ids (and offsets), never profiles.
    """
    path = results_dir / PROFILE_FILE
    latest: dict[str, int] = {}  # id -> offset of its last valid line in `new`
    with new.open("rb") as fresh:
        offset = 0
        for line in fresh:
            pid = _profile_id(line)
            if pid is not None:
                latest[pid] = offset
            offset += len(line)
    seen: set[str] = set()
    with _atomic_writer(path) as out, new.open("rb") as fresh:

        def copy(line: bytes) -> None:
            out.write(line if line.endswith(b"\n") else line + b"\n")

        if path.is_file():
            with path.open("rb") as old:
                for line in old:
                    pid = _profile_id(line)
                    if pid is None or pid in seen:
                        continue
                    seen.add(pid)
                    if pid in latest:
                        fresh.seek(latest[pid])
                        copy(fresh.readline())
                    else:
                        copy(line)
        fresh.seek(0)
        offset = 0
        for line in fresh:
            pid = _profile_id(line)
            if pid is not None and pid not in seen and latest[pid] == offset:
                copy(line)
            offset += len(line)
    return path


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


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def baseline_path(directory: Path, name: str) -> Path:
    """``DIR/NAME.json``; the name is checked so that it cannot point outside the folder."""
    if not _NAME.match(name):
        raise ConfigError(
            f"baseline name must be letters, digits, '.', '_' or '-' (at most 100), got {name!r}",
            parameter="baseline",
            value=name,
        )
    return directory / f"{name}.json"


def default_baselines_dir() -> Path:
    """``$MAPREDUCE_LLM_BASELINES``, else ``./baselines``."""
    import os

    return Path(os.environ.get("MAPREDUCE_LLM_BASELINES") or "baselines")


def save_baseline(baseline: Baseline, directory: Path) -> Path:
    """Write ``DIR/NAME.json`` atomically; returns its path."""
    from mapreduce_llm.output import write_atomic

    path = baseline_path(directory, baseline.name)
    write_atomic(path, json.dumps(baseline.model_dump(), indent=1) + "\n")
    return path


def load_baseline(directory: Path, name: str) -> Baseline:
    """Read ``DIR/NAME.json``; a missing or broken file names what to do."""
    path = baseline_path(directory, name)
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []
        raise ConfigError(
            f"baseline {name!r} not found at {path}; create it with `mapreduce-llm drift baseline --results DIR "
            f"--name {name}` (known: {', '.join(known) or 'none'})",
            parameter="baseline",
            value=name,
        )
    try:
        return Baseline.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"baseline {path} is not a valid baseline file: {exc}", parameter="baseline") from None


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
        self.length_counts = [0] * (len(DOCUMENT_TOKEN_EDGES) + 1)
        self.classes: Counter[str] = Counter()
        self.similarity_counts = [0] * (len(SIMILARITY_EDGES) + 1)
        self.similarities = 0
        self.vectors = 0
        self._vector_sum: npt.NDArray[np.float64] | None = None

    def add(self, profile: DocumentProfile) -> None:
        """Count one document's profile."""
        self.documents += 1
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
    of the baseline; profiles of other versions are not scored."""

    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline
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

    def scores(self) -> dict[str, dict[str, float]]:
        """Drift scores per ``task@version`` present in both the job and the baseline."""
        return {key: tally.scores() for key, tally in sorted(self.versions.items())}


def job_drift(baseline: Baseline, profiles: Iterable[DocumentProfile]) -> dict[str, dict[str, float]]:
    """Drift scores per ``task@version`` present in both the job and the baseline; streams ``profiles``."""
    tally = DriftTally(baseline)
    for p in profiles:
        tally.add(p)
    return tally.scores()


def level(signal: str, score: float) -> str:
    """``ok``, ``warn`` or ``alert`` for one score, by the documented thresholds."""
    warn, alert = (CENTROID_WARN, CENTROID_ALERT) if signal == "embedding_centroid" else (PSI_WARN, PSI_ALERT)
    return "alert" if score > alert else "warn" if score > warn else "ok"


# ---- profiling one document -----------------------------------------------------------------------------------
def query_text(plan: DocumentPlan) -> str:
    """What the chunks are compared with (see :func:`mapreduce_llm.retrieval.query_of`)."""
    from mapreduce_llm.retrieval import query_of

    return query_of(plan)[0]


def profile_document(
    plan: DocumentPlan, embedder: TextEmbedder | None, mean_logprob: float | None = None
) -> DocumentProfile:
    """The profile of one planned document; with an embedder, its chunk vectors and query similarities.

    Costs one embedding call of (chunks + 1) texts; only the first 256 word pieces of each chunk are read.
    """
    vectors = similarities = None
    if embedder is not None and plan.chunks:
        text = plan.document.text
        rows = embedder.embed([query_text(plan)] + [text[c.start : c.end] for c in plan.chunks])
        query, chunk_rows = rows[0], rows[1:]
        similarities = [round(float(s), 5) for s in (chunk_rows @ query)]
        vectors = [[round(float(x), 4) for x in row] for row in chunk_rows]
    return DocumentProfile(
        id=plan.document.id,
        task=plan.prompt.task,
        version=plan.prompt.version,
        document_tokens=sum(c.n_tokens for c in plan.chunks),
        map_prompt_tokens=plan.map_prompt_tokens,
        chunk_vectors=vectors,
        similarities=similarities,
        mean_logprob=mean_logprob,
    )


def top_k(similarities: Sequence[float], k: int) -> tuple[float, float]:
    """(best similarity, mean of the best ``k``) of one query against its chunks."""
    ordered = sorted(similarities, reverse=True)[: max(1, k)]
    return ordered[0], sum(ordered) / len(ordered)
