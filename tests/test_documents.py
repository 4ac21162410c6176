"""Reading and validating input documents: every input line or file yields exactly one item, bad ones an error."""

from __future__ import annotations

import codecs
import json
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from mapreduce_llm.batch_format import MapReduceBody
from mapreduce_llm.documents import (
    MAX_JSON_DEPTH,
    READ_ERROR_CODES,
    Document,
    count_inputs,
    derived_id,
    read_documents,
)
from mapreduce_llm.errors import ConfigError, DocumentError


def _read(path: Path, max_bytes: int = 10_000, *, follow_symlinks: bool = False) -> list[Document | DocumentError]:
    return list(read_documents(path, max_bytes, follow_symlinks=follow_symlinks, requests=_job_requests))


def _job_requests(body: MapReduceBody) -> tuple[str, str] | None:
    """A job's check of batch line bodies (the real one is batch_lines.JobRequests): it runs prompt "summarize"
    and no per-request setting."""
    if body.prompt != "summarize":
        return "prompt_mismatch", f"body.prompt {body.prompt!r} is not this job's prompt 'summarize'"
    if body.settings():
        return "unsupported_setting", f"{body.settings()} differ from the job's"
    return None


def _codes(items: list[Document | DocumentError]) -> list[str]:
    return ["ok" if isinstance(i, Document) else i.code for i in items]


def _jsonl(folder: Path, *lines: bytes | str, name: str = "in.jsonl") -> Path:
    path = folder / name
    path.write_bytes(b"\n".join(line.encode() if isinstance(line, str) else line for line in lines) + b"\n")
    return path


def _docs(folder: Path, files: dict[str, str]) -> Path:
    root = folder / "docs"
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


# --- one case per error code: input -> (path to read, where the message must point) ------------------------


def _too_large(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, json.dumps({"text": "x" * 300_000})), "in.jsonl:1"


def _nul_bytes(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, json.dumps({"text": "a \u0000 b"})), "in.jsonl:1"


def _empty(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, "", json.dumps({"text": " \n "})), "in.jsonl:2"


def _binary(tmp: Path) -> tuple[Path, str]:
    root = _docs(tmp, {})
    (root / "c.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    return root, str(root / "c.txt")


def _invalid_utf8(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, b'{"text": "caf\xe9"}'), "in.jsonl:1"


def _malformed_json(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, "{not json"), "in.jsonl:1"


def _unsupported_json(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, '{"text": "t", "m": ' + "[" * 100_000 + "]" * 100_000 + "}"), "in.jsonl:1"


def _lone_surrogate(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, '{"text": "half an emoji \\ud83d"}'), "in.jsonl:1"


def _not_an_object(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, "[1, 2]"), "in.jsonl:1"


def _bad_id(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, json.dumps({"id": [1], "text": "t"})), "in.jsonl:1"


def _missing_text(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, json.dumps({"id": "b"})), "in.jsonl:1"


def _text_not_string(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, json.dumps({"text": 42})), "in.jsonl:1"


def _question_not_string(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, json.dumps({"text": "t", "question": 3})), "in.jsonl:1"


def _duplicate_id(tmp: Path) -> tuple[Path, str]:
    return _jsonl(tmp, json.dumps({"id": "a", "text": "t"}), json.dumps({"id": "a", "text": "u"})), "in.jsonl:2"


def _unsupported_file(tmp: Path) -> tuple[Path, str]:
    root = _docs(tmp, {"f.pdf": "%PDF-1.4"})
    return root, str(root / "f.pdf")


def _symlink(tmp: Path) -> tuple[Path, str]:
    root = _docs(tmp, {})
    (tmp / "secret.txt").write_text("outside")
    (root / "link.txt").symlink_to(tmp / "secret.txt")
    return root, str(root / "link.txt")


def _not_a_regular_file(tmp: Path) -> tuple[Path, str]:
    root = _docs(tmp, {})
    os.mkfifo(root / "pipe.txt")
    return root, str(root / "pipe.txt")


def _batch(custom_id: object = "a", drop: str = "", body: dict[str, object] | None = None, **fields: object) -> str:
    """An OpenAI batch line (``drop``: a field left out; ``body``: fields added to the body)."""
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/mapreduce", **fields}
    line["body"] = {"prompt": "summarize", "text": "A document.", **(body or {})}
    return json.dumps({k: v for k, v in line.items() if k != drop})


def _batch_case(*lines: str, where: str = "in.jsonl:1") -> Callable[[Path], tuple[Path, str]]:
    return lambda tmp: (_jsonl(tmp, *lines), where)


def _unreadable(tmp: Path) -> tuple[Path, str]:
    root = _docs(tmp, {})
    (root / "gone.txt").symlink_to("deleted.txt")  # a link inside the folder whose file is gone
    return root, str(root / "gone.txt")


CASES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "too_large": _too_large,
    "nul_bytes": _nul_bytes,
    "empty": _empty,
    "binary": _binary,
    "invalid_utf8": _invalid_utf8,
    "malformed_json": _malformed_json,
    "unsupported_json": _unsupported_json,
    "lone_surrogate": _lone_surrogate,
    "not_an_object": _not_an_object,
    "bad_id": _bad_id,
    "missing_text": _missing_text,
    "text_not_string": _text_not_string,
    "question_not_string": _question_not_string,
    "duplicate_id": _duplicate_id,
    "unsupported_file": _unsupported_file,
    "symlink": _symlink,
    "not_a_regular_file": _not_a_regular_file,
    "unreadable": _unreadable,
    "invalid_url": _batch_case(_batch(url="/v1/chat/completions")),
    "invalid_method": _batch_case(_batch(method="GET")),
    "missing_custom_id": _batch_case(_batch(drop="custom_id")),
    "invalid_custom_id": _batch_case(_batch(custom_id=5)),
    "duplicate_custom_id": _batch_case(_batch(), _batch(), where="in.jsonl:2"),
    "invalid_request": _batch_case(_batch(body={"model": "gpt"})),
    "prompt_mismatch": _batch_case(_batch(body={"prompt": "qa"})),
    "unsupported_setting": _batch_case(_batch(body={"temperature": 0.3})),
}


def test_every_error_code_has_a_case() -> None:
    """The table below covers exactly the codes the reader declares."""
    assert sorted(CASES) == sorted(READ_ERROR_CODES)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("code", list(CASES))
def test_error_code(code: str, tmp_path: Path) -> None:
    """Each kind of bad input yields one error record with its code, naming the file (and line)."""
    path, where = CASES[code](tmp_path)
    errors = [i for i in _read(path, max_bytes=250_000) if isinstance(i, DocumentError)]
    assert len(errors) == 1, errors
    (err,) = errors
    assert err.code == code
    assert where in str(err) and err.source is not None and where in err.source
    for field in (str(err), err.document_id, err.source):
        field.encode("utf-8")  # records are written as UTF-8 JSON


# --- JSONL ------------------------------------------------------------------------------------------------


def test_jsonl_bad_lines_each_get_an_error_and_good_lines_survive(tmp_path: Path) -> None:
    """Every kind of bad JSONL line yields its own error code, in input order, between good documents."""
    path = _jsonl(
        tmp_path,
        json.dumps({"id": "a", "text": "first good document", "lang": "en"}),
        b"{not json",
        json.dumps({"id": "b"}),
        json.dumps({"id": "c", "text": 42}),
        json.dumps({"id": "d", "text": ""}),
        json.dumps({"id": "e", "text": " \n\t "}),
        json.dumps({"id": "f", "text": "has a \u0000 nul"}),
        json.dumps({"id": "a", "text": "duplicate of a"}),
        b'{"id": "g", "text": "bad \xff utf8"}',
        json.dumps({"id": "h", "text": "x" * 20_000}),
        json.dumps([1, 2]),
        json.dumps({"id": "i", "text": "ok", "question": 3}),
        json.dumps({"text": "no id here"}),
        json.dumps({"id": 7, "text": "integer id"}),
        b"",
    )
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
    (err,) = _read(_jsonl(tmp_path, json.dumps({"id": "b"})))
    assert isinstance(err, DocumentError)
    assert "in.jsonl:1" in str(err) and "'b'" in str(err) and "put the document text under" in str(err)


def test_derived_ids_are_stable() -> None:
    """A document without an id gets the same id on every run."""
    assert derived_id("same text") == derived_id("same text") != derived_id("other text")


def test_line_endings_cr_crlf_and_lf_all_end_lines(tmp_path: Path) -> None:
    """A lone CR, CRLF and LF each end a line (a CR-only file is not one huge line); blank lines keep numbering."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "one"}\r{"text": "two"}\r\n{"text": "three"}\n\r\n \t\r{"text": "four"}')
    items = _read(path)
    assert [(i.text, i.source) for i in items if isinstance(i, Document)] == [
        ("one", "in.jsonl:1"),
        ("two", "in.jsonl:2"),
        ("three", "in.jsonl:3"),
        ("four", "in.jsonl:6"),
    ]
    assert count_inputs(path) == 4


def test_jsonl_byte_order_marks(tmp_path: Path) -> None:
    """UTF-8 with a BOM (also on a concatenated file's later line), UTF-16 and UTF-32 with a BOM all read."""
    lines = [json.dumps({"text": "caf\u00e9 one"}, ensure_ascii=False), json.dumps({"text": "two \U0001f600"})]
    utf8 = tmp_path / "utf8.jsonl"
    utf8.write_bytes(b"\xef\xbb\xbf" + lines[0].encode() + b"\n\xef\xbb\xbf" + lines[1].encode() + b"\n")
    wanted = ["caf\u00e9 one", "two \U0001f600"]
    assert [i.text for i in _read(utf8) if isinstance(i, Document)] == wanted
    for encoding in ("utf-16", "utf-16-be", "utf-32", "utf-32-be"):
        path = tmp_path / f"{encoding}.jsonl"
        bom = "\ufeff" if encoding.endswith("-be") else ""  # plain "utf-16"/"utf-32" write their own BOM
        path.write_bytes((bom + "\r\n".join(lines) + "\r\n").encode(encoding))
        items = _read(path)
        assert [i.text for i in items if isinstance(i, Document)] == wanted, encoding
        assert count_inputs(path) == 2


def test_broken_utf16_spoils_only_its_line(tmp_path: Path) -> None:
    """A lone surrogate or a truncated last character in a UTF-16 JSONL file spoils only its own line."""
    path = tmp_path / "in.jsonl"
    good = '{"id": "ID", "text": "fine"}\n'
    path.write_bytes(
        codecs.BOM_UTF16_LE
        + good.replace("ID", "a").encode("utf-16-le")
        + b"\x00\xd8"  # a lone high surrogate
        + good.replace("ID", "b").encode("utf-16-le")
        + good.replace("ID", "c").encode("utf-16-le")
        + good.replace("ID", "d").encode("utf-16-le")[:-1]  # the file ends inside a character
    )
    items = _read(path)
    assert _codes(items) == ["ok", "invalid_utf8", "ok", "invalid_utf8"]
    assert all("UTF-16" in str(i) for i in items if isinstance(i, DocumentError))
    assert [i.source for i in items] == ["in.jsonl:1", "in.jsonl:2", "in.jsonl:3", "in.jsonl:4"]


def test_nonfinite_numbers_in_metadata_are_carried_as_null(tmp_path: Path) -> None:
    """NaN, Infinity and overflowing numbers in metadata become null (JSON output has no such numbers)."""
    path = _jsonl(tmp_path, '{"id": "a", "text": "t", "score": NaN, "range": [-Infinity, Infinity, 1e400, 1.5]}')
    (doc,) = _read(path)
    assert isinstance(doc, Document) and doc.metadata == {"score": None, "range": [None, None, None, 1.5]}
    assert json.loads(doc.model_dump_json())["metadata"]["score"] is None


def test_lone_surrogates_are_rejected_naming_the_field(tmp_path: Path) -> None:
    """An escaped lone surrogate in the id, question, a metadata value or key is an error naming that field;
    a proper surrogate pair is an ordinary character."""
    path = _jsonl(
        tmp_path,
        '{"id": "x\\udc00", "text": "t"}',
        '{"text": "t", "question": "\\ud800?"}',
        '{"text": "t", "meta": {"tags": ["ok", "\\udfff"]}}',
        '{"text": "t", "meta": {"\\ud800": 1}}',
        '{"text": "pair \\ud83d\\ude00"}',
    )
    items = _read(path)
    assert _codes(items) == ["lone_surrogate"] * 4 + ["ok"]
    messages = [str(i) for i in items[:4]]
    assert '"id"' in messages[0] and '"question"' in messages[1]
    assert '"meta"."tags"[1]' in messages[2] and "key" in messages[3]
    assert isinstance(items[4], Document) and items[4].text == "pair \U0001f600"


def test_unsupported_json_depth_and_long_integers(tmp_path: Path) -> None:
    """Nesting past MAX_JSON_DEPTH and integers over Python's 4,300-digit limit are unsupported_json; a value
    nested exactly MAX_JSON_DEPTH levels deep is fine."""
    at_limit = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    over = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    path = _jsonl(
        tmp_path,
        f'{{"text": "t", "m": {at_limit}}}',
        f'{{"text": "u", "m": {over}}}',
        '{"text": "v", "n": ' + "9" * 5000 + "}",
    )
    items = _read(path, max_bytes=100_000)
    assert _codes(items) == ["ok", "unsupported_json", "unsupported_json"]
    assert "4,300 digits" in str(items[2]) and f"{MAX_JSON_DEPTH} levels" in str(items[1])
    assert isinstance(items[0], Document)
    items[0].model_dump_json()


def test_a_line_over_the_limit_is_skipped_without_being_held(tmp_path: Path) -> None:
    """A 50 MB line with a 1 MB limit is too_large (its size in the message) and the next line still reads,
    with memory far below the line's size."""
    path = tmp_path / "in.jsonl"
    with path.open("wb") as fh:
        fh.write(b'{"text": "')
        for _ in range(50):
            fh.write(b"x" * 1_000_000)
        fh.write(b'"}\n{"text": "after"}\n')
    tracemalloc.start()
    try:
        items = _read(path, max_bytes=1_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _codes(items) == ["too_large", "ok"]
    assert "the line is 50,000,012 bytes, over limits.max_document_bytes (1,000,000)" in str(items[0])
    assert peak < 10_000_000, peak


# --- folders and single files -------------------------------------------------------------------------------


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


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-be"])
def test_utf16_and_utf32_text_files_with_a_bom_are_decoded(tmp_path: Path, encoding: str) -> None:
    """A text file in UTF-16/32 with its byte order mark is read as text (not refused as binary)."""
    path = tmp_path / "one.txt"
    bom = "\ufeff" if encoding.endswith("-be") else ""
    path.write_bytes((bom + "h\u00e9llo \U0001f600").encode(encoding))
    (doc,) = _read(path)
    assert isinstance(doc, Document) and doc.text == "h\u00e9llo \U0001f600"


def test_utf16_file_limit_counts_utf8_bytes(tmp_path: Path) -> None:
    """The limit is on UTF-8 bytes: 60 ASCII characters in UTF-16 (122 bytes) fit a 100-byte limit."""
    path = tmp_path / "one.txt"
    path.write_bytes(("a" * 60).encode("utf-16"))
    assert _codes(_read(path, max_bytes=100)) == ["ok"]
    path.write_bytes(("a" * 101).encode("utf-16"))
    assert _codes(_read(path, max_bytes=100)) == ["too_large"]


def test_file_over_limit_is_refused_with_a_bounded_read(tmp_path: Path) -> None:
    """A file over max_document_bytes is an error record naming its size and the limit."""
    path = tmp_path / "big.txt"
    path.write_text("y" * 500)
    (err,) = _read(path, max_bytes=100)
    assert isinstance(err, DocumentError) and err.code == "too_large"
    assert "file is 500 bytes, over limits.max_document_bytes (100)" in str(err)


def test_non_utf8_file_name_is_read_with_a_readable_id(tmp_path: Path) -> None:
    """A file name that is not UTF-8 still reads; its id shows the bytes as escapes and serialises as JSON."""
    root = tmp_path / "docs"
    root.mkdir()
    (root / os.fsdecode(b"name\xe9.txt")).write_text("latin-1 name")
    (doc,) = _read(root)
    assert isinstance(doc, Document) and doc.id == "name\\xe9.txt" and doc.text == "latin-1 name"
    assert json.loads(doc.model_dump_json())["source"].endswith("name\\xe9.txt")


def test_file_deleted_between_listing_and_reading_is_unreadable(tmp_path: Path) -> None:
    """A file that vanishes after the folder was listed becomes an unreadable record; the rest reads."""
    root = _docs(tmp_path, {"a.txt": "first", "b.txt": "second", "c.txt": "third"})
    items = read_documents(root, 1000)
    first = next(items)
    (root / "b.txt").unlink()
    rest = list(items)
    assert _codes([first, *rest]) == ["ok", "unreadable", "ok"]
    assert "No such file" in str(rest[0]) and rest[0].source == str(root / "b.txt")


@pytest.mark.timeout(10)
def test_file_replaced_by_a_fifo_after_listing_is_not_read(tmp_path: Path) -> None:
    """A file that became a FIFO after the folder was listed is refused when opened, without blocking."""
    root = _docs(tmp_path, {"a.txt": "first", "b.txt": "second"})
    items = read_documents(root, 1000)
    first = next(items)
    (root / "b.txt").unlink()
    os.mkfifo(root / "b.txt")
    assert _codes([first, *items]) == ["ok", "not_a_regular_file"]


# --- symlinks -----------------------------------------------------------------------------------------------


def _linked_folder(tmp_path: Path) -> Path:
    root = _docs(tmp_path, {"a.txt": "inside text", "sub/b.md": "sub text"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET outside text")
    (root / "to_file.txt").symlink_to(outside / "secret.txt")
    (root / "to_dir").symlink_to(outside)
    (root / "inside.txt").symlink_to("a.txt")
    (root / "sub_again").symlink_to("sub")
    (root / "loop").symlink_to(".")
    return root


def test_symlinks_leaving_the_folder_are_not_followed(tmp_path: Path) -> None:
    """A link to a file or folder outside is a symlink record (the folder not descended, nothing of it read);
    a link staying inside reads; a link to a folder inside is not descended twice."""
    root = _linked_folder(tmp_path)
    items = _read(root)
    assert {(i.id, i.text) for i in items if isinstance(i, Document)} == {
        ("a.txt", "inside text"),
        ("inside.txt", "inside text"),
        ("sub/b.md", "sub text"),
    }
    errors = {i.document_id: i for i in items if isinstance(i, DocumentError)}
    assert sorted(errors) == ["to_dir", "to_file.txt"] and {e.code for e in errors.values()} == {"symlink"}
    assert "follow_symlinks: true" in str(errors["to_file.txt"])
    assert all("SECRET" not in (i.text if isinstance(i, Document) else str(i)) for i in items)
    assert count_inputs(root) == len(items) == 5


def test_follow_symlinks_reads_what_links_point_to(tmp_path: Path) -> None:
    """With follow_symlinks, a link to a file outside reads its content and a folder outside is descended."""
    root = _linked_folder(tmp_path)
    items = _read(root, follow_symlinks=True)
    docs = {i.id: i.text for i in items if isinstance(i, Document)}
    assert docs["to_file.txt"] == docs["to_dir/secret.txt"] == "SECRET outside text"
    assert len(docs) == len(items) == 5 == count_inputs(root, follow_symlinks=True)


# --- special files and the input itself ---------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_fifo_in_a_folder_is_not_read(tmp_path: Path) -> None:
    """A FIFO in a folder is a not_a_regular_file record at once (no read that waits for a writer)."""
    root = _docs(tmp_path, {"a.txt": "text"})
    os.mkfifo(root / "pipe.txt")
    assert _codes(_read(root)) == ["ok", "not_a_regular_file"]
    assert count_inputs(root) == 2


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", ["in.jsonl", "in.txt"])
def test_fifo_as_the_input_is_a_config_error(tmp_path: Path, name: str) -> None:
    """A FIFO given as the input stops the job with a clear message instead of blocking."""
    os.mkfifo(tmp_path / name)
    with pytest.raises(ConfigError, match="is a FIFO \\(named pipe\\), not a regular file or a folder"):
        _read(tmp_path / name)
    assert count_inputs(tmp_path / name) == 0


@pytest.mark.timeout(10)
def test_device_as_the_input_is_a_config_error() -> None:
    """/dev/zero is refused (it would never end)."""
    with pytest.raises(ConfigError, match="/dev/zero is a character device"):
        _read(Path("/dev/zero"))
    assert count_inputs(Path("/dev/zero")) == 0


def test_missing_input_is_a_config_error(tmp_path: Path) -> None:
    """An input path that does not exist stops the job before it starts."""
    with pytest.raises(ConfigError, match="does not exist"):
        _read(tmp_path / "nope.jsonl")
    assert count_inputs(tmp_path / "nope.jsonl") == 0
