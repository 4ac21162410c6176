"""Content-addressed cache of engine outputs, so that a rerun never recomputes a finished request.

The key of a request is a hash of everything that determines its output: the prompt version's file content
hash, the model's identity (its files' hash), the stage, the sampling parameters and the exact prompt token
ids (which contain the rendered template and the input text). A changed prompt version, model or sampling
gives new keys, so stale outputs are never reused.

The store is one SQLite file (``OUTPUT/cache.sqlite`` by default; a shared path on clusters). Every output
is committed as soon as it arrives: a driver killed mid-job loses no finished request. The cache only ever
saves work: when it cannot be used the job runs without it (see :class:`RequestCache`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import structlog

from mapreduce_llm.engines.base import EngineOutput, EngineRequest

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


def request_key(request: EngineRequest, prompt_hash: str, model: str) -> str:
    """The content address of a request's output."""
    material = json.dumps(
        [
            prompt_hash,
            model,
            request.stage,
            request.max_tokens,
            request.temperature,
            request.top_p,
            request.repetition_penalty,
            request.seed,
            request.prompt_token_ids,
            request.json_schema,
        ]
        # only when set, so that the keys of every earlier request stay the same
        + (["ignore_eos"] if request.ignore_eos else [])
        + (["frequency_penalty", request.frequency_penalty] if request.frequency_penalty else [])
        + (["presence_penalty", request.presence_penalty] if request.presence_penalty else []),
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


class RequestCache:
    """A SQLite-backed map from request key to engine output.

    Safe from any thread: one connection, used under a lock (the engine client calls it from worker threads, so
    the event loop never waits on the disk). The database is opened on first use.

    A cache that cannot be used is not a job failure: a file that is not a database or is corrupt, a database
    another process keeps locked for longer than ``busy_timeout_s``, a folder that cannot be written, a full
    disk. The first such failure is logged once (``cache.unavailable``, a warning) and the cache turns itself
    off: lookups miss, outputs are not stored, the job goes on without it.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        """How long a read or write waits for another process's lock before the cache gives up."""
        self.hits = 0
        self.misses = 0
        self.unavailable: str | None = None
        """Why the cache turned itself off (None while it works)."""
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def get(self, key: str) -> EngineOutput | None:
        """The stored output for ``key``, or None (also when the cache is unavailable)."""
        row = self._use("read", lambda db: db.execute("SELECT output FROM outputs WHERE key = ?", (key,)).fetchone())
        output = None if row is None else self._decode(key, row[0])
        if output is None:
            self.misses += 1
        else:
            self.hits += 1
        return output

    def put(self, key: str, output: EngineOutput) -> None:
        """Store an output (committed immediately); dropped when the cache is unavailable."""
        data = json.dumps(asdict(output))
        self._use(
            "write", lambda db: db.execute("INSERT OR REPLACE INTO outputs (key, output) VALUES (?, ?)", (key, data))
        )

    def check(self) -> str | None:
        """Open the database now, creating it, so that a cache this machine cannot use is reported (one
        ``cache.unavailable`` warning) when the job starts rather than at its first finished request; returns why it
        is unavailable, None when it works. The job's driver opens the cache: on a cluster ``cache.path`` is a
        path on the driver's node (shared storage, to reuse it from jobs whose drivers run elsewhere)."""
        self._use("open", lambda db: None)
        return self.unavailable

    def __len__(self) -> int:
        count: int | None = self._use("count", lambda db: db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0])
        return count or 0

    def close(self) -> None:
        """Close the database (a later use opens it again)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _use(self, action: str, work: Callable[[sqlite3.Connection], _T]) -> _T | None:
        """Run ``work`` on the open database under the lock; None once the cache is unavailable."""
        with self._lock:
            if self.unavailable is not None:
                return None
            try:
                return work(self._open())
            except (sqlite3.Error, OSError) as exc:
                self._give_up(action, exc)
                return None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, output TEXT NOT NULL)")
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        return self._db

    def _give_up(self, action: str, exc: BaseException) -> None:
        self.unavailable = f"{type(exc).__name__}: {exc}"
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        log.warning(
            "cache.unavailable",
            path=str(self.path),
            host=socket.gethostname(),
            during=action,
            error=self.unavailable,
            hint="the job goes on without the output cache (finished requests are not kept for a rerun); "
            "move the file away if it is not a SQLite database or is corrupt, stop whatever holds it locked, "
            "free disk space, or point cache.path elsewhere (a path the job's driver can write on this host)",
        )

    def _decode(self, key: str, text: str) -> EngineOutput | None:
        """An output read back; None (a miss) for an entry this version cannot read."""
        try:
            data = json.loads(text)
            for name in ("tokens", "token_logprobs"):
                if data.get(name) is not None:
                    data[name] = tuple(data[name])
            return EngineOutput(**data)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("cache.unreadable_entry", path=str(self.path), key=key[:16], error=str(exc))
            return None
