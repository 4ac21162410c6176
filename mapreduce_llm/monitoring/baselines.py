"""The baselines folder: one ``NAME.json`` per baseline (:class:`~mapreduce_llm.monitoring.drift.Baseline`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mapreduce_llm import paths
from mapreduce_llm.atomic import write_atomic
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.monitoring.drift import Baseline

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class BaselineStore:
    """Baselines saved in a folder: ``folder`` (default :func:`mapreduce_llm.paths.baselines_dir`:
    ``$MAPREDUCE_LLM_BASELINES``, else ./baselines)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or paths.baselines_dir()

    def path(self, name: str) -> Path:
        """``FOLDER/NAME.json``; the name is checked so that it cannot point outside the folder."""
        if not _NAME.match(name):
            raise ConfigError(
                f"baseline name must be letters, digits, '.', '_' or '-' (at most 100), got {name!r}",
                parameter="baseline",
                value=name,
            )
        return self.folder / f"{name}.json"

    def names(self) -> list[str]:
        """The baselines in the folder, sorted."""
        return sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []

    def save(self, baseline: Baseline) -> Path:
        """Write ``FOLDER/NAME.json`` atomically; returns its path."""
        path = self.path(baseline.name)
        write_atomic(path, json.dumps(baseline.model_dump(), indent=1) + "\n")
        return path

    def load(self, name: str) -> Baseline:
        """Read ``FOLDER/NAME.json``; a missing or broken file names what to do."""
        path = self.path(name)
        if not path.is_file():
            raise ConfigError(
                f"baseline {name!r} not found at {path}; create it with `mapreduce-llm drift baseline --results "
                f"DIR --name {name}` (known: {', '.join(self.names()) or 'none'})",
                parameter="baseline",
                value=name,
            )
        try:
            return Baseline.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"baseline {path} is not a valid baseline file: {exc}", parameter="baseline") from None
