"""OpenAI batch lines ↔ documents and results (mapreduce_llm.service.formats)."""

from __future__ import annotations

import json
from pathlib import Path

from mapreduce_llm.results import DocumentResult, ErrorInfo
from mapreduce_llm.service.formats import Rejected, ValidLine, failed_line, output_line, read_input_file


def _line(custom_id: str) -> str:
    body = {"prompt": "qa", "text": "t", "question": "q?", "metadata": {"field": "f"}, "max_tokens": 64}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/mapreduce", "body": body})


def test_lines_with_any_line_end_and_a_bom(tmp_path: Path) -> None:
    """CRLF, CR, a UTF-8 BOM and blank lines: line numbers count every line, as the job reader does."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _line("a").encode() + b"\r\n\r\n" + _line("b").encode() + b"\r")
    items = list(read_input_file(path, 10_000))
    assert [(type(i).__name__, i.number if isinstance(i, ValidLine) else None) for i in items] == [
        ("ValidLine", 1),
        ("ValidLine", 3),
    ]
    first = items[0]
    assert isinstance(first, ValidLine)
    assert first.line.body.settings() == {"sampling.reserved_output_tokens": 64}
    assert first.line.body.document("a") == {"field": "f", "id": "a", "text": "t", "question": "q?"}


def test_a_line_that_is_not_utf8_is_rejected_alone(tmp_path: Path) -> None:
    """invalid_utf8 for that line; the next line is read."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"custom_id": "\xff"}\n' + _line("b").encode() + b"\n")
    first, second = read_input_file(path, 10_000)
    assert isinstance(first, Rejected) and first.error.code == "invalid_utf8" and first.error.line == 1
    assert isinstance(second, ValidLine)


def test_output_and_error_lines() -> None:
    """OpenAI's line shape: id, custom_id, response {status_code, request_id, body}, error."""
    ok, line = output_line("batch_1", "a", DocumentResult(id="a", status="ok", output="x"))
    assert ok and set(line) == {"id", "custom_id", "response", "error"} and line["error"] is None
    assert line["response"]["body"]["output"] == "x"
    failed = DocumentResult(id="b", status="error", error=ErrorInfo(code="empty", message="empty text"))
    ok, line = output_line("batch_1", "b", failed)
    assert not ok and line["response"]["status_code"] == 400
    assert line["error"] == {"code": "empty", "message": "empty text"}
    assert output_line("batch_1", "b", failed)[1]["id"] == line["id"]  # stable across rewrites
    never = failed_line("batch_1", "c", "batch_cancelled", "cancelled")
    assert never["response"] is None and never["error"]["code"] == "batch_cancelled"
