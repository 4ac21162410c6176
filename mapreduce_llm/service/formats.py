"""The OpenAI Batch API's objects as the service shows them: files, batches, their errors and counts.

The line shapes (input lines, output and error lines) and their conversions to documents and from results are
shared with ``mapreduce-llm run``: they live in :mod:`mapreduce_llm.batch_format` and are importable from here too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mapreduce_llm.batch_format import (
    BODY_SETTINGS,
    ENDPOINT,
    RUNNING_ERRORS,
    ApiModel,
    BatchError,
    InputLine,
    MapReduceBody,
    OutputLine,
    Rejected,
    ValidLine,
    check_line,
    dumps,
    failed_line,
    output_line,
    read_input_file,
    request_id,
)

__all__ = [
    "BODY_SETTINGS",
    "ENDPOINT",
    "RUNNING_ERRORS",
    "ApiModel",
    "Batch",
    "BatchCreate",
    "BatchError",
    "BatchErrors",
    "ExpiresAfter",
    "FileObject",
    "InputLine",
    "MapReduceBody",
    "OutputLine",
    "Rejected",
    "RequestCounts",
    "Status",
    "ValidLine",
    "check_line",
    "dumps",
    "failed_line",
    "output_line",
    "read_input_file",
    "request_id",
]

Status = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"]


class FileObject(ApiModel):
    """An uploaded file (``purpose: batch``) or a batch's output or error file (``purpose: batch_output``)."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["batch", "batch_output"]
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class BatchErrors(ApiModel):
    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


class RequestCounts(ApiModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class Batch(ApiModel):
    """A batch as the API shows it (OpenAI's field names and lifecycle)."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: Status
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None


class ExpiresAfter(ApiModel):
    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(ge=3600, le=2_592_000)


class BatchCreate(ApiModel):
    """``POST /v1/batches``."""

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    output_expires_after: ExpiresAfter | None = None
