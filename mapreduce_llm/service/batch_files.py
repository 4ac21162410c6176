"""A batch's files: its input split into one document file per job (validation), and its output and error files
written from the jobs' results (finalizing) — every input line gets exactly one line back, matched by
``custom_id``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mapreduce_llm.service import formats
from mapreduce_llm.service.formats import Batch, BatchError
from mapreduce_llm.service.jobs import FinishedResults
from mapreduce_llm.service.specs import SpecTemplate
from mapreduce_llm.service.store import Part, Store


@dataclass
class Split:
    """What validation found: the number of lines, the rejected ones, and the jobs to run."""

    total: int = 0
    errors: list[BatchError] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)


def split_input(store: Store, template: SpecTemplate, batch: Batch) -> Split:
    """Check every line of the batch's input file. Rejected lines go to ``rejected.jsonl`` (error-file lines);
    the others are grouped by prompt reference and per-request settings — a job spec has one prompt — into one
    part per group, whose ``input.jsonl`` (documents) and ``ids.jsonl`` (their custom ids) are written here."""
    folder = store.batch_dir(batch.id)
    split = Split()
    groups: dict[tuple[str, str], Part] = {}
    sinks: dict[int, tuple[IO[str], IO[str]]] = {}
    try:
        path = store.content_path(batch.input_file_id)
        with (folder / "rejected.jsonl").open("w", encoding="utf-8") as rejected_fh:
            for item in formats.read_input_file(path, template.max_document_bytes, batch.endpoint):
                split.total += 1
                if isinstance(item, formats.Rejected):
                    split.errors.append(item.error)
                    rejected_fh.write(formats.dumps(_rejected_line(batch.id, item)))
                    continue
                body = item.line.body
                settings = body.settings()
                problem = template.problem(body.prompt, settings)
                if problem is not None:
                    error = BatchError(
                        code="invalid_request", line=item.number, param="body", message=f"line {item.number}: {problem}"
                    )
                    split.errors.append(error)
                    rejected = formats.Rejected(error, item.line.custom_id)
                    rejected_fh.write(formats.dumps(_rejected_line(batch.id, rejected)))
                    continue
                key = (body.prompt, repr(sorted(settings.items())))
                part = groups.get(key)
                if part is None:
                    part = groups[key] = Part(index=len(groups), prompt=body.prompt, settings=settings)
                    part_dir = store.part_dir(batch.id, part.index)
                    part_dir.mkdir(parents=True, exist_ok=True)
                    sinks[part.index] = (
                        (part_dir / "input.jsonl").open("w", encoding="utf-8"),
                        (part_dir / "ids.jsonl").open("w", encoding="utf-8"),
                    )
                documents, ids = sinks[part.index]
                documents.write(formats.dumps(body.document(item.line.custom_id)))
                ids.write(formats.dumps({"custom_id": item.line.custom_id}))
                part.lines += 1
    except OSError as exc:
        split.errors.append(BatchError(code="unreadable_file", message=f"the input file could not be read: {exc}"))
    finally:
        for documents, ids in sinks.values():
            documents.close()
            ids.close()
    split.parts = list(groups.values())
    return split


def write_output_files(store: Store, batch_id: str, parts: list[Part], ending: str | None) -> tuple[Path, Path, int]:
    """The batch's ``output.jsonl`` and ``errors.jsonl`` from the rejected lines and each job's results; a line
    whose job never answered it is an error with the reason (``ending``: cancelled, expired, or a failed job).
    Returns both paths and the number of completed requests."""
    folder = store.batch_dir(batch_id)
    why = {
        "cancelled": ("batch_cancelled", "the batch was cancelled before this request ran"),
        "expired": ("batch_expired", "the batch expired before this request ran"),
    }.get(ending or "", ("job_failed", "the job running this request failed before it finished"))
    completed = 0
    out_path, err_path = folder / "output.jsonl", folder / "errors.jsonl"
    with out_path.open("w", encoding="utf-8") as out, err_path.open("w", encoding="utf-8") as err:
        rejected = folder / "rejected.jsonl"
        if rejected.is_file():
            with rejected.open(encoding="utf-8") as fh:
                for line in fh:
                    err.write(line)
        for part in parts:
            part_dir = store.part_dir(batch_id, part.index)
            results = FinishedResults(part_dir / "out")
            with (part_dir / "ids.jsonl").open(encoding="utf-8") as ids:
                for raw in ids:
                    custom_id = str(json.loads(raw)["custom_id"])
                    result = results.get(custom_id)
                    if result is None:
                        err.write(formats.dumps(formats.failed_line(batch_id, custom_id, *why)))
                        continue
                    ok, written = formats.output_line(batch_id, custom_id, result)
                    completed += ok
                    (out if ok else err).write(formats.dumps(written))
    return out_path, err_path, completed


def _rejected_line(batch_id: str, rejected: formats.Rejected) -> dict[str, Any]:
    return formats.failed_line(batch_id, rejected.custom_id, rejected.error.code, rejected.error.message)
