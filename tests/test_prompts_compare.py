"""Comparing two prompt versions (prompts/compare.py): scores, distributions and costs over hand-made result folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mapreduce_llm.errors import ConfigError
from mapreduce_llm.prompts.compare import (
    Quantiles,
    compare,
    comparison_json,
    is_correct,
    read_results,
    says_not_found,
    table,
)
from mapreduce_llm.results import DocumentResult, JobSummary


def record(doc: str, version: str, output: str | None, answer: Any = "absent", **fields: Any) -> dict[str, Any]:
    """A result record of qa@VERSION; ``answer``: the expected answer in metadata (``absent``: no such field)."""
    rec: dict[str, Any] = {
        "id": doc,
        "status": "ok" if output is not None else "error",
        "output": output,
        "prompt": {"name": fields.pop("task", "qa"), "version": version},
        "metadata": {} if answer == "absent" else {"answer": answer},
        **fields,
    }
    if output is None:
        rec["error"] = {"code": "engine_request", "message": "the engine failed"}
    return rec


def summary(**fields: Any) -> dict[str, Any]:
    """A summary.json of a finished job."""
    base = {
        "job_id": "j",
        "status": "completed",
        "input": "in.jsonl",
        "output": "out",
        "prompt": "qa",
        "model": "m",
        "max_model_len": 2048,
        "started_at": 1.0,
        "finished_at": 9.0,
        "seconds": 8.0,
        "documents": 4,
        "ok": 3,
        "errors": 1,
    }
    return base | fields


def folder(path: Path, records: list[dict[str, Any]], job: dict[str, Any] | None = None) -> Path:
    """A job's output folder: results.jsonl (+ summary.json)."""
    path.mkdir(parents=True)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    if job is not None:
        (path / "summary.json").write_text(json.dumps(job), encoding="utf-8")
    return path


def side(path: Path) -> tuple[str, str, list[DocumentResult], JobSummary | None]:
    results, job = read_results(path)
    return path.name, str(path), results, job


OLD = [
    record("n1", "1.0.0", "I'm ready to help!", "8093", confidence=None, mean_logprob=-1.5),
    record("n2", "1.0.0", "It is Cragsmere.", "Cragsmere", mean_logprob=-0.5),
    record("x1", "1.0.0", "Some invented answer", None, mean_logprob=-0.9),
    record("free", "1.0.0", "A summary", mean_logprob=-0.7),
]
NEW = [
    record("n1", "2.0.0", "8093", "8093", confidence=-0.2, mean_logprob=-0.3, parse_failures=2),
    record("n2", "2.0.0", None, "Cragsmere"),
    record("x1", "2.0.0", "NOT FOUND.", None, confidence=-0.6, mean_logprob=-0.6),
    record("free", "2.0.0", "NOT FOUND", confidence=-1.0, usage={"prompt_tokens": 100, "completion_tokens": 7}),
]


def test_scores_count_expected_answers_and_never_an_error(tmp_path: Path) -> None:
    """Right answers and right "not found" are scored only where `answer` is given; an error is never right."""
    c = compare("qa", side(folder(tmp_path / "old", OLD)), side(folder(tmp_path / "new", NEW)))
    assert (c.a.answers_right, c.a.answers_total, c.a.not_found_right, c.a.not_found_total) == (1, 2, 0, 1)
    assert (c.b.answers_right, c.b.answers_total, c.b.not_found_right, c.b.not_found_total) == (1, 2, 1, 1)
    assert (c.b.errors, c.b.errors_by_code, c.b.said_not_found) == (1, {"engine_request": 1}, 2)
    assert (c.a.scored, c.a.right, c.b.right, c.better) == (3, 1, 2, "b")


def test_an_error_on_a_document_without_the_answer_is_not_a_right_not_found(tmp_path: Path) -> None:
    """A failed document whose answer is null does not count as a right "not found" (its output is empty)."""
    failed = [record("x1", "2.0.0", None, None)]
    c = compare("qa", side(folder(tmp_path / "a", failed)), side(folder(tmp_path / "b", failed)))
    assert (c.a.not_found_right, c.a.not_found_total, c.a.said_not_found) == (0, 1, 0)


def test_distributions_tokens_and_summary_figures(tmp_path: Path) -> None:
    """Confidence and seconds are p10/median/p90 over ok documents; tokens and requests sum; summary adds the rest."""
    timed = [
        record(f"d{i}", "2.0.0", "x", confidence=-i / 10, timings={"total_s": float(i)}, usage={"requests": {"map": i}})
        for i in range(1, 6)
    ]
    job = summary(requests_sent=4, resumed=1, seconds=12.345)
    c = compare("qa", side(folder(tmp_path / "a", timed, job)), side(folder(tmp_path / "b", timed)))
    assert c.a.confidence == Quantiles(5, -0.46, -0.3, -0.14)
    assert c.a.document_seconds == Quantiles(5, 1.4, 3.0, 4.6)
    assert (c.a.requests, c.a.requests_sent, c.a.resumed, c.a.job_seconds) == (15, 4, 1, 12.3)
    assert (c.b.requests_sent, c.b.job_seconds) == (None, None)
    assert c.better is None and Quantiles.of([None]) == Quantiles(0)


def test_documents_only_on_one_side_are_listed_not_compared(tmp_path: Path) -> None:
    """Only ids both sides have are compared; the others are listed per side."""
    c = compare("qa", side(folder(tmp_path / "old", OLD)), side(folder(tmp_path / "new", NEW[:2])))
    assert (c.a.documents, c.only_a, c.only_b) == (2, ["free", "x1"], [])
    assert "not compared: 2 documents only in" in table(c)[-2]


def test_sides_without_a_common_document_or_of_another_task_are_refused(tmp_path: Path) -> None:
    """No shared document id, or records of another task, is a ConfigError saying what to compare instead."""
    other = folder(tmp_path / "other", [record("z", "2.0.0", "x")])
    with pytest.raises(ConfigError, match=r"share no document id .* same input"):
        compare("qa", side(folder(tmp_path / "old", OLD)), side(other))
    summaries = folder(tmp_path / "sum", [record("n1", "1.0.0", "x", task="summarize")])
    with pytest.raises(ConfigError, match="ran prompt task summarize, not qa"):
        compare("qa", side(summaries), side(tmp_path / "old"))


def test_unreadable_folders_name_the_file_and_what_to_give(tmp_path: Path) -> None:
    """A missing folder, a folder without results.jsonl, or a bad line is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="does not exist; give the --output folder"):
        read_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"has no results\.jsonl"):
        read_results(tmp_path / "empty")
    bad = folder(tmp_path / "bad", OLD)
    with (bad / "results.jsonl").open("a") as f:
        f.write('{"id": "q"}\n')
    with pytest.raises(ConfigError, match=r"results.jsonl:5 is not a result record"):
        read_results(bad)


def test_table_has_a_row_per_figure_and_names_the_better_side(tmp_path: Path) -> None:
    """The table's columns are the two sides; its last line names the better one with its count."""
    lines = table(compare("qa", side(folder(tmp_path / "old", OLD)), side(folder(tmp_path / "new", NEW))))
    assert lines[0].split() == ["old", "new"] and set(lines[1]) == {"-"}
    rows = {line.split("  ")[0]: line for line in lines[2:-1]}
    assert rows["answers right"].split()[-4:] == ["1/2", "(50%)", "1/2", "(50%)"]
    assert rows['"not found" right'].split()[-4:] == ["0/1", "(0%)", "1/1", "(100%)"]
    assert "1 (1 engine_request)" in rows["errors"]
    assert rows["job seconds"].split()[-1] == "–" and rows["engine requests (sent this run)"].split()[-1] == "(–)"
    assert lines[-1] == "better: new, 2 of 3 documents right against 1"


def test_json_carries_every_figure(tmp_path: Path) -> None:
    """--json's object has both sides' figures, quantiles as objects, and the verdict."""
    c = compare("qa", side(folder(tmp_path / "old", OLD)), side(folder(tmp_path / "new", NEW)))
    data = json.loads(json.dumps(comparison_json(c)))
    assert data["better"] == "b" and data["a"]["name"] == "old" and data["b"]["right"] == 2
    assert data["b"]["confidence"] == {"n": 3, "p10": -0.92, "median": -0.6, "p90": -0.28}
    assert data["b"]["parse_failures"] == 2 and data["b"]["versions"] == {"qa@2.0.0": 4}


@pytest.mark.parametrize(
    ("expected", "output", "right"),
    [
        ("8093", "The combination is 8093.", True),
        ("Achterberg", "desmond achterberg", True),
        ("8093", "8039", False),
        ("8093", "NOT FOUND", False),
        (None, "NOT FOUND", True),
        (None, ' "not found." ', True),
        (None, "", True),
        (None, "8093", False),
        (None, "The answer is NOT FOUND", False),
    ],
)
def test_is_correct_is_the_needle_rule(expected: str | None, output: str, right: bool) -> None:
    """An answer is right when it contains the expected one; "not found" is the job's own rule."""
    assert is_correct(expected, output) is right


def test_not_found_reply_is_the_prompts() -> None:
    """says_not_found takes the prompt's reply, case-insensitive."""
    assert says_not_found("unknown.", "UNKNOWN") and not says_not_found("NOT FOUND", "UNKNOWN")
