"""Property tests of the input boundary: whatever the bytes, one item per non-blank line or file, no exception.

A JSONL "line" is what lies between ``\\n``, ``\\r\\n`` or a lone ``\\r`` (after a UTF-8 BOM at the file's
start is dropped); it is blank when it holds only space, tab, ``\\v`` or ``\\f`` bytes. The reader must yield
exactly one item per non-blank line, sourced ``in.jsonl:<line number>``, in order.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from itertools import pairwise
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from mapreduce_llm.documents import READ_ERROR_CODES, Document, _split_lines, count_inputs, read_documents
from mapreduce_llm.errors import DocumentError

EOL = re.compile(rb"\r\n|\r|\n")
BLANK = b" \t\v\f"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that stress the reader: separators, byte order marks, escapes, nesting, huge numbers, control bytes.
FRAGMENTS = [
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\r",
    b" ",
    b"\t",
    b"\x0c",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xfe\xff",
    b"\xff",
    b"\xed\xa0\x80",
    b'{"text": "',
    b'"}',
    b'{"id": "a", "text": "x"}',
    b'{"text": "t", "m": NaN}',
    b"\\ud800",
    b"\\udfff",
    b"\\ud83d\\ude00",
    b"[" * 2000,
    b"9" * 4400,
    b"1e400",
    b'"\x01\x1f"',
    b"\\u0000",
]


def _expected_lines(data: bytes) -> list[int]:
    """Line numbers of the non-blank lines of a UTF-8 JSONL file, by the definition above."""
    lines = EOL.split(data.removeprefix(b"\xef\xbb\xbf"))
    return [n for n, line in enumerate(lines, start=1) if line.strip(BLANK)]


def _check_items(items: list[Document | DocumentError]) -> None:
    for item in items:
        if isinstance(item, Document):
            dumped = json.loads(item.model_dump_json())  # every field encodes as UTF-8 JSON
            assert dumped["id"] and dumped["text"].strip()
        else:
            assert item.code in READ_ERROR_CODES, item.code
            for field in (str(item), item.document_id, item.source or ""):
                field.encode("utf-8")


def _read_all(path: Path, max_bytes: int) -> list[Document | DocumentError]:
    return list(read_documents(path, max_bytes))


def _line_numbers(items: list[Document | DocumentError]) -> list[int]:
    sources = [item.source for item in items]
    assert all(s is not None and s.startswith("in.jsonl:") for s in sources), sources
    return [int(str(s).rsplit(":", 1)[1]) for s in sources]


_arbitrary_jsonl = st.lists(st.one_of(st.binary(max_size=24), st.sampled_from(FRAGMENTS)), max_size=30).map(b"".join)


@FUZZ
@given(data=_arbitrary_jsonl, max_bytes=st.sampled_from([1, 16, 200, 5_000, 1_000_000]))
def test_arbitrary_bytes_yield_one_item_per_non_blank_line(data: bytes, max_bytes: int) -> None:
    """Any bytes (not starting with a UTF-16/32 BOM): exactly one item per non-blank line, in line order."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        data = b" " + data  # a UTF-16/32 BOM changes the encoding: covered by the next test
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(data)
        items = _read_all(path, max_bytes)
        expected = _expected_lines(data)
        assert _line_numbers(items) == expected
        assert count_inputs(path) == len(expected)
    _check_items(items)


@FUZZ
@given(
    data=st.lists(st.sampled_from([b"a", b" ", b"\r", b"\n", b"\r\n", b"\xff"]), max_size=40).map(b"".join),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    max_bytes=st.integers(0, 6),
)
def test_line_splitting_does_not_depend_on_block_boundaries(data: bytes, cuts: list[int], max_bytes: int) -> None:
    """The bounded line splitter, fed the bytes in arbitrary blocks (a CRLF cut in two, empty blocks), finds
    the same lines as splitting the whole: held when within max_bytes, else only their size."""
    bounds = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    blocks = [piece for a, b in pairwise(bounds) for piece in (data[a:b], b"")]  # empty blocks change nothing
    lines = EOL.split(data)
    if lines and lines[-1] == b"":
        lines.pop()  # a terminator at the very end does not start another line
    got = list(_split_lines(blocks, max_bytes))
    assert [(g.number, g.size, g.data, g.blank) for g in got] == [
        (n, len(line), line if len(line) <= max_bytes else None, not line.strip(BLANK))
        for n, line in enumerate(lines, start=1)
    ]


_strings = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["\ud800", "\udfff", "x\udc80y", "\U0001f600", "\x00", "\r\n", "\u2028", "\ufeff", " ", ""]),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    _strings,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_strings, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def _json_line(draw: st.DrawFn) -> bytes:
    """One line of JSON: usually an object with id/text/question/metadata, sometimes any value, nested deep
    or holding a huge integer; escaped as ASCII or written raw (lone surrogates then become invalid UTF-8)."""
    obj: object
    kind = draw(st.sampled_from(["object", "object", "object", "value", "deep", "huge"]))
    if kind == "value":
        obj = draw(_values)
    else:
        obj = {}
        for field, values in (("id", _scalars), ("text", _scalars), ("question", _scalars)):
            if draw(st.booleans()):
                obj[field] = draw(values)
        obj.update(draw(st.dictionaries(_strings, _values, max_size=3)))
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        obj["meta"] = json.loads("[" * depth + "]" * depth) if depth < 500 else []
        if depth >= 500:
            return json.dumps(obj).encode()[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "huge":
        return json.dumps(obj).encode()[:-1] + b', "n": ' + b"7" * draw(st.integers(4290, 4310)) + b"}"
    ascii_only = draw(st.booleans())
    return json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


@FUZZ
@given(
    lines=st.lists(st.one_of(_json_line(), st.sampled_from([b"", b"  ", b"\t\x0c"])), max_size=12),
    separators=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=12, max_size=12),
    bom=st.booleans(),
    max_bytes=st.sampled_from([64, 100_000]),
)
def test_arbitrary_json_values_yield_one_item_per_line(
    lines: list[bytes], separators: list[bytes], bom: bool, max_bytes: int
) -> None:
    """Arbitrary JSON (surrogates, NaN, deep nesting, huge numbers, control characters) under any line endings:
    one item per non-blank line, every Document serialisable, every error a known code."""
    data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(
        line + sep for line, sep in zip(lines, separators, strict=False)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(data)
        items = _read_all(path, max_bytes)
    assert _line_numbers(items) == _expected_lines(data)
    _check_items(items)
    for item in items:
        if isinstance(item, Document):
            assert all(not (isinstance(v, float) and not math.isfinite(v)) for v in item.metadata.values())


@FUZZ
@given(
    text=st.lists(
        st.sampled_from(['{"text": "a"}', '{"text": "\u00e9\U0001f600"}', "x", " ", "\r", "\n", "\r\n", "\ud800"])
    ).map("".join),
    encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]),
)
def test_utf16_and_utf32_jsonl_lines_are_the_decoded_text_lines(text: str, encoding: str) -> None:
    """JSONL in UTF-16/32 with a BOM: one item per non-blank line of the decoded text (a lone surrogate in the
    file spoils its own line only)."""
    bom = "" if encoding in ("utf-16", "utf-32") else "\ufeff"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes((bom + text).encode(encoding, "surrogatepass"))
        items = _read_all(path, 1_000)
    assert _line_numbers(items) == _expected_lines(text.encode("utf-8", "surrogatepass"))
    _check_items(items)


_names = st.binary(min_size=1, max_size=16).filter(
    lambda n: b"/" not in n and b"\x00" not in n and n not in (b".", b"..")
)
_suffixes = st.sampled_from([b".txt", b".md", b".TXT", b".pdf", b""])
_contents = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=40).map(lambda t: t.encode("utf-8")),
    st.tuples(st.sampled_from(["utf-16", "utf-32", "utf-16-be"]), st.text(max_size=20)).map(
        lambda p: (("\ufeff" if p[0].endswith("-be") else "") + p[1]).encode(p[0])
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.dictionaries(st.tuples(_names, _suffixes).map(b"".join), _contents, max_size=8),
    max_bytes=st.sampled_from([8, 10_000]),
)
def test_arbitrary_folder_yields_one_item_per_visible_file(files: dict[bytes, bytes], max_bytes: int) -> None:
    """Any file names (not UTF-8 included) and contents: one item per non-hidden file, all serialisable."""
    with tempfile.TemporaryDirectory() as tmp:
        root = os.fsencode(tmp)
        for name, content in files.items():
            with open(os.path.join(root, name), "wb") as fh:  # noqa: PTH118, PTH123 - bytes names
                fh.write(content)
        items = _read_all(Path(tmp), max_bytes)
        assert count_inputs(Path(tmp)) == len(items)
    visible = [name for name in files if not name.startswith(b".")]
    assert len(items) == len(visible)
    _check_items(items)
