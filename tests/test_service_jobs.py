"""What the service reads of a job's output folder, and the Ray job states it maps (mapreduce_llm.service.jobs)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mapreduce_llm import submission
from mapreduce_llm.output import PARTIAL_FILE, RESULTS_FILE
from mapreduce_llm.results import DocumentResult, ErrorInfo
from mapreduce_llm.service.jobs import FinishedResults, ProgressReader, RayJobRunner


def _ok(doc_id: str) -> str:
    return DocumentResult(id=doc_id, status="ok", output=f"out {doc_id}").model_dump_json() + "\n"


def _error(doc_id: str) -> str:
    error = ErrorInfo(code="empty", message="empty text")
    return DocumentResult(id=doc_id, status="error", error=error).model_dump_json() + "\n"


def test_progress_reads_only_complete_new_lines(tmp_path: Path) -> None:
    """A line being written is left for the next read; an id seen again counts once (last status wins)."""
    partial = tmp_path / PARTIAL_FILE
    partial.write_text(_ok("a") + _error("b") + _ok("c")[:10])
    reader = ProgressReader()
    assert reader.counts(tmp_path) == (1, 1)
    partial.write_text(_ok("a") + _error("b") + _ok("c") + _ok("b"))
    assert reader.counts(tmp_path) == (3, 0)


def test_progress_follows_the_job_to_results_jsonl(tmp_path: Path) -> None:
    """When the job publishes results.jsonl and drops its partial log, the counts stay."""
    reader = ProgressReader()
    (tmp_path / PARTIAL_FILE).write_text(_ok("a"))
    assert reader.counts(tmp_path) == (1, 0)
    (tmp_path / RESULTS_FILE).write_text(_ok("a") + _ok("b"))
    (tmp_path / PARTIAL_FILE).unlink()
    assert reader.counts(tmp_path) == (2, 0)
    assert reader.counts(tmp_path / "missing") == (0, 0)


def test_finished_results_later_lines_win(tmp_path: Path) -> None:
    """A resumed job's partial log after results.jsonl: the newest record of each id."""
    (tmp_path / RESULTS_FILE).write_text(_error("a"))
    (tmp_path / PARTIAL_FILE).write_text("not json\n" + _ok("a") + _ok("b"))
    results = FinishedResults(tmp_path)
    found = results.get("a")
    assert found is not None and found.status == "ok"
    assert results.get("b") is not None and results.get("c") is None


class _Jobs:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    def __call__(self, address: str | None, submission_id: str) -> object:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (SimpleNamespace(status=SimpleNamespace(value="RUNNING"), message=None), "running"),
        (SimpleNamespace(status="SUCCEEDED", message="done"), "succeeded"),
        (SimpleNamespace(status="STOPPED", message=None), "stopped"),
        (submission.SubmissionError("the Ray cluster at x answered: Job x does not exist"), "missing"),
    ],
)
def test_ray_states(monkeypatch: pytest.MonkeyPatch, answer: object, status: str) -> None:
    """Ray's JobStatus values map to the service's; an unknown submission is `missing` (sent again)."""
    monkeypatch.setattr(submission, "job_info", _Jobs(answer))
    assert RayJobRunner("http://127.0.0.1:1").state("s").status == status


def test_an_unreachable_cluster_is_an_error_not_a_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch is not touched while the cluster cannot be asked: the error reaches the tick, which retries."""
    monkeypatch.setattr(submission, "job_info", _Jobs(submission.SubmissionError("cannot reach the Ray dashboard")))
    with pytest.raises(submission.SubmissionError):
        RayJobRunner("http://127.0.0.1:1").state("s")
