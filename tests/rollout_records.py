"""Result records of a canary and production for the rollout guard's tests: written as a job's output folder, or
counted by the job's own MetricsObserver (to push to a Pushgateway)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mapreduce_llm.results import DocumentResult, ErrorInfo, MapAnswer, PromptInfo


def documents(
    version: str,
    count: int,
    *,
    errors: int = 0,
    not_found: int = 0,
    logprob: float = -0.5,
    parse_failures: int = 0,
    task: str = "qa",
) -> list[DocumentResult]:
    """``count`` results of ``task@version``: the first ``errors`` failed, the next ``not_found`` answered "not
    found", every answered one with two map answers; ``parse_failures`` spread one per document from the start."""
    prompt = PromptInfo(name=task, version=version)
    records = []
    for i in range(count):
        doc_id = f"{version}-{i}"
        if i < errors:
            error = ErrorInfo(code="engine_request", message="the engine rejected the request")
            records.append(DocumentResult(id=doc_id, status="error", prompt=prompt, error=error))
            continue
        answers = [MapAnswer(chunk_id=f"{doc_id}-c{c}", status="kept", confidence=logprob) for c in range(2)]
        records.append(
            DocumentResult(
                id=doc_id,
                status="ok",
                prompt=prompt,
                output="NOT FOUND" if i < errors + not_found else "blue",
                not_found=i < errors + not_found,
                mean_logprob=logprob,
                answers=answers,
                parse_failures=1 if i - errors < parse_failures else 0,
            )
        )
    return records


def write_results(folder: Path, records: list[DocumentResult], drift: dict[str, Any] | None = None) -> Path:
    """A finished job's output folder: results.jsonl (and summary.json's ``drift`` when given)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(r.model_dump_json(exclude_none=True) + "\n" for r in records)
    (folder / "results.jsonl").write_text(lines, encoding="utf-8")
    if drift is not None:
        (folder / "summary.json").write_text(json.dumps({"drift": drift}), encoding="utf-8")
    return folder
