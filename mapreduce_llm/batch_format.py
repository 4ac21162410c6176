"""The OpenAI Batch API's line shapes, shared by the batch service and ``mapreduce-llm run``.

An input line is ``{"custom_id", "method": "POST", "url": "/v1/mapreduce", "body"}``; its ``body`` is one
document — ``prompt`` (``TASK[@VERSION|@LABEL]``), ``text``, optional ``question`` and ``metadata`` (more fields
for the document, e.g. extract's ``field``; carried to the result) — plus the per-request settings of
:data:`BODY_SETTINGS`. A line that is not such a line is rejected on its own, with OpenAI's error shape
(:class:`BatchError`: ``code``, ``line``, ``message``, ``param``); the other lines run.

An output line is ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``
(:class:`OutputLine`): ``body`` is the document's result record (one line of a job's ``results.jsonl``). A
document that failed goes to the error file with ``response.status_code`` 400 (its input) or 500 (the engine),
its result record as ``body`` and ``error: {code, message}``; a line that never ran (rejected, cancelled,
expired, its job failed) has ``response: null`` and ``error`` only. :func:`output_line` and :func:`failed_line`
make both, for the service's files and for ``run``'s (``output_format: batch``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mapreduce_llm.errors import DocumentError
from mapreduce_llm.input_files import open_regular
from mapreduce_llm.jsonl import parse_object, split_lines, utf8_blocks
from mapreduce_llm.results import DocumentResult

ENDPOINT: Final = "/v1/mapreduce"
"""The service's document endpoint: the ``url`` of every input line and the ``endpoint`` of every batch."""

BODY_SETTINGS: Final[dict[str, str]] = {
    "temperature": "sampling.temperature",
    "top_p": "sampling.top_p",
    "repetition_penalty": "sampling.repetition_penalty",
    "frequency_penalty": "sampling.frequency_penalty",
    "presence_penalty": "sampling.presence_penalty",
    "max_tokens": "sampling.reserved_output_tokens",
    "max_chunk_tokens": "chunking.max_chunk_tokens",
    "retrieval": "retrieval.mode",
    "top_k": "retrieval.top_k",
}
"""Per-request settings a line's body may hold, and the job spec field each sets. Lines with the same prompt
and settings run in one job."""

RUNNING_ERRORS: Final = frozenset({"engine_request", "empty_output", "internal_error"})
"""Document error codes that are the engine's fault (HTTP 500 in the error file); the others are the input's (400)."""


class ApiModel(BaseModel):
    """A shape of the API: unknown fields are kept out of responses and allowed in nothing we read."""

    model_config = ConfigDict(extra="forbid")


class BatchError(ApiModel):
    """One problem of a batch: a rejected input line (``line`` from 1) or what stopped its job."""

    code: str
    line: int | None = None
    message: str
    param: str | None = None


class MapReduceBody(ApiModel):
    """The body of one input line: one document and the settings of its job."""

    prompt: str = Field(min_length=1)
    text: str
    question: str | None = None
    metadata: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    max_tokens: int | None = None
    max_chunk_tokens: int | None = None
    retrieval: Literal["all", "top_k"] | None = None
    top_k: int | None = None

    def settings(self) -> dict[str, Any]:
        """The job spec fields this line sets (dotted paths)."""
        return {path: getattr(self, key) for key, path in BODY_SETTINGS.items() if getattr(self, key) is not None}

    def document(self, custom_id: str) -> dict[str, Any]:
        """The job's JSONL line for this document (id = custom_id; metadata fields beside text)."""
        line: dict[str, Any] = {**(self.metadata or {}), "id": custom_id, "text": self.text}
        if self.question is not None:
            line["question"] = self.question
        return line


class InputLine(ApiModel):
    """One line of a batch input file."""

    custom_id: str = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: str
    body: MapReduceBody


class LineResponse(ApiModel):
    """``response`` of an output line: the document's result record as ``body``."""

    status_code: int
    request_id: str
    body: dict[str, Any]


class LineError(ApiModel):
    """``error`` of an error-file line."""

    code: str
    message: str


class OutputLine(ApiModel):
    """One line of a batch output or error file (what :func:`output_line` and :func:`failed_line` make)."""

    id: str
    custom_id: str | None
    response: LineResponse | None
    error: LineError | None


@dataclass(frozen=True, slots=True)
class ValidLine:
    """A line that passed the checks: its number (from 1) and content."""

    number: int
    line: InputLine


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that did not: why, and its custom_id when it had a readable one."""

    error: BatchError
    custom_id: str | None = None


def read_input_file(path: Path, max_line_bytes: int, endpoint: str = ENDPOINT) -> Iterator[ValidLine | Rejected]:
    """Every non-blank line of a batch input file, in order: a :class:`ValidLine`, or a :class:`Rejected` with
    the :class:`BatchError` rejecting it. Lines over ``max_line_bytes`` are never held whole (the job reader's
    bounded splitter)."""
    seen: set[str] = set()
    with open_regular(path) as fh:
        encoding, blocks = utf8_blocks(fh)
        for raw in split_lines(blocks, max_line_bytes):
            if raw.blank:
                continue
            where = f"line {raw.number}"
            if raw.data is None:
                message = (
                    f"{where} is {raw.size:,} bytes, over the limit of {max_line_bytes:,} (the job's "
                    "limits.max_document_bytes); split the document or raise the limit"
                )
                yield Rejected(BatchError(code="too_large", line=raw.number, message=message))
                continue
            try:
                fields = parse_object(raw.data, where, encoding)
            except DocumentError as err:
                yield Rejected(BatchError(code=err.code, line=raw.number, message=str(err)))
                continue
            checked = check_line(fields, raw.number, endpoint, seen)
            if isinstance(checked, InputLine):
                seen.add(checked.custom_id)
                yield ValidLine(raw.number, checked)
            else:
                custom_id = fields.get("custom_id")
                yield Rejected(checked, custom_id if isinstance(custom_id, str) else None)


def check_line(
    fields: dict[str, Any], number: int, endpoint: str, seen: set[str], where: str | None = None
) -> InputLine | BatchError:
    """The :class:`InputLine` the parsed line ``fields`` is, or the :class:`BatchError` rejecting it (another url,
    a missing or invalid field, a custom_id in ``seen``, metadata shadowing a body field). Messages start with
    ``where`` (default ``line NUMBER``)."""
    where = where or f"line {number}"
    url = fields.get("url")
    if isinstance(url, str) and url != endpoint:
        return BatchError(
            code="invalid_url",
            line=number,
            param="url",
            message=f"{where}: url {url!r} is not this batch's endpoint {endpoint!r}; every line of a "
            "batch goes to its endpoint",
        )
    try:
        line = InputLine.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(part) for part in err["loc"]) or None
        code = {"custom_id": "invalid_custom_id", "method": "invalid_method", "url": "invalid_url"}.get(
            str(err["loc"][0]) if err["loc"] else "", "invalid_request"
        )
        if err["type"] == "missing" and param == "custom_id":
            code = "missing_custom_id"
        allowed = ", ".join(["prompt", "text", "question", "metadata", *BODY_SETTINGS])
        hint = f"; a body holds {allowed}" if param and param.startswith("body.") else ""
        return BatchError(code=code, line=number, param=param, message=f"{where}: {param}: {err['msg']}{hint}")
    if line.custom_id in seen:
        return BatchError(
            code="duplicate_custom_id",
            line=number,
            param="custom_id",
            message=f"{where}: custom_id {line.custom_id!r} is used by an earlier line; custom_ids must be "
            "unique in a file (the first line with it runs)",
        )
    reserved = sorted({"id", "text", "question"} & set(line.body.metadata or {}))
    if reserved:
        return BatchError(
            code="invalid_request",
            line=number,
            param=f"body.metadata.{reserved[0]}",
            message=f"{where}: metadata may not hold {', '.join(reserved)}; they are fields of the body",
        )
    return line


def request_id(batch_id: str, custom_id: str) -> str:
    """A stable id for one line's request (the same when the output is written again after a restart)."""
    return "req_" + hashlib.sha256(f"{batch_id}\0{custom_id}".encode()).hexdigest()[:24]


def output_line(batch_id: str, custom_id: str, result: DocumentResult) -> tuple[bool, dict[str, Any]]:
    """(ok, line) for a document's result: an output-file line when ok, else an error-file line."""
    rid = request_id(batch_id, custom_id)
    body = result.model_dump(mode="json")
    error = None
    status_code = 200
    if result.error is not None:
        status_code = 500 if result.error.code in RUNNING_ERRORS else 400
        error = {"code": result.error.code, "message": result.error.message}
    response = {"status_code": status_code, "request_id": rid, "body": body}
    return error is None, {"id": "batch_" + rid, "custom_id": custom_id, "response": response, "error": error}


def failed_line(batch_id: str, custom_id: str | None, code: str, message: str) -> dict[str, Any]:
    """An error-file line for a request that never ran (rejected line, cancelled, expired, failed job)."""
    rid = request_id(batch_id, custom_id or message)
    return {"id": "batch_" + rid, "custom_id": custom_id, "response": None, "error": {"code": code, "message": message}}


def dumps(line: dict[str, Any]) -> str:
    """One JSONL line (no NaN: JSON has none)."""
    return json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n"
