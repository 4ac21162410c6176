"""Result records and how they are written.

``DIR/results.jsonl`` has one line per input document, in input order; ``DIR/summary.json`` describes the
job. Both are written atomically (temporary file, then rename). While a job runs, every finished document
is appended to ``DIR/results.partial.jsonl``; a rerun with the same output folder reuses a successful record
only when its input and settings fingerprints (:mod:`mapreduce_llm.fingerprints`) both match, and recomputes
the rest. One job at a time writes into a folder (``DIR/.lock``, held for the job's duration).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field

from mapreduce_llm.errors import OutputInUseError

RESULTS_FILE = "results.jsonl"
PARTIAL_FILE = "results.partial.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
OWNER_FILE = ".lock.json"
INDEX_FILE = ".resume-index.sqlite"

RecomputeReason = Literal["input_changed", "settings_changed", "previous_error", "older_format"]
"""Why a document that has a result from an earlier run in the folder is computed again."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class PromptInfo(_Record):
    """Which prompt produced a result."""

    name: str
    version: str


class Provenance(_Record):
    """A chunk whose text fed the output: id and character span in the document.

    For ``output: answer`` prompts the span is the evidence quote's, found in the document, and ``quote``
    is that text.
    """

    chunk_id: str
    start: int
    end: int
    quote: str | None = None


class MapAnswer(_Record):
    """What one chunk's map call answered (``output: answer`` prompts), and what became of it."""

    chunk_id: str
    status: Literal["kept", "not_found", "unsupported", "low_confidence", "off_topic", "parse_failure"]
    """``kept``: passed to the reducer. ``unsupported``: its quote or answer is not in the chunk.
    ``low_confidence``: under the calibrated confidence. ``off_topic``: its quote is less similar to the
    question than calibrated. ``parse_failure``: no valid record."""
    answer: str | None = None
    confidence: float | None = None
    """Mean logprob of the answer's tokens."""
    evidence_similarity: float | None = None
    """Cosine similarity of the evidence quote to the question (when it was checked)."""
    detail: str | None = None
    """Why it was not kept (e.g. the parse error)."""


class RetrievalInfo(_Record):
    """How the document's chunks compare with its query (``retrieval.similarity``)."""

    query: Literal["question", "prompt", "task"]
    """What the chunks were compared with: the question, the prompt's ``query`` template, or the task's
    description."""
    mode: Literal["all", "top_k"]
    similarities: list[float]
    """Cosine similarity of the query to each chunk, in chunk order."""
    mapped: list[int]
    """Indices of the chunks that were mapped (all of them in mode ``all``)."""


class ReretrievalRound(_Record):
    """One re-retrieval: the query, the passages it found, and the answer from them."""

    query: str
    passages: list[Provenance]
    answer: str | None = None
    confidence: float | None = None
    evidence_similarity: float | None = None
    accepted: bool = False
    """True when this answer replaced the previous one (supported by the passages and more confident)."""
    detail: str | None = None


class ReretrievalInfo(_Record):
    """Whether re-retrieval ran for a document, why, and what each round did."""

    triggered: bool
    reason: str
    rounds: list[ReretrievalRound] = Field(default_factory=list)


class Usage(_Record):
    """Engine work spent on one document."""

    requests: dict[str, int] = Field(default_factory=dict)
    """Engine requests per stage (map, collapse, reduce)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Prompt tokens vLLM served from its prefix cache."""
    requests_from_cache: int = 0
    """Requests answered from the job's output cache (finished in an earlier run) instead of the engine."""


class Timings(_Record):
    """Wall-clock seconds for one document."""

    plan_s: float = 0.0
    map_s: float = 0.0
    reduce_s: float = 0.0
    total_s: float = 0.0


class ErrorInfo(_Record):
    """Why a document failed: a stable code and a message naming what is wrong and what to do."""

    code: str
    message: str


class Fingerprints(_Record):
    """What a result was computed from (see :mod:`mapreduce_llm.fingerprints`); a rerun reuses the result
    only when both still match."""

    input: str
    """Hash of the document's text, question and metadata."""
    settings: str
    """Hash of the prompt version's content and calibration, sampling, output reserve, context length,
    chunking, retrieval and reduce settings, and the model's identity (from its files)."""


class DocumentResult(_Record):
    """One line of results.jsonl."""

    id: str
    status: Literal["ok", "error"]
    output: str | None = None
    """The final output (status ok)."""
    error: ErrorInfo | None = None
    """What went wrong (status error)."""
    source: str | None = None
    """Where the document was read from (file, or file:line)."""
    prompt: PromptInfo | None = None
    model: str | None = None
    question: str | None = None
    chunks: int = 0
    """Number of chunks the document was cut into."""
    levels: int = 0
    """Reduce levels used: 0 when the single chunk's map output is final, 1 for one reduce call,
    more when partial outputs were collapsed first."""
    not_found: bool | None = None
    """Question answering: True when no chunk contained an answer."""
    mean_logprob: float | None = None
    """Mean token logprob of the final output (confidence signal; higher is surer)."""
    confidence: float | None = None
    """``output: answer`` prompts: mean logprob of the final answer's tokens (the reduce call's, or the
    chosen map answer's when only one was kept, or the accepted re-retrieval's)."""
    provenance: list[Provenance] = Field(default_factory=list)
    """Chunks whose map outputs fed the final output, with their character spans; for ``output: answer``
    prompts, the evidence quotes the final answer rests on."""
    answers: list[MapAnswer] = Field(default_factory=list)
    """``output: answer`` prompts: every mapped chunk's answer, best confidence first."""
    parse_failures: int = 0
    """Engine outputs that held no valid answer record."""
    retrieval: RetrievalInfo | None = None
    reretrieval: ReretrievalInfo | None = None
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    metadata: dict[str, Any] = Field(default_factory=dict)
    """The input document's other fields, unchanged."""
    fingerprints: Fingerprints | None = None
    """What the result was computed from; None on records of documents that could not be read."""


class JobSummary(_Record):
    """summary.json: what one job did."""

    job_id: str
    status: Literal["completed", "failed"]
    input: str
    output: str
    prompt: str
    """The prompt reference the job ran: ``task``, ``task@label`` or ``task@version``."""
    documents_by_version: dict[str, int] = Field(default_factory=dict)
    """Documents per prompt version that ran them (``task@version``), e.g. under a canary rollout."""
    model: str | None
    max_model_len: int
    started_at: float
    finished_at: float
    seconds: float
    documents: int
    ok: int
    errors: int
    resumed: int = 0
    """Documents whose successful result was reused from an earlier run into this folder (same input and
    settings fingerprints)."""
    recomputed: dict[str, int] = Field(default_factory=dict)
    """Documents that had a result from an earlier run here but were computed again, by reason:
    ``input_changed``, ``settings_changed``, ``previous_error`` (the earlier result was an error) or
    ``older_format`` (the earlier result has no fingerprints)."""
    errors_by_code: dict[str, int] = Field(default_factory=dict)
    chunks: int = 0
    requests: dict[str, int] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    requests_from_cache: int = 0
    """Engine requests answered from the output cache (finished by an earlier, interrupted run)."""
    requests_sent: int = 0
    """Engine requests actually sent to the engine by this run."""
    max_levels: int = 0
    fatal_error: str | None = None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OutputLock:
    """The output folder's writer lock: one job at a time writes into a folder.

    ``DIR/.lock`` is held with an OS file lock (``filelock``) for the job's duration, so the kernel releases it
    when the process dies, even by SIGKILL; ``DIR/.lock.json`` names the job holding it, for the error a
    second job gets.
    """

    def __init__(self, folder: Path, job_id: str) -> None:
        self.folder = folder
        self.job_id = job_id
        self._lock = FileLock(str(folder / LOCK_FILE), timeout=0)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OutputInUseError` naming the job that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise OutputInUseError(self._busy_message()) from None
        owner = {"job_id": self.job_id, "pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}
        write_atomic(self.folder / OWNER_FILE, json.dumps(owner) + "\n")

    def check(self) -> None:
        """Raise :class:`OutputInUseError` now if another job holds the folder (before starting an engine for
        minutes only to be refused); the job takes the lock itself when it starts writing."""
        self.acquire()
        self.release()

    def _busy_message(self) -> str:
        try:
            owner = json.loads((self.folder / OWNER_FILE).read_text(encoding="utf-8"))
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner["started_at"])))
            who = f"job {owner['job_id']!r} (pid {owner['pid']} on {owner['host']}, started {started})"
        except (OSError, ValueError, KeyError, TypeError):
            who = "another job"
        return (
            f"output folder {self.folder} is in use by {who}; wait for it to finish or stop it, "
            "or give this job another output folder"
        )

    def release(self) -> None:
        """Let the next job in."""
        (self.folder / OWNER_FILE).unlink(missing_ok=True)
        self._lock.release()


class PreviousResults:
    """The results an earlier run left in the output folder, indexed by document id on disk (SQLite), so a
    resume of a large corpus holds no record in memory until it is reused."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / INDEX_FILE
        self.path.unlink(missing_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE previous (id TEXT PRIMARY KEY, file TEXT, offset INTEGER, status TEXT, "
            "input TEXT, settings TEXT)"
        )
        self.count = 0

    def index(self, files: list[Path]) -> int:
        """Index the records of ``files`` (later files win: the partial log is newer); returns how many."""
        self._db.execute("BEGIN")
        for path in files:
            if not path.is_file():
                continue
            with path.open("rb") as fh:
                offset = 0
                for line in fh:
                    self._add(path, offset, line)
                    offset += len(line)
        self._db.execute("COMMIT")
        self.count = int(self._db.execute("SELECT COUNT(*) FROM previous").fetchone()[0])
        return self.count

    def _add(self, path: Path, offset: int, line: bytes) -> None:
        try:
            rec = json.loads(line)
            doc_id, status = rec["id"], rec["status"]
        except (ValueError, KeyError, TypeError):
            return  # a line cut short by a crash
        fingerprints = rec.get("fingerprints") or {}
        self._db.execute(
            "INSERT OR REPLACE INTO previous VALUES (?, ?, ?, ?, ?, ?)",
            (str(doc_id), str(path), offset, str(status), fingerprints.get("input"), fingerprints.get("settings")),
        )

    def lookup(self, document_id: str, input_fp: str, settings_fp: str) -> DocumentResult | RecomputeReason | None:
        """The earlier result of this document when it can be reused; else why not (None: there is none)."""
        row = self._db.execute(
            "SELECT file, offset, status, input, settings FROM previous WHERE id = ?", (document_id,)
        ).fetchone()
        if row is None:
            return None
        file, offset, status, old_input, old_settings = row
        if status != "ok":
            return "previous_error"
        if old_input is None or old_settings is None:
            return "older_format"
        if old_input != input_fp:
            return "input_changed"
        if old_settings != settings_fp:
            return "settings_changed"
        with Path(file).open("rb") as fh:
            fh.seek(offset)
            return DocumentResult.model_validate_json(fh.readline())

    def close(self) -> None:
        """Close and delete the index."""
        self._db.close()
        self.path.unlink(missing_ok=True)


class ResultLog:
    """Where finished documents go, with memory that does not grow with the corpus.

    Each finished document is appended (and flushed) to ``results.partial.jsonl`` at once, so an interrupted
    job loses nothing done. Results are also written in input order to a temporary file through a reorder
    buffer (documents finish out of order only within the set in flight; the job stops reading while the
    buffer is full); ``finish`` renames it to ``results.jsonl``, so that file is only ever replaced whole.

    Opening the log takes the folder's :class:`OutputLock` (a second job into the folder is refused) and
    indexes the earlier run's results for :meth:`previous`.
    """

    def __init__(self, output_dir: Path, job_id: str | None = None) -> None:
        self.dir = output_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = OutputLock(self.dir, job_id or self.dir.name)
        self._lock.acquire()
        try:
            self._partial = self.dir / PARTIAL_FILE
            for stale in self.dir.glob(f".{RESULTS_FILE}.*"):
                stale.unlink(missing_ok=True)  # left by a run that was killed before it could clean up
            self.previous = PreviousResults(self.dir)
            self.previous.index([self.dir / RESULTS_FILE, self._partial])
            self._fh = self._partial.open("a", encoding="utf-8")
            fd, tmp = tempfile.mkstemp(prefix=f".{RESULTS_FILE}.", dir=self.dir)
        except BaseException:
            self._lock.release()
            raise
        self._tmp = Path(tmp)
        self._ordered = os.fdopen(fd, "w", encoding="utf-8")
        self._pending: dict[int, DocumentResult] = {}
        self._next = 0
        self.peak_buffered = 0
        """Most results held at once waiting for an earlier document (memory check)."""

    def add(self, index: int, result: DocumentResult, *, fresh: bool = True) -> None:
        """Record the result of input document number ``index`` (``fresh``: computed by this run)."""
        if fresh:
            self._fh.write(result.model_dump_json() + "\n")
            self._fh.flush()
        self._pending[index] = result
        self.peak_buffered = max(self.peak_buffered, len(self._pending))
        while self._next in self._pending:
            self._ordered.write(self._pending.pop(self._next).model_dump_json() + "\n")
            self._next += 1

    @property
    def buffered(self) -> int:
        """Results waiting for an earlier document to finish before they can be written in order."""
        return len(self._pending)

    def finish(self, summary: JobSummary) -> None:
        """Publish results.jsonl (rename) and summary.json atomically, then drop the partial log."""
        if self._pending:
            raise RuntimeError(f"results missing before document {self._next}; {len(self._pending)} buffered")
        try:
            self._ordered.flush()
            os.fsync(self._ordered.fileno())
            self._ordered.close()
            self.previous.close()
            self._tmp.replace(self.dir / RESULTS_FILE)
            write_atomic(self.dir / SUMMARY_FILE, json.dumps(summary.model_dump(), indent=2) + "\n")
            self._fh.close()
            self._partial.unlink(missing_ok=True)
        finally:
            self._lock.release()

    def abandon(self, summary: JobSummary) -> None:
        """The job failed: keep the partial log for resuming, drop the incomplete ordered file."""
        try:
            self._ordered.close()
            self._tmp.unlink(missing_ok=True)
            self._fh.close()
            self.previous.close()
            write_atomic(self.dir / SUMMARY_FILE, json.dumps(summary.model_dump(), indent=2) + "\n")
        finally:
            self._lock.release()
