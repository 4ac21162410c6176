"""Reading and validating input documents: the job's input boundary.

Three kinds of input:

- a **JSONL** file (``.jsonl``/``.ndjson``): one JSON object per line with ``text``, optional ``id`` and
  ``question``; other fields are kept as metadata;
- a **folder**, read recursively in sorted order: every ``.txt``/``.md``/``.markdown``/``.rst`` file is a
  document; names starting with ``.`` (files and folders) are skipped;
- any other **single file**, read as one text document.

Every input line (JSONL) or file (folder) yields exactly one item, a :class:`Document` or a
:class:`~mapreduce_llm.errors.DocumentError` whose ``code`` is one of :data:`READ_ERROR_CODES` — never an
exception, so the job records it and goes on with the rest. Only a job-level problem raises
:class:`~mapreduce_llm.errors.ConfigError`: the input does not exist, cannot be opened, or is not a regular
file or folder (a FIFO, ``/dev/zero``, ``/dev/stdin`` on a pipe: refused, never read).

What counts as a line, in JSONL: lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (JSON strings cannot hold
raw CR or LF, so this never splits a document). A line holding only ASCII whitespace (space, tab, ``\\v``,
``\\f``) is blank: skipped, but counted in line numbers (``file:line``, from 1). Every other line yields
exactly one item.

Text as people have it: UTF-8 with or without a byte order mark; UTF-16 and UTF-32 when the file starts with
their byte order mark (text files and JSONL alike). Without a BOM, input must be UTF-8. A UTF-8 BOM at the
start of a later JSONL line (concatenated files) is dropped too.

JSON values: ``NaN``, ``Infinity`` and ``-Infinity`` (and numbers too large for a float, such as ``1e400``)
are accepted in metadata and carried as ``null``, since JSON output has no such numbers. Lone UTF-16
surrogates (``"\\ud800"`` escaped in the JSON) are not characters and cannot be written as UTF-8: a line
holding one in any field gets ``lone_surrogate``. Arrays/objects nested more than :data:`MAX_JSON_DEPTH`
levels and integers of more than 4,300 digits (Python's conversion limit) get ``unsupported_json``.

Size: ``max_bytes`` (``limits.max_document_bytes``) bounds what is held in memory. A JSONL line over it
(text, question and metadata together: the whole line's UTF-8 bytes) is skipped to its end without being
held; a file is read with a bounded read (never more than the limit allows), whatever its ``stat`` size says.

Symbolic links inside a folder: a link whose target stays inside the folder is read (a link to a folder
inside is not descended: its files are read under their own paths). A link leaving the folder is not followed
— it becomes a ``symlink`` record — unless ``follow_symlinks=True`` (``follow_symlinks: true`` in the job
spec). Only regular files are read: FIFOs, sockets and devices become ``not_a_regular_file`` records.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, BinaryIO, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from mapreduce_llm.errors import ConfigError, DocumentError

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})

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
"""
READ_ERROR_CODES: Final[tuple[str, ...]] = get_args(ReadErrorCode)
"""The codes of :data:`ReadErrorCode`, for tests and metrics."""

MAX_JSON_DEPTH: Final = 64
"""Deepest nesting of arrays/objects accepted in a JSONL line (the line's object is level 1). Deeper
values would fail later (JSON serialisation of results has its own depth limit)."""

_BLOCK: Final = 1 << 16
"""Bytes read at a time from a JSONL file."""
_BOMS: Final = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "UTF-32-LE"),
    (codecs.BOM_UTF32_BE, "UTF-32-BE"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16-LE"),
    (codecs.BOM_UTF16_BE, "UTF-16-BE"),
)
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


def display(path: str | PurePath) -> str:
    """A path as readable UTF-8 text: bytes of a file name that are not UTF-8 are shown as backslash escapes
    (``name\\xe9.txt``), so ids, sources and messages can always be written as UTF-8 JSON."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a str path holding lone surrogates that are not escaped bytes
        return str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


class _NotRegularFileError(OSError):
    """Opened something that is not a regular file (it changed since it was listed)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading, without ever blocking: a FIFO or device raises instead of waiting."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _NotRegularFileError(_file_kind(mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _sniff(head: bytes) -> tuple[str, int]:
    """The encoding a byte order mark announces (UTF-8 without one) and the BOM's length."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return "UTF-8", 0


def _too_large(where: str, what: str, size: int, max_bytes: int, document_id: str) -> DocumentError:
    return DocumentError(
        f"{where}: {what} is {size:,} bytes, over limits.max_document_bytes ({max_bytes:,}); "
        "split it into smaller documents or raise the limit",
        document_id=document_id,
        code="too_large",
    )


def _unreadable(where: str, exc: OSError, document_id: str) -> DocumentError:
    if isinstance(exc, _NotRegularFileError):
        return _not_regular(where, exc.kind, document_id)
    reason = exc.strerror or str(exc)
    return DocumentError(
        f"{where}: cannot be read ({reason}); check that it exists and that this job may read it",
        document_id=document_id,
        code="unreadable",
    )


def _not_regular(where: str, kind: str, document_id: str) -> DocumentError:
    return DocumentError(
        f"{where}: is {kind}, not a regular file; only regular files are read — remove it from the input folder",
        document_id=document_id,
        code="not_a_regular_file",
    )


def _check_text(text: str, document_id: str, where: str, max_bytes: int) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise _too_large(where, "document", size, max_bytes, document_id)
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


def _decode(data: bytes, encoding: str, document_id: str, where: str) -> str:
    """Decode a whole file (its BOM already removed)."""
    if encoding == "UTF-8" and b"\x00" in data:
        raise DocumentError(
            f"{where}: contains NUL bytes (first at byte {data.index(0)}), so it looks like a binary file, "
            "not text; convert it to UTF-8 text or remove it from the input",
            document_id=document_id,
            code="binary",
        )
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{where}: not valid {encoding} (byte {exc.start}: {data[exc.start : exc.start + 1]!r}); "
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
            document_id=document_id,
            code="invalid_utf8",
        ) from None


def read_text_file(path: Path, document_id: str, max_bytes: int, *, where: str | None = None) -> Document:
    """Read one regular text file as a document, raising DocumentError when it cannot be one.

    At most what ``max_bytes`` of UTF-8 text can take in the file's encoding is read (plus one byte, to
    tell that there is more); a FIFO or device is refused without blocking.
    """
    where = where or display(path)
    try:
        with _open_regular(path) as fh:
            encoding, bom = _sniff(fh.read(4))
            unit = 4 if encoding.startswith("UTF-32") else 2 if encoding.startswith("UTF-16") else 1
            limit = bom + unit * max_bytes  # every code unit is at least one byte of UTF-8
            fh.seek(bom)
            data = fh.read(limit - bom + 1)
            size = max(os.fstat(fh.fileno()).st_size, bom + len(data))
    except OSError as exc:
        raise _unreadable(where, exc, document_id) from None
    if bom + len(data) > limit:
        what = "file" if unit == 1 else f"file ({encoding})"
        raise _too_large(where, what, size, max_bytes, document_id)
    text = _decode(data, encoding, document_id, where)
    _check_text(text, document_id, where, max_bytes)
    return Document(id=document_id, text=text, source=where)


# --- folders -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FolderEntry:
    """One item of an input folder as the reader sees it: a file to read, or the error record it becomes."""

    relative: PurePath
    """Path inside the input folder, as listed (a link's own name, not its target's)."""
    document_id: str
    """``relative`` as readable UTF-8 with ``/`` separators: the document's id."""
    source: str
    """The listed path, readable (see :func:`display`)."""
    read_from: Path | None
    """The regular file to read (a link's target), or None when the entry is not read (see ``problem``)."""
    problem: DocumentError | None = None
    """Why the entry is not read: unsupported type, symlink leaving the folder, not a regular file, unreadable."""


def _listing(directory: Path) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as entries:
        return sorted(entries, key=lambda e: e.name)


def walk_folder(folder: Path, *, follow_symlinks: bool = False) -> Iterator[FolderEntry]:
    """Every non-hidden, non-folder entry of ``folder``, depth first in sorted order, without reading files.

    Shared by the reader and by job submission (which uploads exactly the entries with ``read_from``).
    Folders are descended once each (no loops through links); a link to a folder inside ``folder`` is not
    descended, since its files are listed under their own paths. Raises ConfigError when ``folder`` itself
    cannot be listed.
    """
    root = Path(os.path.realpath(folder))
    try:
        top, info = _listing(folder), folder.stat()
    except OSError as exc:
        raise ConfigError(
            f"cannot list the input folder {display(folder)}: {exc.strerror or exc}; check its permissions",
            parameter="input",
            value=display(folder),
        ) from None
    visited = {(info.st_dev, info.st_ino)}
    stack: list[tuple[Path, PurePath, Iterator[os.DirEntry[str]]]] = [(folder, PurePath(), iter(top))]
    while stack:
        directory, prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue  # hidden files and folders (.git, .DS_Store) are not documents
        listed, relative = directory / entry.name, prefix / entry.name
        found = _classify(listed, relative, root, follow_symlinks)
        if isinstance(found, FolderEntry):
            yield found
        elif found is not None and (found.st_dev, found.st_ino) not in visited:
            visited.add((found.st_dev, found.st_ino))
            try:
                stack.append((listed, relative, iter(_listing(listed))))
            except OSError as exc:
                yield _entry(listed, relative, problem=_unreadable(display(listed), exc, relative.as_posix()))


def _entry(
    listed: Path, relative: PurePath, *, read_from: Path | None = None, problem: DocumentError | None = None
) -> FolderEntry:
    document_id, source = display(relative.as_posix()), display(listed)
    if problem is not None:
        problem.document_id, problem.source = document_id, source
    return FolderEntry(relative, document_id, source, read_from, problem)


def _classify(
    listed: Path, relative: PurePath, root: Path, follow_symlinks: bool
) -> FolderEntry | os.stat_result | None:
    """The folder entry for one listed path; the stat of a folder to descend into; None to skip it."""
    where, document_id = display(listed), display(relative.as_posix())
    try:
        info = listed.lstat()
        read_from = listed
        if stat.S_ISLNK(info.st_mode):
            read_from = Path(os.path.realpath(listed))
            inside = read_from == root or read_from.is_relative_to(root)
            if not inside and not follow_symlinks:
                return _entry(listed, relative, problem=_symlink(where, listed, document_id))
            info = read_from.stat()
            if stat.S_ISDIR(info.st_mode) and inside:
                return None  # a link to a folder inside: its files are read under their own paths
    except OSError as exc:
        return _entry(listed, relative, problem=_unreadable(where, exc, document_id))
    if stat.S_ISDIR(info.st_mode):
        return info
    if not stat.S_ISREG(info.st_mode):
        return _entry(listed, relative, problem=_not_regular(where, _file_kind(info.st_mode), document_id))
    if listed.suffix.lower() not in TEXT_SUFFIXES:
        problem = DocumentError(
            f"{where}: unsupported file type '{display(listed.suffix) or '(none)'}'; folders are read for "
            f"{', '.join(sorted(TEXT_SUFFIXES))} files — convert it or remove it from the folder",
            document_id=document_id,
            code="unsupported_file",
        )
        return _entry(listed, relative, problem=problem)
    return _entry(listed, relative, read_from=read_from)


def _symlink(where: str, listed: Path, document_id: str) -> DocumentError:
    try:
        target = display(listed.readlink())
    except OSError:
        target = "?"
    return DocumentError(
        f"{where}: a symbolic link to {target}, outside the input folder; it is not followed — copy the file "
        "into the folder, or set follow_symlinks: true in the job spec to read what links point to",
        document_id=document_id,
        code="symlink",
    )


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


# --- JSONL ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    """From 1, counting blank lines too."""
    data: bytes | None
    """The line without its terminator, or None when it was over the limit (not held)."""
    size: int
    """The line's length in bytes (UTF-8), without its terminator."""
    blank: bool
    """Only ASCII whitespace."""


def _utf8_blocks(fh: BinaryIO) -> tuple[str, Iterator[bytes]]:
    """The file's encoding (from its BOM) and its content as UTF-8 blocks of bounded size, BOM removed.

    UTF-16/32 is transcoded block by block; an undecodable sequence becomes bytes that are not UTF-8, so the
    line holding it (only that line) is ``invalid_utf8``.
    """
    head = fh.read(4)
    encoding, bom = _sniff(head)

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


def _split_lines(blocks: Iterable[bytes], max_bytes: int) -> Iterator[_Line]:
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

    def end() -> _Line:
        nonlocal size, blank, number
        number += 1
        line = _Line(number, bytes(held) if size <= max_bytes else None, size, blank)
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


def _read_jsonl(path: Path, max_bytes: int) -> Iterator[Document | DocumentError]:
    name = display(path.name)
    try:
        fh = _open_regular(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the input {display(path)}: {exc.strerror or exc}; check the path and its permissions",
            parameter="input",
            value=display(path),
        ) from None
    number = 0
    with fh:
        try:
            encoding, blocks = _utf8_blocks(fh)
            for line in _split_lines(blocks, max_bytes):
                number = line.number
                if line.blank:
                    continue
                where = f"{name}:{line.number}"
                try:
                    if line.data is None:
                        raise _too_large(where, "the line", line.size, max_bytes, where)
                    yield _parse_jsonl_line(line.data, where, encoding, max_bytes)
                except DocumentError as err:
                    err.source = where
                    yield err
        except OSError as exc:
            where = f"{name}:{number + 1}"
            failed = _unreadable(where, exc, where)
            failed.source = where
            yield failed


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


def _nonfinite_to_null(metadata: dict[str, Any]) -> None:
    """Replace NaN and ±Infinity in the line's metadata (JSON output has no such numbers) by None, in place."""
    stack: list[dict[str, Any] | list[Any]] = [metadata]
    while stack:
        container = stack.pop()
        keys: Iterable[Any] = container.keys() if isinstance(container, dict) else range(len(container))
        for key in keys:
            value = container[key]
            if isinstance(value, float) and not math.isfinite(value):
                container[key] = None
            elif isinstance(value, dict | list):
                stack.append(value)


def _parse_jsonl_line(raw: bytes, where: str, encoding: str, max_bytes: int) -> Document:
    fallback_id = where
    raw = raw.removeprefix(codecs.BOM_UTF8).strip(_ASCII_WHITESPACE)
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = f"byte {exc.start}: {raw[exc.start : exc.start + 1]!r}" if encoding == "UTF-8" else "decoded text"
        raise DocumentError(
            f"{where}: not valid {encoding} ({at}); re-encode the file as UTF-8",
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
    except (RecursionError, ValueError) as exc:  # nesting too deep to parse; an integer over 4,300 digits
        if isinstance(exc, RecursionError):
            why = "arrays/objects are nested too deep to parse"
        else:
            why = f"an integer has more than {sys.get_int_max_str_digits():,} digits"  # Python's conversion limit
        raise _unsupported_json(where, why, fallback_id) from None
    if not isinstance(obj, dict):
        raise DocumentError(
            f'{where}: expected a JSON object with "text", got {type(obj).__name__}',
            document_id=fallback_id,
            code="not_an_object",
        )
    problem = _json_problem(obj, _MAY_HOLD_SURROGATE.search(raw) is not None)
    if problem is not None and problem[0] == "lone_surrogate":
        raise DocumentError(
            f"{where}: {problem[1]}, which is not a character and cannot be written as UTF-8; fix the program "
            "that wrote the line (often a string cut in the middle of an emoji)",
            document_id=fallback_id,
            code="lone_surrogate",
        )
    if problem is not None:
        raise _unsupported_json(where, problem[1], fallback_id)
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
    _nonfinite_to_null(obj)
    return Document(id=document_id, text=text, question=question, source=where, metadata=obj)


def _unsupported_json(where: str, why: str, document_id: str) -> DocumentError:
    return DocumentError(
        f"{where}: valid JSON this reader cannot carry ({why}); flatten the value or store it as a string",
        document_id=document_id,
        code="unsupported_json",
    )


# --- the input -----------------------------------------------------------------------------------------

InputKind = Literal["folder", "jsonl", "file"]


def input_kind(path: Path) -> InputKind:
    """What kind of input ``path`` is (following a symlink given as the input itself).

    Raises ConfigError when it does not exist, cannot be examined, or is neither a regular file nor a
    folder — without opening it, so a FIFO or device never blocks the job.
    """
    shown = display(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"input {shown} does not exist; check the path", parameter="input", value=shown) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot examine the input {shown}: {exc.strerror or exc}; check the path and its permissions",
            parameter="input",
            value=shown,
        ) from None
    if stat.S_ISDIR(mode):
        return "folder"
    if not stat.S_ISREG(mode):
        raise ConfigError(
            f"input {shown} is {_file_kind(mode)}, not a regular file or a folder; give a JSONL file, a text "
            "file or a folder of text files (to read a stream, save it to a file first)",
            parameter="input",
            value=shown,
        )
    return "jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "file"


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
        count = 0
        with _open_regular(path) as fh:
            for line in _split_lines(_utf8_blocks(fh)[1], 0):
                count += not line.blank
        return count
    except (ConfigError, OSError):
        return 0


def read_documents(path: Path, max_bytes: int, *, follow_symlinks: bool = False) -> Iterator[Document | DocumentError]:
    """Yield one item per input line (JSONL) or file (folder, single file), in order.

    Problems with single documents, including duplicate ids, are yielded as DocumentError (codes in
    :data:`READ_ERROR_CODES`); a missing input, or one that is not a regular file or folder, raises
    ConfigError. ``max_bytes`` is ``limits.max_document_bytes``; ``follow_symlinks`` reads links leaving an
    input folder (``follow_symlinks`` in the job spec).
    """
    kind = input_kind(path)
    if kind == "folder":
        items = _read_folder(path, max_bytes, follow_symlinks)
    elif kind == "jsonl":
        items = _read_jsonl(path, max_bytes)
    else:

        def single() -> Iterator[Document | DocumentError]:
            where = display(path)
            try:
                yield read_text_file(path, display(path.name), max_bytes)
            except DocumentError as err:
                err.source = where
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
