"""The service's state folder: files, batches and their jobs' output, kept across restarts.

One JSON file per object, each written atomically (temporary file + rename), in a tree an operator can read,
back up with ``cp`` and clean with ``rm``::

    STATE/files/file-….json            the file object        STATE/files/file-….jsonl   its content
    STATE/batches/batch_…/batch.json   the batch and its jobs (:class:`BatchRecord`)
    STATE/batches/batch_…/parts/N/     input.jsonl (the documents of job N) and out/ (that job's output folder)
    STATE/idempotency/SHA256.json      an Idempotency-Key's batch

Why files rather than SQLite: a batch's bulk data — its documents and the output folder its Ray job writes — are
files that must sit on a path the cluster can reach (a shared volume for a remote cluster), so the records
sit beside them, and a crash between two writes leaves each object whole (rename is atomic) without a database
to repair. Listing batches reads every ``batch.json`` (O(batches)); retention keeps that small.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mapreduce_llm.atomic import write_atomic
from mapreduce_llm.service.formats import Batch, FileObject

_M = TypeVar("_M", bound=BaseModel)
_FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
_BATCH_ID = re.compile(r"^batch_[0-9a-f]{24}$")

PartStatus = Literal["waiting", "running", "succeeded", "failed", "stopped"]
Ending = Literal["cancelled", "expired"]


class Part(BaseModel):
    """One Ray job of a batch: the lines with one prompt and one set of per-request settings."""

    model_config = ConfigDict(extra="forbid")

    index: int
    prompt: str
    settings: dict[str, Any] = Field(default_factory=dict)
    """Job spec fields by dotted path (from the lines' bodies)."""
    lines: int = 0
    status: PartStatus = "waiting"
    submission_id: str | None = None
    attempts: int = 0
    """Submissions so far (a job the cluster lost, e.g. after a restart of the service's own head, is sent again;
    the job resumes from its output folder)."""
    message: str | None = None


class BatchRecord(BaseModel):
    """What the service keeps about a batch: the API's view and its jobs."""

    model_config = ConfigDict(extra="forbid")

    batch: Batch
    parts: list[Part] = Field(default_factory=list)
    rejected: int = 0
    """Input lines rejected by validation (counted in request_counts.failed)."""
    ending: Ending | None = None
    """Set when the batch is being cancelled or has expired: its job is stopped, then the files written."""
    stop_requested_at: int | None = None
    output_expires_after: int | None = None
    """Seconds the output and error files are kept (default: the service's retention)."""
    finished_at: int | None = None


class IdempotencyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: str
    request_hash: str


class Store:
    """The state folder (see the module docs). Not locked: one service process owns it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("files", "batches", "idempotency"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # --- files ---------------------------------------------------------------------------------------

    @staticmethod
    def new_file_id() -> str:
        return "file-" + secrets.token_hex(12)

    def content_path(self, file_id: str) -> Path:
        """Where a file's content is (or goes)."""
        if not _FILE_ID.match(file_id):
            raise KeyError(file_id)
        return self.root / "files" / f"{file_id}.jsonl"

    def save_file(self, file: FileObject) -> None:
        write_atomic(self.root / "files" / f"{file.id}.json", file.model_dump_json() + "\n")

    def get_file(self, file_id: str) -> FileObject | None:
        if not _FILE_ID.match(file_id):
            return None
        return _load(self.root / "files" / f"{file_id}.json", FileObject)

    def delete_file(self, file_id: str) -> bool:
        """Remove a file and its content; False when there was none."""
        if self.get_file(file_id) is None:
            return False
        self.content_path(file_id).unlink(missing_ok=True)
        (self.root / "files" / f"{file_id}.json").unlink(missing_ok=True)
        return True

    def list_files(self) -> list[FileObject]:
        found = (_load(path, FileObject) for path in (self.root / "files").glob("file-*.json"))
        return [file for file in found if file is not None]

    # --- batches -------------------------------------------------------------------------------------

    @staticmethod
    def new_batch_id() -> str:
        return "batch_" + secrets.token_hex(12)

    def batch_dir(self, batch_id: str) -> Path:
        if not _BATCH_ID.match(batch_id):
            raise KeyError(batch_id)
        return self.root / "batches" / batch_id

    def part_dir(self, batch_id: str, index: int) -> Path:
        return self.batch_dir(batch_id) / "parts" / str(index)

    def save_batch(self, record: BatchRecord) -> None:
        write_atomic(self.batch_dir(record.batch.id) / "batch.json", record.model_dump_json(indent=1) + "\n")

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        if not _BATCH_ID.match(batch_id):
            return None
        return _load(self.batch_dir(batch_id) / "batch.json", BatchRecord)

    def list_batches(self) -> list[BatchRecord]:
        """Every batch, newest first (ties by id)."""
        found = (_load(path / "batch.json", BatchRecord) for path in (self.root / "batches").glob("batch_*"))
        records = [record for record in found if record is not None]
        return sorted(records, key=lambda r: (r.batch.created_at, r.batch.id), reverse=True)

    def delete_batch(self, batch_id: str) -> None:
        shutil.rmtree(self.batch_dir(batch_id), ignore_errors=True)

    # --- idempotency keys ----------------------------------------------------------------------------

    def _key_path(self, key: str) -> Path:
        return self.root / "idempotency" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def idempotent(self, key: str) -> IdempotencyEntry | None:
        return _load(self._key_path(key), IdempotencyEntry)

    def remember(self, key: str, entry: IdempotencyEntry) -> None:
        write_atomic(self._key_path(key), entry.model_dump_json() + "\n")

    def forget_keys_of(self, batch_ids: set[str]) -> None:
        """Drop the Idempotency-Keys of batches that are gone."""
        for path in (self.root / "idempotency").glob("*.json"):
            entry = _load(path, IdempotencyEntry)
            if entry is None or entry.batch_id in batch_ids:
                path.unlink(missing_ok=True)


def _load(path: Path, model: type[_M]) -> _M | None:
    """The object in ``path``; None when it is missing or unreadable (a file from another release, half-deleted)."""
    try:
        return model.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):
        return None
