"""Fingerprints that decide whether a finished result may be reused by a rerun.

Every result carries two hashes:

- the **input** fingerprint: the document's text, question and metadata;
- the **settings** fingerprint: everything else that shapes its output — the prompt version's content, its
  calibration for the model, the sampling (with the job's overrides), the output reserve, the context length,
  chunking, retrieval and reduce settings, and the model's identity.

A rerun into the same output folder reuses a finished result only when both match (see
:class:`mapreduce_llm.output.ResultLog`); anything else is recomputed, with the request cache keeping the
unchanged requests free.

The model's identity comes from its files, not its folder name: the SHA-256 of every file in the model folder
(config, tokenizer, weights). Hashing a large model takes a while, so each file's hash is remembered in
``<cache dir>/file-hashes.json`` under its path, size, modification time and inode, and computed again only
when one of them changes. An OpenAI-compatible server's model is identified by what the server reports
(its id and ``root``), since its files are not visible from here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from filelock import FileLock

from mapreduce_llm.documents import Document

log = structlog.get_logger(__name__)

_READ_BLOCK = 1 << 20


def digest(value: Any) -> str:
    """SHA-256 (hex, first 32 characters) of a JSON-serialisable value, independent of key order."""
    material = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(material.encode("ascii")).hexdigest()[:32]


def input_fingerprint(doc: Document) -> str:
    """Hash of what the document gives the job: its text, question and metadata."""
    return digest({"text": doc.text, "question": doc.question, "metadata": doc.metadata})


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's content, read in blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_READ_BLOCK):
            h.update(block)
    return h.hexdigest()


class FileHashes:
    """Remembered file hashes, keyed by path, size, modification time and inode (a JSON file, locked on write)."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self._known: dict[str, str] = {}
        self._dirty = False
        try:
            loaded = json.loads(store.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self._known = {str(k): str(v) for k, v in loaded.items()}
        except (OSError, ValueError):
            pass  # first use, or an unreadable store: hashes are computed again

    @staticmethod
    def _key(path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"

    def sha256(self, path: Path) -> str:
        """The file's SHA-256, from the store when the file has not changed since it was hashed."""
        key = self._key(path)
        found = self._known.get(key)
        if found is None:
            found = file_sha256(path)
            self._known[key] = found
            self._dirty = True
        return found

    def save(self) -> None:
        """Write new hashes back (best effort: a read-only cache only costs hashing again next time)."""
        if not self._dirty:
            return
        try:
            self.store.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.store) + ".lock", timeout=10):
                merged: dict[str, str] = {}
                try:
                    merged = json.loads(self.store.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    merged = {}
                merged.update(self._known)
                tmp = self.store.with_name(f".{self.store.name}.{os.getpid()}")
                tmp.write_text(json.dumps(merged, indent=0, sort_keys=True), encoding="utf-8")
                tmp.replace(self.store)
            self._dirty = False
        except (OSError, TimeoutError) as exc:
            log.warning("fingerprint.cache_unwritable", path=str(self.store), error=str(exc))


def model_fingerprint(folder: Path, store: Path | None = None) -> str:
    """Identity of the model in ``folder``: a hash over every file's relative path and content hash.

    Hidden files (e.g. a conversion marker) are left out: they are not part of the model.
    """
    if store is None:
        from mapreduce_llm.paths import cache_dir

        store = cache_dir() / "file-hashes.json"
    hashes = FileHashes(store)
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    listing = {p.relative_to(folder).as_posix(): hashes.sha256(p) for p in files}
    hashes.save()
    return "files:" + digest(listing)


def server_model_fingerprint(base_url: str, listing: Mapping[str, Any]) -> str:
    """Identity of a model behind an OpenAI-compatible server: what the server says about it (id, root,
    context length, owner), since its files cannot be read from here."""
    fields = {k: listing.get(k) for k in ("id", "root", "max_model_len", "owned_by", "parent")}
    return "server:" + digest({"base_url": base_url.rstrip("/"), **fields})
