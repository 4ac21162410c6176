"""Reading and validating input documents.

Three kinds of input: a JSONL file (one JSON object per line with ``id``, ``text``, optional ``question``;
other fields are kept as metadata), a folder of ``.txt``/``.md`` files (read recursively, in sorted order),
or a single text file. Every problem with one document is yielded as a :class:`DocumentError` — never
raised — so the job records it and goes on with the rest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mapreduce_llm.errors import ConfigError, DocumentError

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})


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
    """Other input fields, carried to the result unchanged."""


def derived_id(text: str) -> str:
    """A stable id for a document given without one: a hash of its text."""
    return "doc-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _check_text(text: str, document_id: str, where: str, max_bytes: int) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise DocumentError(
            f"{where}: document is {size:,} bytes, over limits.max_document_bytes ({max_bytes:,}); "
            "split it into smaller documents or raise the limit",
            document_id=document_id,
            code="too_large",
        )
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


def _decode(data: bytes, document_id: str, where: str) -> str:
    if b"\x00" in data:
        raise DocumentError(
            f"{where}: contains NUL bytes (first at byte {data.index(0)}), so it looks like a binary file, "
            "not text; convert it to UTF-8 text or remove it from the input",
            document_id=document_id,
            code="binary",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{where}: not valid UTF-8 (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
            document_id=document_id,
            code="invalid_utf8",
        ) from None
    return text.removeprefix("\ufeff")


def read_text_file(path: Path, document_id: str, max_bytes: int) -> Document:
    """Read one text file as a document, raising DocumentError when it cannot be one."""
    where = str(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise DocumentError(
            f"{where}: file is {size:,} bytes, over limits.max_document_bytes ({max_bytes:,}); "
            "split it into smaller documents or raise the limit",
            document_id=document_id,
            code="too_large",
        )
    text = _decode(path.read_bytes(), document_id, where)
    _check_text(text, document_id, where, max_bytes)
    return Document(id=document_id, text=text, source=where)


def _read_folder(folder: Path, max_bytes: int) -> Iterator[Document | DocumentError]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders (.git, .DS_Store) are not documents
        document_id = rel.as_posix()
        if path.suffix.lower() not in TEXT_SUFFIXES:
            yield DocumentError(
                f"{path}: unsupported file type {path.suffix or '(none)'!r}; folders are read for "
                f"{', '.join(sorted(TEXT_SUFFIXES))} files — convert it or remove it from the folder",
                document_id=document_id,
                code="unsupported_file",
                source=str(path),
            )
            continue
        try:
            yield read_text_file(path, document_id, max_bytes)
        except DocumentError as err:
            err.source = str(path)
            yield err


def _parse_jsonl_line(raw: bytes, where: str, max_bytes: int) -> Document:
    fallback_id = where.rsplit("/", 1)[-1]
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{where}: not valid UTF-8 (byte {exc.start}); re-encode the file as UTF-8",
            document_id=fallback_id,
            code="invalid_utf8",
        ) from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"{where}: malformed JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object",
            document_id=fallback_id,
            code="malformed_json",
        ) from None
    if not isinstance(obj, dict):
        raise DocumentError(
            f'{where}: expected a JSON object with "text", got {type(obj).__name__}',
            document_id=fallback_id,
            code="not_an_object",
        )
    raw_id = obj.pop("id", None)
    if (raw_id is not None and not isinstance(raw_id, str | int)) or isinstance(raw_id, bool):
        raise DocumentError(
            f'{where}: "id" must be a string or an integer, got {type(raw_id).__name__}',
            document_id=fallback_id,
            code="bad_id",
        )
    text = obj.pop("text", None)
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
    question = obj.pop("question", None)
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
    return Document(id=document_id, text=text, question=question, source=where, metadata=obj)


def _read_jsonl(path: Path, max_bytes: int) -> Iterator[Document | DocumentError]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                yield _parse_jsonl_line(raw, where, max_bytes)
            except DocumentError as err:
                err.source = where
                yield err


def count_inputs(path: Path) -> int:
    """Quick upper bound of the documents in an input (non-blank lines or files), for progress bars."""
    if path.is_dir():
        return sum(
            1 for p in path.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(path).parts)
        )
    if path.suffix.lower() in JSONL_SUFFIXES:
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    return 1 if path.exists() else 0


def read_documents(path: Path, max_bytes: int) -> Iterator[Document | DocumentError]:
    """Yield every document of the input (JSONL file, folder or single file) in order.

    Problems with single documents, including duplicate ids, are yielded as DocumentError;
    an input that does not exist raises ConfigError.
    """
    if not path.exists():
        raise ConfigError(f"input {path} does not exist; check the path", parameter="input", value=str(path))
    if path.is_dir():
        items = _read_folder(path, max_bytes)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        items = _read_jsonl(path, max_bytes)
    else:

        def single() -> Iterator[Document | DocumentError]:
            try:
                yield read_text_file(path, path.name, max_bytes)
            except DocumentError as err:
                err.source = str(path)
                yield err

        items = single()
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
