"""The input on disk: what kind of input a path is, the walk of an input folder, bounded reads of text files.

Nothing here knows a :class:`~mapreduce_llm.documents.Document`: this module answers which files are read,
how many bytes of them, and in which encoding; :mod:`mapreduce_llm.documents` makes documents of them.

Text as people have it: UTF-8 with or without a byte order mark; UTF-16 and UTF-32 when the file starts with
their byte order mark (text files here, JSONL lines in :mod:`mapreduce_llm.jsonl`). Without a BOM, input must
be UTF-8.

Size: a file is read with a bounded read (never more than ``limits.max_document_bytes`` of UTF-8 text can
take, plus one byte), whatever its ``stat`` size says.

Folders are read recursively in sorted order; names starting with ``.`` (files and folders) are skipped; a file
without a text suffix (:data:`TEXT_SUFFIXES`) is an ``unsupported_file`` record. Symbolic links inside a folder:
a link whose target stays inside the folder is read (a link to a folder inside is not descended: its files are
read under their own paths). A link leaving the folder is not followed — it becomes a ``symlink`` record —
unless ``follow_symlinks=True`` (``follow_symlinks: true`` in the job spec). Only regular files are read: FIFOs,
sockets and devices become ``not_a_regular_file`` records, and are never opened in a way that could block.

File names that are not UTF-8 are shown with backslash escapes (:func:`display`), in ids, sources and messages.
"""

from __future__ import annotations

import codecs
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO, Final, Literal

from mapreduce_llm.errors import ConfigError, DocumentError

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst"})
"""Files of an input folder read as documents; any other file is an ``unsupported_file`` record."""
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
"""An input file with one of these suffixes is read as JSONL; any other single file as one text document."""

InputKind = Literal["folder", "jsonl", "file"]

_BOMS: Final = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "UTF-32-LE"),
    (codecs.BOM_UTF32_BE, "UTF-32-BE"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16-LE"),
    (codecs.BOM_UTF16_BE, "UTF-16-BE"),
)


def display(path: str | PurePath) -> str:
    """A path as readable UTF-8 text: bytes of a file name that are not UTF-8 are shown as backslash escapes
    (``name\\xe9.txt``), so ids, sources and messages can always be written as UTF-8 JSON."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a str path holding lone surrogates that are not escaped bytes
        return str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


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


# --- opening and reading one file ----------------------------------------------------------------------


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


def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading, without ever blocking: a FIFO or device raises OSError instead of
    waiting."""
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


def sniff_bom(head: bytes) -> tuple[str, int]:
    """The encoding a byte order mark at the start of ``head`` announces (UTF-8 without one) and the BOM's
    length."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return "UTF-8", 0


def too_large_error(where: str, what: str, size: int, max_bytes: int, document_id: str) -> DocumentError:
    """The ``too_large`` record of ``what`` (a file, a JSONL line, a document) at ``where``."""
    return DocumentError(
        f"{where}: {what} is {size:,} bytes, over limits.max_document_bytes ({max_bytes:,}); "
        "split it into smaller documents or raise the limit",
        document_id=document_id,
        code="too_large",
    )


def unreadable_error(where: str, exc: OSError, document_id: str) -> DocumentError:
    """The record of a read the operating system refused or failed: ``unreadable``, or ``not_a_regular_file``
    when what was opened turned out to be a FIFO or device."""
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


def read_text(path: Path, document_id: str, max_bytes: int, *, where: str) -> str:
    """The text of one regular file, decoded by its byte order mark (UTF-8 without one).

    At most what ``max_bytes`` of UTF-8 text can take in the file's encoding is read (plus one byte, to tell
    that there is more); a FIFO or device is refused without blocking. Raises DocumentError (``too_large``,
    ``binary``, ``invalid_utf8``, ``unreadable``, ``not_a_regular_file``) naming ``where``.
    """
    try:
        with open_regular(path) as fh:
            encoding, bom = sniff_bom(fh.read(4))
            unit = 4 if encoding.startswith("UTF-32") else 2 if encoding.startswith("UTF-16") else 1
            limit = bom + unit * max_bytes  # every code unit is at least one byte of UTF-8
            fh.seek(bom)
            data = fh.read(limit - bom + 1)
            size = max(os.fstat(fh.fileno()).st_size, bom + len(data))
    except OSError as exc:
        raise unreadable_error(where, exc, document_id) from None
    if bom + len(data) > limit:
        what = "file" if unit == 1 else f"file ({encoding})"
        raise too_large_error(where, what, size, max_bytes, document_id)
    return _decode(data, encoding, document_id, where)


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
                yield _entry(listed, relative, problem=unreadable_error(display(listed), exc, relative.as_posix()))


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
        return _entry(listed, relative, problem=unreadable_error(where, exc, document_id))
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
