"""Content-addressed cache of engine outputs, so that a rerun never recomputes a finished request.

The key of a request is a hash of everything that determines its output: the prompt version's file content
hash, the model, the stage, the sampling parameters and the exact prompt token ids (which contain the
rendered template and the input text). A changed prompt version, model or sampling gives new keys, so stale
outputs are never reused.

The store is one SQLite file (``OUTPUT/cache.sqlite`` by default; a shared path on clusters). Every output
is committed as soon as it arrives: a driver killed mid-job loses no finished request.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.prompts import PromptFile


def prompt_hash(prompt: PromptFile) -> str:
    """Content hash of a prompt version: its validated fields that differ from their defaults, so neither
    formatting-only edits nor a new optional field in a later release of this package change it."""
    return hashlib.sha256(prompt.model_dump_json(exclude_defaults=True).encode()).hexdigest()


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
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


class RequestCache:
    """A SQLite-backed map from request key to engine output."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, output TEXT NOT NULL)")
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> EngineOutput | None:
        """The stored output for ``key``, or None."""
        row = self._db.execute("SELECT output FROM outputs WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        data = json.loads(row[0])
        for name in ("tokens", "token_logprobs"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return EngineOutput(**data)

    def put(self, key: str, output: EngineOutput) -> None:
        """Store an output (committed immediately)."""
        self._db.execute(
            "INSERT OR REPLACE INTO outputs (key, output) VALUES (?, ?)", (key, json.dumps(asdict(output)))
        )

    def __len__(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]
        return count

    def close(self) -> None:
        """Close the database."""
        self._db.close()
