"""The job spec of each batch job: the service's default spec, with the batch's input, output and prompt and
the settings its lines asked for."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mapreduce_llm.config import JobSpec, apply_overrides, load_spec
from mapreduce_llm.errors import MapReduceError
from mapreduce_llm.prompts import select_prompts


class SpecTemplate:
    """The service's job spec for batches (``serve --spec FILE``: engine, limits, monitoring ...; its ``input``,
    ``output``, ``prompt`` and ``job_id`` are set per job) and extra settings by dotted path
    (``serve --set KEY=VALUE``)."""

    def __init__(self, spec_file: Path | None = None, settings: Mapping[str, Any] | None = None) -> None:
        self.spec_file = spec_file
        self.settings = dict(settings or {})
        self._checked: dict[tuple[str, str], str | None] = {}
        self.base = self.build(input=Path("/batch/input.jsonl"), output=Path("/batch/out"), prompt=None, job_id="check")
        """The spec with placeholder paths: what every job shares (limits, engine)."""

    def build(
        self,
        *,
        input: Path,
        output: Path,
        prompt: str | None,
        job_id: str,
        settings: Mapping[str, Any] | None = None,
    ) -> JobSpec:
        """The spec of one job (ConfigError when the settings are not valid for it)."""
        fields: dict[str, Any] = {**self.settings, "input": str(input), "output": str(output), "job_id": job_id}
        if prompt is not None:
            fields["prompt"] = prompt
        fields.update(settings or {})
        if self.spec_file is not None:
            return load_spec(self.spec_file, fields)
        return apply_overrides({}, fields, source="(service settings)")

    @property
    def max_document_bytes(self) -> int:
        """The job's per-document limit, which every input line must respect."""
        return self.base.limits.max_document_bytes

    def problem(self, prompt: str, settings: Mapping[str, Any]) -> str | None:
        """Why a line's prompt reference or settings cannot run (None: they can); remembered per combination."""
        key = (prompt, repr(sorted(settings.items())))
        if key not in self._checked:
            try:
                spec = self.build(
                    input=self.base.input, output=self.base.output, prompt=prompt, job_id="check", settings=settings
                )
                select_prompts(spec.prompt, spec.prompts_dir)
                self._checked[key] = None
            except MapReduceError as exc:
                self._checked[key] = str(exc)
        return self._checked[key]
