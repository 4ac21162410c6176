"""JSONL input: the bounded line reader and the checks of each line's JSON.

Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (JSON strings cannot hold raw CR or LF, so this never splits a
document). A line holding only ASCII whitespace (space, tab, ``\\v``, ``\\f``) is blank: skipped, but counted in
line numbers (``file:line``, from 1). Every other line yields exactly one item: a :class:`JsonLine` (a JSON
object whose values can all be carried) or a :class:`~mapreduce_llm.errors.DocumentError`. Which fields the
object must have is :mod:`mapreduce_llm.documents`' business.

Encodings: UTF-8 with or without a byte order mark, UTF-16/32 with theirs (transcoded block by block, see
:func:`~mapreduce_llm.input_files.sniff_bom`). A UTF-8 BOM at the start of a later line (concatenated files)
is dropped too.

Size: a line over ``max_bytes`` (``limits.max_document_bytes``; text, question and metadata together: the whole
line's UTF-8 bytes) is skipped to its end without being held, and becomes a ``too_large`` record.

JSON values: lone UTF-16 surrogates (``"\\ud800"`` escaped in the JSON) are not characters and cannot be written
as UTF-8: a line holding one in any key or value gets ``lone_surrogate``. Arrays/objects nested more than
:data:`MAX_JSON_DEPTH` levels and integers of more than 4,300 digits (Python's conversion limit) get
``unsupported_json``. ``NaN``, ``Infinity`` and ``-Infinity`` (and numbers too large for a float, such as
``1e400``) parse; :func:`nonfinite_to_null` carries them as ``null``, since JSON output has no such numbers.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

from mapreduce_llm.errors import ConfigError, DocumentError
from mapreduce_llm.input_files import display, open_regular, sniff_bom, too_large_error, unreadable_error

MAX_JSON_DEPTH: Final = 64
"""Deepest nesting of arrays/objects accepted in a JSONL line (the line's object is level 1). Deeper
values would fail later (JSON serialisation of results has its own depth limit)."""

_BLOCK: Final = 1 << 16
"""Bytes read at a time from a JSONL file."""
_EOL: Final = re.compile(rb"\r\n?|\n")
_MAY_HOLD_SURROGATE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_ASCII_WHITESPACE: Final = b" \t\v\f"


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: an undecodable sequence becomes U+DCFF, which makes its JSONL line invalid UTF-8
    once re-encoded (so only that line gets ``invalid_utf8``, not the whole file)."""
    if isinstance(exc, UnicodeDecodeError):
        return "\udcff", exc.end
    raise exc


_UNDECODABLE: Final = "mapreduce_llm.mark_undecodable"
codecs.register_error(_UNDECODABLE, _mark_undecodable)


@dataclass(frozen=True, slots=True)
class JsonLine:
    """One non-blank JSONL line that parsed to a JSON object whose keys and values can all be carried."""

    source: str
    """``file:line``, the line numbered from 1."""
    fields: dict[str, Any]
    """The parsed object (fresh for this line: the caller may take fields out of it)."""
    number: int = 0
    """The line's number, from 1 (blank lines count)."""


def read_jsonl(path: Path, max_bytes: int) -> Iterator[JsonLine | DocumentError]:
    """One item per non-blank line of the JSONL file ``path``, in order; errors carry their ``source``.

    Raises ConfigError when the file cannot be opened. A read that fails half-way yields one ``unreadable``
    record for the line it stopped at and ends.
    """
    name = display(path.name)
    try:
        fh = open_regular(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the input {display(path)}: {exc.strerror or exc}; check the path and its permissions",
            parameter="input",
            value=display(path),
        ) from None
    number = 0
    with fh:
        try:
            encoding, blocks = utf8_blocks(fh)
            for line in split_lines(blocks, max_bytes):
                number = line.number
                if line.blank:
                    continue
                where = f"{name}:{line.number}"
                try:
                    if line.data is None:
                        raise too_large_error(where, "the line", line.size, max_bytes, where)
                    yield JsonLine(where, parse_object(line.data, where, encoding), line.number)
                except DocumentError as err:
                    err.source = where
                    yield err
        except OSError as exc:
            where = f"{name}:{number + 1}"
            failed = unreadable_error(where, exc, where)
            failed.source = where
            yield failed


def count_lines(path: Path) -> int:
    """The number of non-blank lines of the JSONL file ``path``, read in bounded blocks (raises OSError)."""
    count = 0
    with open_regular(path) as fh:
        for line in split_lines(utf8_blocks(fh)[1], 0):
            count += not line.blank
    return count


# --- lines ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a JSONL file, as the bounded splitter found it."""

    number: int
    """From 1, counting blank lines too."""
    data: bytes | None
    """The line without its terminator, or None when it was over the limit (not held)."""
    size: int
    """The line's length in bytes (UTF-8), without its terminator."""
    blank: bool
    """Only ASCII whitespace."""


def utf8_blocks(fh: BinaryIO) -> tuple[str, Iterator[bytes]]:
    """The file's encoding (from its BOM) and its content as UTF-8 blocks of bounded size, BOM removed.

    UTF-16/32 is transcoded block by block; an undecodable sequence becomes bytes that are not UTF-8, so the
    line holding it (only that line) is ``invalid_utf8``.
    """
    head = fh.read(4)
    encoding, bom = sniff_bom(head)

    def raw() -> Iterator[bytes]:
        yield head[bom:]
        while block := fh.read(_BLOCK):
            yield block

    if encoding == "UTF-8":
        return encoding, raw()

    def transcoded() -> Iterator[bytes]:
        decoder = codecs.getincrementaldecoder(encoding)(errors=_UNDECODABLE)
        for block in raw():
            yield decoder.decode(block).encode("utf-8", "surrogatepass")
        yield decoder.decode(b"", final=True).encode("utf-8", "surrogatepass")

    return encoding, transcoded()


def split_lines(blocks: Iterable[bytes], max_bytes: int) -> Iterator[Line]:
    """Lines ending at ``\\n``, ``\\r\\n`` or a lone ``\\r``, each held only when at most ``max_bytes`` long.

    Written by hand: ``io``'s binary ``readline`` ends lines at ``\\n`` only, and ``TextIOWrapper``'s universal
    newlines count characters rather than bytes and stop the whole file at the first undecodable byte.
    """
    held = bytearray()
    size = 0
    blank = True
    after_cr = False
    number = 0

    def add(piece: bytes) -> None:
        nonlocal size, blank
        size += len(piece)
        if blank and piece.strip(_ASCII_WHITESPACE):
            blank = False
        if size <= max_bytes:
            held.extend(piece)
        elif held:
            held.clear()

    def end() -> Line:
        nonlocal size, blank, number
        number += 1
        line = Line(number, bytes(held) if size <= max_bytes else None, size, blank)
        held.clear()
        size, blank = 0, True
        return line

    for block in blocks:
        if not block:
            continue
        pos = 1 if after_cr and block.startswith(b"\n") else 0  # a CRLF split across two blocks
        after_cr = False
        for match in _EOL.finditer(block, pos):
            add(block[pos : match.start()])
            yield end()
            pos = match.end()
            after_cr = pos == len(block) and match.group() == b"\r"
        add(block[pos:])
    if size:  # a last line without a terminator
        yield end()


# --- the JSON of one line ------------------------------------------------------------------------------


def parse_object(raw: bytes, where: str, encoding: str) -> dict[str, Any]:
    """The JSON object on one line (``raw`` as UTF-8, ``encoding`` the file's), or DocumentError
    (``invalid_utf8``, ``malformed_json``, ``unsupported_json``, ``not_an_object``, ``lone_surrogate``) with
    ``where`` as its document id."""
    raw = raw.removeprefix(codecs.BOM_UTF8).strip(_ASCII_WHITESPACE)
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = f"byte {exc.start}: {raw[exc.start : exc.start + 1]!r}" if encoding == "UTF-8" else "decoded text"
        raise DocumentError(
            f"{where}: not valid {encoding} ({at}); re-encode the file as UTF-8",
            document_id=where,
            code="invalid_utf8",
        ) from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"{where}: malformed JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object",
            document_id=where,
            code="malformed_json",
        ) from None
    except (RecursionError, ValueError) as exc:  # nesting too deep to parse; an integer over 4,300 digits
        if isinstance(exc, RecursionError):
            why = "arrays/objects are nested too deep to parse"
        else:
            why = f"an integer has more than {sys.get_int_max_str_digits():,} digits"  # Python's conversion limit
        raise _unsupported_json(where, why) from None
    if not isinstance(obj, dict):
        raise DocumentError(
            f'{where}: expected a JSON object with "text", got {type(obj).__name__}',
            document_id=where,
            code="not_an_object",
        )
    problem = _json_problem(obj, _MAY_HOLD_SURROGATE.search(raw) is not None)
    if problem is not None and problem[0] == "lone_surrogate":
        raise DocumentError(
            f"{where}: {problem[1]}, which is not a character and cannot be written as UTF-8; fix the program "
            "that wrote the line (often a string cut in the middle of an emoji)",
            document_id=where,
            code="lone_surrogate",
        )
    if problem is not None:
        raise _unsupported_json(where, problem[1])
    return obj


def _unsupported_json(where: str, why: str) -> DocumentError:
    return DocumentError(
        f"{where}: valid JSON this reader cannot carry ({why}); flatten the value or store it as a string",
        document_id=where,
        code="unsupported_json",
    )


def _json_problem(obj: dict[str, Any], may_hold_surrogate: bool) -> tuple[str, str] | None:
    """(code, what) for the first value of the parsed line that cannot be carried, walking without recursion."""
    stack: list[tuple[Any, int, str]] = [(obj, 1, "")]
    while stack:
        value, depth, field = stack.pop()
        if isinstance(value, str):
            if may_hold_surrogate and _has_surrogate(value):
                return "lone_surrogate", f"field {field!s} holds {_surrogate_note(value)}"
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                return "unsupported_json", f"arrays/objects are nested more than {MAX_JSON_DEPTH} levels deep"
            if isinstance(value, list):
                stack.extend((v, depth + 1, f"{field}[{i}]") for i, v in enumerate(value))
                continue
            for key, v in value.items():
                label = f'"{_printable(key)}"' if not field else f'{field}."{_printable(key)}"'
                if may_hold_surrogate and _has_surrogate(key):
                    return "lone_surrogate", f"the key {label} holds {_surrogate_note(key)}"
                stack.append((v, depth + 1, label))
    return None


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _printable(value: str) -> str:
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _surrogate_note(value: str) -> str:
    first = next(c for c in value if "\ud800" <= c <= "\udfff")
    return f"a lone surrogate ({_printable(first)})"


def nonfinite_to_null(values: dict[str, Any]) -> None:
    """Replace NaN and ±Infinity, however deep in ``values``, by None, in place (JSON output has no such
    numbers)."""
    stack: list[dict[str, Any] | list[Any]] = [values]
    while stack:
        container = stack.pop()
        keys: Iterable[Any] = container.keys() if isinstance(container, dict) else range(len(container))
        for key in keys:
            value = container[key]
            if isinstance(value, float) and not math.isfinite(value):
                container[key] = None
            elif isinstance(value, dict | list):
                stack.append(value)
