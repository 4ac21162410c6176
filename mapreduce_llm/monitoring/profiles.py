"""Document profiles: what each document looked like to the job, in ``DIR/profile.jsonl``, numbers only.

A profile (:class:`DocumentProfile`) holds a document's token lengths and — with embeddings on — the embedding
of every chunk and the query-to-chunk similarities; never text (results.jsonl has no chunk text to recompute
them from, and re-reading the input later could see different files). Baselines and drift scores
(:mod:`mapreduce_llm.monitoring.drift`) are computed from profiles.

:class:`ProfileObserver` profiles the documents a job computes in one worker thread beside the job. Chunks the
job's retrieval already scored are not embedded again (:class:`~mapreduce_llm.retrieval.ScoredPlan`). Its memory
does not grow with the corpus: at most :data:`PROFILE_QUEUE` documents wait to be profiled, each profile is
appended to ``DIR/profile.partial.jsonl`` as it is made, and the final merge into ``profile.jsonl`` streams.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import structlog

from mapreduce_llm.atomic import atomic_writer
from mapreduce_llm.common import RecordModel
from mapreduce_llm.embeddings import TextEmbedder
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.planning import DocumentPlan
from mapreduce_llm.prompts import PromptRef
from mapreduce_llm.results import DocumentResult, JobSummary
from mapreduce_llm.retrieval import chunk_scores, scores_of

log = structlog.get_logger(__name__)

PROFILE_FILE = "profile.jsonl"
PROFILE_PARTIAL_FILE = "profile.partial.jsonl"
"""Profiles of a running job, appended as they are made; merged into ``profile.jsonl`` when the job ends (and
kept for the rerun when it does not)."""
PROFILE_QUEUE = 32
"""Documents waiting to be profiled at most. When the worker thread falls this far behind, the job waits for
it (the plans of queued documents, token ids and all, are what the queue holds). Embedding a document's
chunks is much quicker than generating its outputs, so a job should rarely wait; the bound matters when
the engine outpaces the embedder (or the embedder stalls)."""


class DocumentProfile(RecordModel):
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


def profile_document(
    plan: DocumentPlan, embedder: TextEmbedder | None, mean_logprob: float | None = None
) -> DocumentProfile:
    """The profile of one planned document; with an embedder, its chunk vectors and query similarities.

    Chunks the job's retrieval scored (a :class:`~mapreduce_llm.retrieval.ScoredPlan`) are not embedded again:
    their similarities are in the profile with or without an embedder, their vectors with one. Otherwise an
    embedder costs one call of (chunks + 1) texts; only the first 256 word pieces of each chunk are read.
    """
    scores = scores_of(plan)
    if scores is None and embedder is not None and plan.chunks:
        scores = chunk_scores(embedder, plan)
    vectors = None
    if embedder is not None and scores is not None:
        vectors = [[round(float(x), 4) for x in row] for row in scores.vectors]
    return DocumentProfile(
        id=plan.document.id,
        task=plan.prompt.task,
        version=plan.prompt.version,
        document_tokens=sum(c.n_tokens for c in plan.chunks),
        map_prompt_tokens=plan.map_prompt_tokens,
        chunk_vectors=vectors,
        similarities=scores.similarities if scores is not None else None,
        mean_logprob=mean_logprob,
    )


# ---- profile.jsonl ------------------------------------------------------------------------------------------
def read_profiles(results_dir: Path) -> list[DocumentProfile]:
    """The document profiles a job wrote into its results folder (all in memory; see :func:`iter_profiles`)."""
    return list(iter_profiles(results_dir))


def iter_profiles(results_dir: Path) -> Iterator[DocumentProfile]:
    """The document profiles a job wrote into its results folder, one at a time, in file order."""
    path = results_dir / PROFILE_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist; run the job with monitoring on (monitoring.embed: true or a baseline in its "
            "spec; --embed or --baseline), or profile the input with `mapreduce-llm drift profile`",
            parameter="results",
        )
    return _read_lines(path)


def _read_lines(path: Path) -> Iterator[DocumentProfile]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield DocumentProfile.model_validate_json(line)


def write_profiles(results_dir: Path, profiles: Iterable[DocumentProfile]) -> Path:
    """Write ``profile.jsonl`` atomically (one line per document, in the given order), streaming."""
    path = results_dir / PROFILE_FILE
    with atomic_writer(path) as fh:
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
    with atomic_writer(path) as out, new.open("rb") as fresh:

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


# ---- profiling a running job --------------------------------------------------------------------------------
ProfileSink = Callable[[DocumentProfile, DocumentPlan], None]
"""Told about every profile as it is made, with the document's plan (in the worker thread)."""


class ProfileObserver:
    """Profiles every document a job computes, beside the job; a :class:`~mapreduce_llm.observers.JobObserver`.

    ``embedder``: chunk vectors and similarities for the profiles (reusing the job's retrieval scores where it
    made them); None: token counts only, plus similarities the retrieval computed. ``sinks`` hear each profile
    (metrics, the drift tally). ``output_dir``: where the profile files go (None: nowhere). Profiling runs in one
    worker thread so that the event loop keeps feeding the engine; ``queue_size`` bounds the documents waiting.

    A failure of the worker (the embedder, a sink) stops the profiling: it is logged, kept in :attr:`failure`
    for whoever runs the job to raise once the results are written (:func:`mapreduce_llm.monitoring.monitored`
    does), and the documents after it are not profiled. No document's result suffers from it.
    """

    def __init__(
        self,
        embedder: TextEmbedder | None = None,
        *,
        sinks: Sequence[ProfileSink] = (),
        output_dir: Path | None = None,
        queue_size: int = PROFILE_QUEUE,
    ) -> None:
        if queue_size < 1:
            raise ConfigError(
                f"queue_size must be at least 1, got {queue_size}", parameter="queue_size", value=queue_size
            )
        self.embedder = embedder
        self.sinks = list(sinks)
        self.output_dir = output_dir
        self.queue_size = queue_size
        self.profiled = 0
        """Profiles made by this run."""
        self.failure: BaseException | None = None
        """What stopped the worker, if anything did."""
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="profile")
        self._pending: deque[Future[None]] = deque()
        self._partial: TextIO | None = None

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        """Nothing: profiles are made of documents."""

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        """Queue a planned document for its profile. Called on the job's event loop: when ``queue_size``
        documents already wait, it blocks until the oldest is done."""
        if plan is None or self.failure is not None:
            return
        self._make_room()
        self._pending.append(self._pool.submit(self._profile, plan, result.mean_logprob))

    def _make_room(self) -> None:
        """Forget profiling jobs that are done (a finished future holds no plan) and wait for the oldest while
        the queue is full; one worker finishes them in order."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.queue_size):
            self._settle(self._pending.popleft())

    def _settle(self, future: Future[None]) -> None:
        try:
            future.result()
        except Exception as exc:
            if self.failure is None:
                self.failure = exc
                log.error("profile.failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)

    def _profile(self, plan: DocumentPlan, mean_logprob: float | None) -> None:
        if self.failure is None:
            self.add_profile(profile_document(plan, self.embedder, mean_logprob), plan)

    def add_profile(self, profile: DocumentProfile, plan: DocumentPlan) -> None:
        """Keep one document's profile: tell the sinks, append it to the partial profile file."""
        with self._lock:
            for sink in self.sinks:
                sink(profile, plan)
            self.profiled += 1
            if self.output_dir is not None:
                if self._partial is None:
                    self.output_dir.mkdir(parents=True, exist_ok=True)
                    # Appends: the profiles of an interrupted run are merged by the run that completes it.
                    self._partial = (self.output_dir / PROFILE_PARTIAL_FILE).open("a", encoding="utf-8")
                self._partial.write(profile.model_dump_json() + "\n")
                self._partial.flush()

    def drain(self) -> None:
        """Wait until every queued document is profiled (or the worker has failed)."""
        while self._pending:
            self._settle(self._pending.popleft())

    def job_done(self, summary: JobSummary) -> None:
        """Finish profiling and merge this run's profiles into ``profile.jsonl`` (after a failure too: what
        was profiled is kept)."""
        self.close()
        partial = self.output_dir / PROFILE_PARTIAL_FILE if self.output_dir is not None else None
        if partial is not None and partial.is_file():
            merge_profiles(partial.parent, partial)
            partial.unlink()

    def close(self) -> None:
        """Wait for the worker and stop it; close the partial file (a job that never finished keeps it)."""
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)
            if self._partial is not None:
                self._partial.close()
                self._partial = None
