"""Files replaced whole: a reader sees the old file or the complete new one, never a half-written one.

Every file the project rewrites (summaries, profiles, batch output files, prompt labels, calibrations, the hash
cache) goes through :func:`atomic_writer`: the content is written to a temporary file in the same folder, flushed
to disk, then renamed over the target — a rename within a folder is atomic on POSIX file systems. If the block
fails, the temporary file is removed and the target is untouched.

This module imports nothing of the package, so any module may import it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_writer(path: Path, *, mode: int | None = None) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` once the block ends without error (write UTF-8 bytes to it).

    ``mode``: the new file's permission bits (default: those of a new temporary file, owner read/write only).
    The folder is created when missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the complete new one."""
    with atomic_writer(path, mode=mode) as fh:
        fh.write(text.encode("utf-8"))
