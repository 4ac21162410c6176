"""The output folder (output.py): results in input order, the partial log, the resume index, one writer at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mapreduce_llm.errors import ConfigError, OutputInUseError
from mapreduce_llm.output import (
    PARTIAL_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    OutputLock,
    PreviousResults,
    ResultLog,
    write_atomic,
)
from mapreduce_llm.results import DocumentResult, ErrorInfo, Fingerprints, JobSummary


def _result(doc_id: str, input_fp: str = "i", settings_fp: str = "s") -> DocumentResult:
    return DocumentResult(
        id=doc_id, status="ok", output=f"out {doc_id}", fingerprints=Fingerprints(input=input_fp, settings=settings_fp)
    )


def _summary(documents: int) -> JobSummary:
    return JobSummary(
        job_id="j",
        status="completed",
        input="in",
        output="out",
        prompt="qa",
        model="m",
        max_model_len=1024,
        started_at=0.0,
        finished_at=1.0,
        seconds=1.0,
        documents=documents,
        ok=documents,
        errors=0,
    )


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_results_are_written_in_input_order(tmp_path: Path) -> None:
    """Results finishing out of order reach results.jsonl in input order; the partial log keeps finishing order."""
    log = ResultLog(tmp_path, "j")
    for index in (2, 0, 3, 1):
        log.add(index, _result(f"d{index}"))
        if index == 2:
            assert log.buffered == 1  # waits for documents 0 and 1
    assert log.buffered == 0 and log.peak_buffered == 3  # d2, d3 and d1 held at once, as d1 came in
    assert _ids(tmp_path / PARTIAL_FILE) == ["d2", "d0", "d3", "d1"]
    log.finish(_summary(4))
    assert _ids(tmp_path / RESULTS_FILE) == ["d0", "d1", "d2", "d3"]
    assert json.loads((tmp_path / SUMMARY_FILE).read_text())["documents"] == 4
    assert not (tmp_path / PARTIAL_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", RESULTS_FILE, SUMMARY_FILE]


def test_a_reused_result_is_not_logged_again(tmp_path: Path) -> None:
    """A result reused from an earlier run goes into results.jsonl but not into the partial log."""
    log = ResultLog(tmp_path, "j")
    log.add(0, _result("old"), fresh=False)
    log.add(1, _result("new"))
    assert _ids(tmp_path / PARTIAL_FILE) == ["new"]
    log.finish(_summary(2))
    assert _ids(tmp_path / RESULTS_FILE) == ["old", "new"]


def test_an_abandoned_log_keeps_the_partial_results(tmp_path: Path) -> None:
    """A failed job leaves results.jsonl as it was and keeps the partial log, which the next run indexes."""
    (tmp_path / RESULTS_FILE).write_text(_result("earlier").model_dump_json() + "\n")
    log = ResultLog(tmp_path, "j")
    log.add(1, _result("d1"))
    log.abandon(_summary(1).model_copy(update={"status": "failed"}))
    assert _ids(tmp_path / RESULTS_FILE) == ["earlier"] and _ids(tmp_path / PARTIAL_FILE) == ["d1"]
    assert json.loads((tmp_path / SUMMARY_FILE).read_text())["status"] == "failed"
    assert not list(tmp_path.glob(f".{RESULTS_FILE}.*"))  # the incomplete ordered file is gone
    again = ResultLog(tmp_path, "j")
    assert again.previous.count == 2
    again.abandon(_summary(0))


def test_finishing_with_a_gap_is_refused(tmp_path: Path) -> None:
    """results.jsonl is never published with a document missing."""
    log = ResultLog(tmp_path, "j")
    log.add(1, _result("d1"))
    with pytest.raises(RuntimeError, match="results missing before document 0"):
        log.finish(_summary(1))
    assert not (tmp_path / RESULTS_FILE).exists()
    log.abandon(_summary(1))


def test_the_resume_index_reuses_only_exact_matches(tmp_path: Path) -> None:
    """lookup returns the earlier result when both fingerprints match, else why it is recomputed."""
    rows = [
        _result("same"),
        _result("text", input_fp="old"),
        _result("settings", settings_fp="old"),
        DocumentResult(id="failed", status="error", error=ErrorInfo(code="empty", message="")),
        DocumentResult(id="older", status="ok", output="x"),
    ]
    (tmp_path / RESULTS_FILE).write_text("".join(r.model_dump_json() + "\n" for r in rows) + '{"id": "cut')
    (tmp_path / PARTIAL_FILE).write_text(_result("text", input_fp="i").model_dump_json() + "\n")  # newer: wins
    index = PreviousResults(tmp_path)
    assert index.index([tmp_path / RESULTS_FILE, tmp_path / PARTIAL_FILE]) == 5
    assert index.lookup("same", "i", "s") == rows[0]
    assert index.lookup("text", "i", "s") == _result("text")
    assert index.lookup("settings", "i", "s") == "settings_changed"
    assert index.lookup("failed", "i", "s") == "previous_error"
    assert index.lookup("older", "i", "s") == "older_format"
    assert index.lookup("absent", "i", "s") is None
    index.close()
    assert not index.path.exists()


def test_leftovers_of_a_killed_run_are_cleared(tmp_path: Path) -> None:
    """Temporary ordered files a killed run left behind are removed when the next log opens."""
    (tmp_path / f".{RESULTS_FILE}.abc123").write_text("half\n")
    log = ResultLog(tmp_path, "j")
    assert len(list(tmp_path.glob(f".{RESULTS_FILE}.*"))) == 1  # only this run's own
    log.finish(_summary(0))
    assert not list(tmp_path.glob(f".{RESULTS_FILE}.*"))


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    """write_atomic creates missing folders, replaces the file whole and leaves no temporary file."""
    target = tmp_path / "deep" / "file.json"
    write_atomic(target, "one\n")
    write_atomic(target, "two\n")
    assert target.read_text() == "two\n" and [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_second_job_into_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    """A second writer gets an error naming the job that holds the folder; it can write once that one ends."""
    first = OutputLock(tmp_path / "out", "nightly-summaries")
    first.acquire()
    with pytest.raises(OutputInUseError, match=r"in use by job 'nightly-summaries' \(pid \d+"):
        OutputLock(tmp_path / "out", "other").acquire()
    with pytest.raises(OutputInUseError, match="nightly-summaries"):
        ResultLog(tmp_path / "out", "other")
    first.release()
    second = OutputLock(tmp_path / "out", "other")
    second.acquire()
    second.release()


def test_lock_of_a_killed_job_does_not_block(tmp_path: Path) -> None:
    """A job killed by SIGKILL leaves its lock file behind, but not the lock: the next job starts."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from mapreduce_llm.output import OutputLock
        lock = OutputLock(Path({str(tmp_path / "out")!r}), "killed-job")
        lock.acquire()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(OutputInUseError, match="killed-job"):
            OutputLock(tmp_path / "out", "next").acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert (tmp_path / "out" / ".lock").exists()
    lock = OutputLock(tmp_path / "out", "next")
    lock.acquire()
    lock.release()


def test_an_output_folder_the_driver_cannot_create_fails_the_job_before_it_starts(tmp_path: Path) -> None:
    """run_job into a folder this machine cannot create (under a regular file): a ConfigError naming the folder, the
    driver's machine and what to do on a cluster, raised before the tokenizer or an engine is loaded."""
    import socket

    from mapreduce_llm.config import JobSpec
    from mapreduce_llm.runner import run_job

    (tmp_path / "doc.txt").write_text("A document.")
    (tmp_path / "file").write_text("not a folder")

    class NoEngine:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the engine was used ({name}) although the output folder is unusable")

    spec = JobSpec(input=tmp_path / "doc.txt", output=tmp_path / "file" / "out", engine={"model": "/no/such/model"})
    with pytest.raises(ConfigError) as info:
        run_job(spec, engine=NoEngine())  # type: ignore[arg-type]
    message = str(info.value)
    assert f"output folder {tmp_path / 'file' / 'out'} cannot be created or written" in message
    assert socket.gethostname() in message and "the head, for jobs sent with `cluster submit`" in message
    assert info.value.parameter == "output"
