"""Result records and how they are written.

``DIR/results.jsonl`` has one line per input document, in input order; ``DIR/summary.json`` describes the
job. Both are written atomically (temporary file, then rename). While a job runs, every finished document
is appended to ``DIR/results.partial.jsonl``; a rerun with the same output folder reuses its successful
records (same prompt version and model) instead of recomputing them, then the file is removed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RESULTS_FILE = "results.jsonl"
PARTIAL_FILE = "results.partial.jsonl"
SUMMARY_FILE = "summary.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class PromptInfo(_Record):
    """Which prompt produced a result."""

    name: str
    version: str


class Provenance(_Record):
    """A chunk whose text fed the output: id and character span in the document."""

    chunk_id: str
    start: int
    end: int


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
    provenance: list[Provenance] = Field(default_factory=list)
    """Chunks whose map outputs fed the final output, with their character spans."""
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    metadata: dict[str, Any] = Field(default_factory=dict)
    """The input document's other fields, unchanged."""


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
    """Documents whose successful result was reused from an earlier interrupted run."""
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


class ResultLog:
    """Appends finished results to the partial log as they come, and writes the final files."""

    def __init__(self, output_dir: Path) -> None:
        self.dir = output_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._partial = self.dir / PARTIAL_FILE
        self._fh = self._partial.open("a", encoding="utf-8")

    def previous_successes(self, model: str | None) -> dict[tuple[str, str | None], DocumentResult]:
        """Successful results of an earlier run of this job with the same model, keyed by (id, source);
        the caller reuses one only if its prompt version is the one the document gets now."""
        found: dict[tuple[str, str | None], DocumentResult] = {}
        for path in (self.dir / RESULTS_FILE, self._partial):
            if not path.is_file():
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = DocumentResult.model_validate_json(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if rec.status == "ok" and rec.model == model:
                    found[(rec.id, rec.source)] = rec
        return found

    def append(self, result: DocumentResult) -> None:
        """Record one finished document (flushed, so an interrupted job loses nothing done)."""
        self._fh.write(result.model_dump_json() + "\n")
        self._fh.flush()

    def finish(self, results: list[DocumentResult], summary: JobSummary) -> None:
        """Write results.jsonl and summary.json atomically, then drop the partial log."""
        write_atomic(self.dir / RESULTS_FILE, "".join(r.model_dump_json() + "\n" for r in results))
        write_atomic(self.dir / SUMMARY_FILE, json.dumps(summary.model_dump(), indent=2) + "\n")
        self._fh.close()
        if summary.status == "completed":
            self._partial.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the partial log (kept for resuming)."""
        if not self._fh.closed:
            self._fh.close()
