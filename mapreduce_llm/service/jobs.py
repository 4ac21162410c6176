"""The bridge to Ray: submit a batch's job, ask how it is doing, stop it, and read what it has finished.

Each job of a batch is an ordinary ``mapreduce-llm run`` submitted through Ray's Jobs API
(:func:`mapreduce_llm.submission.submit`, token auth as ``cluster submit`` does). Its input is the batch's
document file and its output folder is in the service's state folder: the job's driver writes them there, and
the service reads the same folder — ``results.partial.jsonl`` while the job runs (one line per finished document,
flushed at once), ``results.jsonl`` when it is done — to count finished documents and to write the output file.
So the state folder must be a path the job's driver sees at the same place: this machine for the service's own
local head; a shared volume mounted at the same path on the head (driver) node for a remote cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from mapreduce_llm.config import JobSpec
from mapreduce_llm.output import PARTIAL_FILE, RESULTS_FILE
from mapreduce_llm.results import DocumentResult

JobStatus = Literal["pending", "running", "succeeded", "failed", "stopped", "missing"]
"""A job's state as the service needs it; ``missing``: the cluster does not know the submission (e.g. a new head)."""

ACTIVE: frozenset[JobStatus] = frozenset({"pending", "running"})


@dataclass(frozen=True, slots=True)
class JobState:
    status: JobStatus
    message: str | None = None


class JobRunner(Protocol):
    """Runs a batch's jobs: the real one is :class:`RayJobRunner`; tests inject a fake."""

    def submit(self, spec: JobSpec, submission_id: str) -> str:
        """Start a job for ``spec``; returns its submission id."""

    def state(self, submission_id: str) -> JobState:
        """How the job is doing (raises :class:`~mapreduce_llm.submission.SubmissionError` when the cluster
        cannot be asked)."""

    def stop(self, submission_id: str) -> None:
        """Ask the job to stop (nothing when it has ended)."""


_RAY_STATUS: dict[str, JobStatus] = {
    "PENDING": "pending",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "STOPPED": "stopped",
}


class RayJobRunner:
    """Jobs on the Ray cluster whose dashboard is at ``address``; the token comes from the environment as for
    ``cluster submit`` (``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``)."""

    def __init__(self, address: str, env: dict[str, str] | None = None) -> None:
        self.address = address
        self.env = env or {}

    def submit(self, spec: JobSpec, submission_id: str) -> str:
        from mapreduce_llm import submission

        # The input is in the state folder, which the driver reads in place (see the module docs).
        return submission.submit(spec, self.address, env=self.env, upload_input=False, submission_id=submission_id)

    def state(self, submission_id: str) -> JobState:
        from mapreduce_llm import submission

        try:
            info = submission.job_info(self.address, submission_id)
        except submission.SubmissionError as exc:
            text = str(exc)
            if "404" in text or "does not exist" in text or "not found" in text.lower():
                return JobState("missing", text)
            raise
        status = str(getattr(info.status, "value", info.status))
        return JobState(_RAY_STATUS.get(status, "running"), info.message)

    def stop(self, submission_id: str) -> None:
        from mapreduce_llm import submission

        submission.stop_job(self.address, submission_id)


@dataclass
class _Seen:
    offset: int = 0
    results_size: int = -1
    ok: dict[str, bool] = field(default_factory=dict)


class ProgressReader:
    """Finished documents of jobs, from their output folders, reading only what was appended since last time."""

    def __init__(self) -> None:
        self._seen: dict[Path, _Seen] = {}

    def counts(self, out: Path) -> tuple[int, int]:
        """(ok, failed) documents the job writing into ``out`` has finished so far."""
        seen = self._seen.setdefault(out, _Seen())
        results = out / RESULTS_FILE
        try:
            size = results.stat().st_size
        except OSError:
            size = -1
        if size >= 0 and size != seen.results_size:
            seen.results_size = size
            for _, _, record in _complete_lines(results, 0):
                seen.ok[str(record.get("id"))] = record.get("status") == "ok"
        partial = out / PARTIAL_FILE
        if partial.is_file():
            if partial.stat().st_size < seen.offset:
                seen.offset = 0  # a new log
            for _, end, record in _complete_lines(partial, seen.offset):
                seen.ok[str(record.get("id"))] = record.get("status") == "ok"
                seen.offset = end
        ok = sum(seen.ok.values())
        return ok, len(seen.ok) - ok

    def forget_under(self, folder: Path) -> None:
        """Drop what was read of the output folders below ``folder`` (a deleted batch)."""
        for out in [out for out in self._seen if out.is_relative_to(folder)]:
            del self._seen[out]


def _complete_lines(path: Path, start: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(offset of the line, offset after it, record) for each complete line from ``start`` (a line cut short is
    left for later)."""
    try:
        fh = path.open("rb")
    except OSError:
        return
    with fh:
        fh.seek(start)
        offset = start
        for line in fh:
            if not line.endswith(b"\n"):
                return
            begin, offset = offset, offset + len(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield begin, offset, record


class FinishedResults:
    """The results a job left in ``out`` (results.jsonl, then the partial log: later lines win), looked up by
    document id without holding them in memory (an index of file offsets)."""

    def __init__(self, out: Path) -> None:
        self._where: dict[str, tuple[Path, int]] = {}
        for path in (out / RESULTS_FILE, out / PARTIAL_FILE):
            for begin, _, record in _complete_lines(path, 0):
                self._where[str(record.get("id"))] = (path, begin)

    def get(self, document_id: str) -> DocumentResult | None:
        found = self._where.get(document_id)
        if found is None:
            return None
        path, offset = found
        with path.open("rb") as fh:
            fh.seek(offset)
            return DocumentResult.model_validate_json(fh.readline())
