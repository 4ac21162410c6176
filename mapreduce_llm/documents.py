"""Input documents: the :class:`Document` record, the checks of one document, and :func:`read_documents`.

Three kinds of input:

- a **JSONL** file (``.jsonl``/``.ndjson``): one JSON object per line with ``text``, optional ``id`` and
  ``question``; other fields are kept as metadata (lines and JSON values: :mod:`mapreduce_llm.jsonl`). A line
  without ``text`` that has ``custom_id`` or ``body`` is an OpenAI batch line: its body is the document, its
  custom_id the id (:mod:`mapreduce_llm.batch_lines`); a file may mix both kinds;
- a **folder**, read recursively in sorted order: every ``.txt``/``.md``/``.markdown``/``.rst`` file is a
  document; names starting with ``.`` (files and folders) are skipped (the walk, symbolic links, special
  files, encodings and bounded reads: :mod:`mapreduce_llm.input_files`);
- any other **single file**, read as one text document.

Every input line (JSONL) or file (folder) yields exactly one item, a :class:`Document` or a
:class:`~mapreduce_llm.errors.DocumentError` whose ``code`` is one of :data:`READ_ERROR_CODES` — never an
exception, so the job records it and goes on with the rest. Only a job-level problem raises
:class:`~mapreduce_llm.errors.ConfigError`: the input does not exist, cannot be opened, or is not a regular
file or folder (a FIFO, ``/dev/zero``, ``/dev/stdin`` on a pipe: refused, never read).

A document's text must be non-empty, without NUL characters, and within ``max_bytes``
(``limits.max_document_bytes``) of UTF-8; ids are unique within the input (a later duplicate is
``duplicate_id``). The names of :mod:`~mapreduce_llm.input_files` and :mod:`~mapreduce_llm.jsonl` that
callers use are importable from here too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from mapreduce_llm.batch_lines import BatchLineCode, RequestCheck, batch_document, is_batch_line
from mapreduce_llm.errors import ConfigError, DocumentError
from mapreduce_llm.input_files import (
    JSONL_SUFFIXES,
    TEXT_SUFFIXES,
    FolderEntry,
    InputKind,
    display,
    input_kind,
    read_text,
    too_large_error,
    walk_folder,
)
from mapreduce_llm.jsonl import MAX_JSON_DEPTH, count_lines, nonfinite_to_null, read_jsonl, split_lines

__all__ = [
    "JSONL_SUFFIXES",
    "MAX_JSON_DEPTH",
    "READ_ERROR_CODES",
    "TEXT_SUFFIXES",
    "Document",
    "FolderEntry",
    "InputKind",
    "ReadErrorCode",
    "count_inputs",
    "derived_id",
    "display",
    "input_kind",
    "read_documents",
    "read_text_file",
    "walk_folder",
]

_split_lines = split_lines  # the JSONL line splitter, under the name tests/test_reader_fuzz.py imports

ReadErrorCode = Literal[
    "too_large",
    "nul_bytes",
    "empty",
    "binary",
    "invalid_utf8",
    "malformed_json",
    "unsupported_json",
    "lone_surrogate",
    "not_an_object",
    "bad_id",
    "missing_text",
    "text_not_string",
    "question_not_string",
    "duplicate_id",
    "unsupported_file",
    "symlink",
    "not_a_regular_file",
    "unreadable",
    BatchLineCode,
]
"""Every ``DocumentError.code`` the reader can produce:

- ``too_large``: the file, or the JSONL line, is over ``limits.max_document_bytes``.
- ``nul_bytes``: the text or question holds a NUL character.
- ``empty``: the text is empty or only whitespace.
- ``binary``: a file holds NUL bytes (and no UTF-16/32 byte order mark): it is not text.
- ``invalid_utf8``: the bytes are not valid text in the file's encoding (UTF-8, or UTF-16/32 with a BOM).
- ``malformed_json``: the JSONL line is not valid JSON.
- ``unsupported_json``: valid JSON this reader cannot carry: nested too deep, or an integer too long.
- ``lone_surrogate``: a JSON string (id, text, question, a metadata key or value) holds a lone surrogate.
- ``not_an_object``: the JSONL line is JSON but not an object.
- ``bad_id``: ``id`` is neither a string nor an integer.
- ``missing_text``, ``text_not_string``, ``question_not_string``: the fields of a JSONL object.
- ``duplicate_id``: an id seen earlier in the same input.
- ``unsupported_file``: a file in a folder without a text suffix.
- ``symlink``: a symbolic link leaving the input folder (not followed unless ``follow_symlinks``).
- ``not_a_regular_file``: a FIFO, socket or device in a folder.
- ``unreadable``: the operating system refused or failed the read (permissions, file vanished, I/O error).
- OpenAI batch lines (:data:`~mapreduce_llm.batch_lines.BATCH_LINE_CODES`): ``invalid_url`` (another endpoint
  than ``/v1/mapreduce``), ``invalid_method``, ``missing_custom_id``, ``invalid_custom_id``,
  ``duplicate_custom_id``, ``invalid_request`` (a malformed body), ``prompt_mismatch`` (``body.prompt`` is not the
  job's prompt), ``unsupported_setting`` (a per-request setting other than the job's).
"""
READ_ERROR_CODES: Final[tuple[str, ...]] = get_args(ReadErrorCode)
"""The codes of :data:`ReadErrorCode`, for tests and metrics."""


class Document(BaseModel):
    """One input document, validated: non-empty UTF-8 text without NUL bytes, within the size limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    """Unique within the job. Given in the input, the file's path in a folder, or derived from the text."""
    text: str
    """The document text; treated as data, never as a template."""
    question: str | None = None
    """For question answering tasks: what to answer from the text."""
    source: str
    """Where it was read from: ``file`` or ``file:line``."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Other input fields, carried to the result unchanged (except non-finite numbers, carried as null)."""


def derived_id(text: str) -> str:
    """A stable id for a document given without one: a hash of its text."""
    return "doc-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# --- one document --------------------------------------------------------------------------------------


def _check_text(text: str, document_id: str, where: str, max_bytes: int) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise too_large_error(where, "document", size, max_bytes, document_id)
    if "\x00" in text:
        raise DocumentError(
            f"{where}: text contains a NUL character at offset {text.index(chr(0))}; "
            "this looks like binary data — remove NUL characters or convert the file to text",
            document_id=document_id,
            code="nul_bytes",
        )
    if not text.strip():
        raise DocumentError(
            f"{where}: text is {'empty' if not text else 'only whitespace'}; "
            "remove the document or give it text to process",
            document_id=document_id,
            code="empty",
        )


def read_text_file(path: Path, document_id: str, max_bytes: int, *, where: str | None = None) -> Document:
    """Read one regular text file as a document, raising DocumentError when it cannot be one.

    At most what ``max_bytes`` of UTF-8 text can take in the file's encoding is read (plus one byte, to
    tell that there is more); a FIFO or device is refused without blocking.
    """
    where = where or display(path)
    text = read_text(path, document_id, max_bytes, where=where)
    _check_text(text, document_id, where, max_bytes)
    return Document(id=document_id, text=text, source=where)


def _document_from_json(fields: dict[str, Any], where: str, max_bytes: int) -> Document:
    """The document a JSONL object describes (``fields`` is taken apart); DocumentError when it describes none."""
    fallback_id = where
    raw_id = fields.pop("id", None)
    if (raw_id is not None and not isinstance(raw_id, str | int)) or isinstance(raw_id, bool):
        raise DocumentError(
            f'{where}: "id" must be a string or an integer, got {type(raw_id).__name__}',
            document_id=fallback_id,
            code="bad_id",
        )
    text = fields.pop("text", None)
    document_id = str(raw_id) if raw_id is not None and str(raw_id).strip() else None
    label = f"{where} (id {document_id!r})" if document_id else where
    if text is None:
        raise DocumentError(
            f'{label}: no "text" field; put the document text under "text"',
            document_id=document_id or fallback_id,
            code="missing_text",
        )
    if not isinstance(text, str):
        raise DocumentError(
            f'{label}: "text" must be a string, got {type(text).__name__}',
            document_id=document_id or fallback_id,
            code="text_not_string",
        )
    if document_id is None:
        document_id = derived_id(text)
    _check_text(text, document_id, label, max_bytes)
    question = fields.pop("question", None)
    if question is not None and not isinstance(question, str):
        raise DocumentError(
            f'{label}: "question" must be a string, got {type(question).__name__}',
            document_id=document_id,
            code="question_not_string",
        )
    if question is not None and "\x00" in question:
        raise DocumentError(
            f'{label}: "question" contains a NUL character; remove it',
            document_id=document_id,
            code="nul_bytes",
        )
    nonfinite_to_null(fields)
    return Document(id=document_id, text=text, question=question, source=where, metadata=fields)


# --- the input -----------------------------------------------------------------------------------------


def _read_jsonl(path: Path, max_bytes: int, requests: RequestCheck | None) -> Iterator[Document | DocumentError]:
    custom_ids: set[str] = set()
    for line in read_jsonl(path, max_bytes):
        if isinstance(line, DocumentError):
            yield line
            continue
        try:
            fields = line.fields
            if is_batch_line(fields):
                fields = batch_document(fields, line.number, line.source, custom_ids, requests)
            yield _document_from_json(fields, line.source, max_bytes)
        except DocumentError as err:
            err.source = line.source
            yield err


def _read_folder(folder: Path, max_bytes: int, follow_symlinks: bool) -> Iterator[Document | DocumentError]:
    for entry in walk_folder(folder, follow_symlinks=follow_symlinks):
        if entry.problem is not None:
            yield entry.problem
            continue
        assert entry.read_from is not None
        try:
            yield read_text_file(entry.read_from, entry.document_id, max_bytes, where=entry.source)
        except DocumentError as err:
            err.source = entry.source
            yield err


def _read_file(path: Path, max_bytes: int) -> Iterator[Document | DocumentError]:
    where = display(path)
    try:
        yield read_text_file(path, display(path.name), max_bytes)
    except DocumentError as err:
        err.source = where
        yield err


def count_inputs(path: Path, *, follow_symlinks: bool = False) -> int:
    """Quick count of the items an input yields (non-blank lines or files), for progress bars.

    Reads JSONL in bounded blocks, opens no file of a folder, and returns 0 for an input that cannot be
    read (the reader then raises the explanation).
    """
    try:
        kind = input_kind(path)
        if kind == "folder":
            return sum(1 for _ in walk_folder(path, follow_symlinks=follow_symlinks))
        if kind == "file":
            return 1
        return count_lines(path)
    except (ConfigError, OSError):
        return 0


def read_documents(
    path: Path, max_bytes: int, *, follow_symlinks: bool = False, requests: RequestCheck | None = None
) -> Iterator[Document | DocumentError]:
    """Yield one item per input line (JSONL) or file (folder, single file), in order.

    Problems with single documents, including duplicate ids, are yielded as DocumentError (codes in
    :data:`READ_ERROR_CODES`); a missing input, or one that is not a regular file or folder, raises
    ConfigError. ``max_bytes`` is ``limits.max_document_bytes``; ``follow_symlinks`` reads links leaving an
    input folder (``follow_symlinks`` in the job spec); ``requests`` checks the prompt and settings that OpenAI
    batch lines ask for (:class:`~mapreduce_llm.batch_lines.JobRequests`; None: not checked).
    """
    kind = input_kind(path)
    if kind == "folder":
        items = _read_folder(path, max_bytes, follow_symlinks)
    elif kind == "jsonl":
        items = _read_jsonl(path, max_bytes, requests)
    else:
        items = _read_file(path, max_bytes)
    seen: dict[str, str] = {}
    for item in items:
        if isinstance(item, Document):
            if item.id in seen:
                yield DocumentError(
                    f"{item.source}: duplicate id {item.id!r} (first seen at {seen[item.id]}); "
                    "ids must be unique within a job — rename one of them",
                    document_id=item.id,
                    code="duplicate_id",
                    source=item.source,
                )
                continue
            seen[item.id] = item.source
        yield item
