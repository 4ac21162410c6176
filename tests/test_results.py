"""Result records (results.py): what a line of results.jsonl holds, error records, and the summary's tally."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from mapreduce_llm.errors import DocumentError
from mapreduce_llm.prompts import PromptRef, load_prompt_file
from mapreduce_llm.results import (
    DocumentResult,
    ErrorInfo,
    Fingerprints,
    JobTally,
    MapAnswer,
    PromptInfo,
    Provenance,
    Usage,
    error_result,
    printable,
)
from tests.conftest import PROMPTS


def _ok(**fields: object) -> DocumentResult:
    return DocumentResult.model_validate({"id": "a", "status": "ok", "output": "done", **fields})


def test_ok_and_failed_follow_the_status() -> None:
    """.ok and .failed read the status; they are properties, not fields written to results.jsonl."""
    ok = _ok()
    failed = DocumentResult(id="b", status="error", error=ErrorInfo(code="empty", message="empty"))
    assert (ok.ok, ok.failed, failed.ok, failed.failed) == (True, False, False, True)
    assert "ok" not in ok.model_dump() and "failed" not in json.loads(ok.model_dump_json())


def test_a_result_round_trips_through_json() -> None:
    """A full record reads back equal from its JSON line (what resume relies on)."""
    result = _ok(
        prompt=PromptInfo(name="qa", version="2.0.0"),
        provenance=[Provenance(chunk_id="a#0", start=3, end=9, quote="quoted")],
        answers=[MapAnswer(chunk_id="a#0", status="kept", answer="x", confidence=-0.1)],
        usage=Usage(requests={"map": 2, "reduce": 1}, prompt_tokens=10),
        fingerprints=Fingerprints(input="i", settings="s"),
        metadata={"topic": "x"},
    )
    assert DocumentResult.model_validate_json(result.model_dump_json()) == result


def test_records_refuse_unknown_fields() -> None:
    """A record with a field this release does not know is refused, not half-read; so is an unknown status."""
    with pytest.raises(ValidationError, match="extra"):
        DocumentResult.model_validate({"id": "a", "status": "ok", "colour": "red"})
    with pytest.raises(ValidationError):
        MapAnswer.model_validate({"chunk_id": "a#0", "status": "maybe"})


def test_error_records_are_writable_whatever_the_input_held() -> None:
    """An error record names the prompt version and carries ids, sources and messages with lone surrogates escaped."""
    path = PROMPTS / "qa" / "1.0.0.yaml"
    prompt = PromptRef("qa", "1.0.0", path, load_prompt_file(path))
    err = DocumentError("bad \udc80 byte", document_id="doc-\udc80", code="invalid_utf8")
    record = error_result(err, prompt, "m", "in.jsonl:\udc80", Fingerprints(input="i", settings="s"))
    assert record.failed and record.error == ErrorInfo(code="invalid_utf8", message="bad \\udc80 byte")
    assert (record.id, record.source) == ("doc-\\udc80", "in.jsonl:\\udc80")
    assert record.prompt == PromptInfo(name="qa", version="1.0.0")
    record.model_dump_json().encode("utf-8")  # writable
    assert printable("plain") == "plain"
    assert error_result(err, None, None, None).prompt is None


def test_the_tally_counts_what_the_summary_reports() -> None:
    """JobTally adds results up for summary.json: outcomes, resumed ones, error codes, versions, usage, levels."""
    tally = JobTally()
    qa = PromptInfo(name="qa", version="1.0.0")
    tally.add(
        _ok(prompt=qa, chunks=3, levels=2, usage=Usage(requests={"map": 3, "reduce": 1}, prompt_tokens=7)),
        resumed=False,
    )
    tally.add(_ok(prompt=qa, chunks=1, usage=Usage(requests={"map": 1}, completion_tokens=5)), resumed=True)
    tally.add(DocumentResult(id="c", status="error", error=ErrorInfo(code="empty", message="")), resumed=False)
    assert (tally.documents, tally.ok, tally.errors, tally.resumed) == (3, 2, 1, 1)
    assert tally.errors_by_code == {"empty": 1} and tally.by_version == {"qa@1.0.0": 2}
    assert tally.requests == {"map": 4, "reduce": 1} and tally.chunks == 4 and tally.max_levels == 2
    assert (tally.prompt_tokens, tally.completion_tokens) == (7, 5)
