"""The output folder: its file names, the writer lock, the resume index and the result log.

``DIR/results.jsonl`` has one line per input document, in input order; ``DIR/summary.json`` describes the
job; with ``output_format: batch``, ``DIR/batch_output.jsonl`` and ``DIR/batch_errors.jsonl`` hold the results as
OpenAI batch lines (:mod:`mapreduce_llm.batch_lines`). All are written atomically (temporary file, then rename).
While a job runs, every finished document is appended to ``DIR/results.partial.jsonl``; a rerun with the same
output folder reuses a successful record only when its input and settings fingerprints
(:mod:`mapreduce_llm.fingerprints`) both match, and recomputes the rest. One job at a time writes into a folder
(``DIR/.lock``, held for the job's duration).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from mapreduce_llm.atomic import write_atomic
from mapreduce_llm.batch_lines import write_batch_files
from mapreduce_llm.common import RecomputeReason
from mapreduce_llm.errors import ConfigError, OutputInUseError
from mapreduce_llm.results import DocumentResult, JobSummary

RESULTS_FILE = "results.jsonl"
"""One result per input document, in input order; replaced whole when a job completes."""
PARTIAL_FILE = "results.partial.jsonl"
"""Every document's result as it finishes (in finishing order), while the job runs; what a rerun resumes from."""
BATCH_OUTPUT_FILE = "batch_output.jsonl"
"""``output_format: batch``: the documents that succeeded, as OpenAI batch output lines, in input order."""
BATCH_ERRORS_FILE = "batch_errors.jsonl"
"""``output_format: batch``: every other input line, as an OpenAI batch error line, in input order."""
SUMMARY_FILE = "summary.json"
"""The :class:`~mapreduce_llm.results.JobSummary` of the last run into the folder."""
LOCK_FILE = ".lock"
"""The OS file lock one writing job holds."""
OWNER_FILE = ".lock.json"
"""Which job holds the lock (for the error a second job gets)."""
INDEX_FILE = ".resume-index.sqlite"
"""The earlier run's results indexed by document id, while a job runs."""
_OTHER_LINE_CODES = frozenset({"duplicate_id", "duplicate_custom_id"})
"""Error records that share a document's id but are about another input line (not indexed for resuming)."""


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
        """Take the lock, or raise :class:`OutputInUseError` naming the job that holds it (ConfigError when the
        folder cannot be created or written here)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:
            raise OutputInUseError(self._busy_message()) from None
        except OSError as exc:
            raise ConfigError(
                f"output folder {self.folder} cannot be created or written on {socket.gethostname()}, where the "
                f"job's driver runs ({exc.strerror or exc}); give a folder this machine can write: on a cluster, a "
                "path on storage mounted on the driver's node (the head, for jobs sent with `cluster submit`), "
                "shared with the machines that read the results",
                parameter="output",
                value=str(self.folder),
            ) from None
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
        if (rec.get("error") or {}).get("code") in _OTHER_LINE_CODES:
            return  # a later line with the same id: the record of the document itself is the one to reuse
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
    indexes the earlier run's results for :meth:`previous`. ``batch_output``: ``finish`` also writes the batch
    output and error files from results.jsonl (request ids derived from the job id); without it, such files an
    earlier run left are removed, since they would no longer match results.jsonl.
    """

    def __init__(self, output_dir: Path, job_id: str | None = None, *, batch_output: bool = False) -> None:
        self.dir = output_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.job_id = job_id or self.dir.name
        self.batch_output = batch_output
        self._lock = OutputLock(self.dir, self.job_id)
        self._lock.acquire()
        try:
            self._partial = self.dir / PARTIAL_FILE
            for name in (RESULTS_FILE, BATCH_OUTPUT_FILE, BATCH_ERRORS_FILE):
                for stale in self.dir.glob(f".{name}.*"):
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
        """Publish results.jsonl (rename), the batch files and summary.json atomically, then drop the partial log."""
        if self._pending:
            raise RuntimeError(f"results missing before document {self._next}; {len(self._pending)} buffered")
        try:
            self._ordered.flush()
            os.fsync(self._ordered.fileno())
            self._ordered.close()
            self.previous.close()
            self._tmp.replace(self.dir / RESULTS_FILE)
            batch_files = (self.dir / BATCH_OUTPUT_FILE, self.dir / BATCH_ERRORS_FILE)
            if self.batch_output:
                write_batch_files(self.dir / RESULTS_FILE, *batch_files, batch_id=self.job_id)
            else:
                for path in batch_files:
                    path.unlink(missing_ok=True)
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
