"""Shared pieces of the batch service's unit tests: a service over a fake job runner and a fake clock."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapreduce_llm.service.batches import Batches
from mapreduce_llm.service.formats import BatchCreate, FileObject
from mapreduce_llm.service.limits import ServiceLimits
from mapreduce_llm.service.specs import SpecTemplate
from mapreduce_llm.service.store import Store
from tests.conftest import PROMPTS
from tests.fake_jobs import FakeClock, FakeJobRunner


@dataclass
class Service:
    batches: Batches
    runner: FakeJobRunner
    clock: FakeClock
    store: Store

    def upload(self, lines: list[dict[str, Any] | str]) -> str:
        """A batch input file holding ``lines`` (dicts as JSON, strings as they are); returns its id."""
        file_id = self.store.new_file_id()
        text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
        self.store.content_path(file_id).write_text(text, encoding="utf-8")
        now = int(self.clock())
        self.store.save_file(
            FileObject(id=file_id, bytes=len(text), created_at=now, filename="in.jsonl", purpose="batch")
        )
        return file_id

    def create(self, lines: list[dict[str, Any] | str], **fields: Any) -> str:
        request = BatchCreate(input_file_id=self.upload(lines), endpoint="/v1/mapreduce", **fields)
        return self.batches.create(request).id

    def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        """The JSON lines of an output or error file ([] when there is none)."""
        if file_id is None:
            return []
        text = self.store.content_path(file_id).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]


def make_service(root: Path, limits: ServiceLimits | None = None, failing_ids: frozenset[str] = frozenset()) -> Service:
    store = Store(root / "state")
    runner = FakeJobRunner(failing_ids)
    clock = FakeClock()
    template = SpecTemplate(settings={"prompts_dir": str(PROMPTS)})
    return Service(Batches(store, runner, template, limits, clock), runner, clock, store)


def line(custom_id: str, text: str = "Some text to summarize.", **body: Any) -> dict[str, Any]:
    """A valid input line for the document endpoint."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/mapreduce",
        "body": {"prompt": "summarize@1.0.0", "text": text, **body},
    }
