"""Reading and validating input documents: every bad input becomes its own error, the rest is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mapreduce_llm.documents import Document, count_inputs, derived_id, read_documents
from mapreduce_llm.errors import ConfigError, DocumentError


def _read(path: Path, max_bytes: int = 10_000) -> list[Document | DocumentError]:
    return list(read_documents(path, max_bytes))


def _codes(items: list[Document | DocumentError]) -> list[str]:
    return ["ok" if isinstance(i, Document) else i.code for i in items]


def test_jsonl_bad_lines_each_get_an_error_and_good_lines_survive(tmp_path: Path) -> None:
    """Every kind of bad JSONL line yields its own error code, in input order, between good documents."""
    lines = [
        json.dumps({"id": "a", "text": "first good document", "lang": "en"}).encode(),
        b"{not json",
        json.dumps({"id": "b"}).encode(),
        json.dumps({"id": "c", "text": 42}).encode(),
        json.dumps({"id": "d", "text": ""}).encode(),
        json.dumps({"id": "e", "text": " \n\t "}).encode(),
        json.dumps({"id": "f", "text": "has a \u0000 nul"}).encode(),
        json.dumps({"id": "a", "text": "duplicate of a"}).encode(),
        b'{"id": "g", "text": "bad \xff utf8"}',
        json.dumps({"id": "h", "text": "x" * 20_000}).encode(),
        json.dumps([1, 2]).encode(),
        json.dumps({"id": "i", "text": "ok", "question": 3}).encode(),
        json.dumps({"text": "no id here"}).encode(),
        json.dumps({"id": 7, "text": "integer id"}).encode(),
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    items = _read(path)
    assert _codes(items) == [
        "ok",
        "malformed_json",
        "missing_text",
        "text_not_string",
        "empty",
        "empty",
        "nul_bytes",
        "duplicate_id",
        "invalid_utf8",
        "too_large",
        "not_an_object",
        "question_not_string",
        "ok",
        "ok",
    ]
    first = items[0]
    assert isinstance(first, Document) and first.metadata == {"lang": "en"} and first.source == "in.jsonl:1"
    assert isinstance(items[12], Document) and items[12].id == derived_id("no id here")
    assert isinstance(items[13], Document) and items[13].id == "7"
    dup = items[7]
    assert isinstance(dup, DocumentError) and "in.jsonl:1" in str(dup) and dup.source == "in.jsonl:8"


def test_error_messages_name_the_input_and_the_fix(tmp_path: Path) -> None:
    """Messages say where (file:line, id), what is wrong and what to do."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "b"}) + "\n")
    (err,) = _read(path)
    assert isinstance(err, DocumentError)
    assert "in.jsonl:1" in str(err) and "'b'" in str(err) and "put the document text under" in str(err)


def test_derived_ids_are_stable() -> None:
    """A document without an id gets the same id on every run."""
    assert derived_id("same text") == derived_id("same text") != derived_id("other text")


def test_folder_reads_text_files_and_flags_the_rest(tmp_path: Path) -> None:
    """Folders: .txt/.md are documents, binary/invalid/empty files and other types are error records."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha text")
    (tmp_path / "sub" / "b.md").write_text("# beta\n\ntext")
    (tmp_path / "c.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (tmp_path / "d.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (tmp_path / "e.md").write_text("")
    (tmp_path / "f.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / ".hidden.txt").write_text("ignored")
    items = _read(tmp_path)
    by_id = {(i.id if isinstance(i, Document) else i.document_id): i for i in items}
    assert set(by_id) == {"a.txt", "sub/b.md", "c.txt", "d.txt", "e.md", "f.pdf"}
    assert _codes([by_id[k] for k in sorted(by_id)]) == [
        "ok",
        "binary",
        "invalid_utf8",
        "empty",
        "unsupported_file",
        "ok",
    ]
    assert count_inputs(tmp_path) == 6


def test_single_file_and_bom(tmp_path: Path) -> None:
    """A single file is one document; a UTF-8 byte order mark is dropped."""
    path = tmp_path / "one.txt"
    path.write_bytes(b"\xef\xbb\xbfhello")
    (doc,) = _read(path)
    assert isinstance(doc, Document) and doc.text == "hello" and doc.id == "one.txt"


def test_file_over_limit_is_refused_before_reading(tmp_path: Path) -> None:
    """A file over max_document_bytes is an error record naming the limit."""
    path = tmp_path / "big.txt"
    path.write_text("y" * 500)
    (err,) = _read(path, max_bytes=100)
    assert isinstance(err, DocumentError) and err.code == "too_large" and "max_document_bytes" in str(err)


def test_missing_input_is_a_config_error(tmp_path: Path) -> None:
    """An input path that does not exist stops the job before it starts."""
    with pytest.raises(ConfigError, match="does not exist"):
        _read(tmp_path / "nope.jsonl")
