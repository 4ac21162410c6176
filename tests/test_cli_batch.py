"""`run` reads and writes OpenAI batch files (batch_lines.py): batch lines in, batch output and error files out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from mapreduce_llm import runner
from mapreduce_llm.batch_format import MapReduceBody, OutputLine
from mapreduce_llm.batch_lines import NOT_RUN_CODES, JobRequests
from mapreduce_llm.cli import Library, cli
from mapreduce_llm.config import JobSpec, apply_overrides
from mapreduce_llm.observers import JobObserver
from mapreduce_llm.output import BATCH_ERRORS_FILE, BATCH_OUTPUT_FILE, RESULTS_FILE
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.results import DocumentResult, JobSummary
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS, SUMMARIZE
from tests.fake_embeddings import FakeEmbedder
from tests.fakes import FakeEngine
from tests.service_helpers import line, make_service
from tests.test_cli_jobs import RunJob

TEXT = "Ray schedules tasks on a cluster. Each task runs in a worker process and returns its result."


def _line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    """An input line for what `run` runs by default (summarize's production version)."""
    return line(custom_id, text, **{"prompt": f"summarize@{SUMMARIZE}", **body})


def _batch_lines() -> list[dict[str, Any] | str]:
    """Good lines, then every kind of line `run` rejects on its own, a plain document line and an empty text."""
    return [
        _line("a", TEXT),
        _line("b", TEXT, question="Where do tasks run?", metadata={"field": "x"}),
        "{not json",
        {**_line("w", TEXT), "url": "/v1/chat/completions"},
        _line("a", "A second line with the custom_id a."),
        {**_line("m", TEXT), "body": {"prompt": "summarize", "text": TEXT, "model": "gpt"}},
        _line("q", TEXT, prompt="qa@2.0.0"),
        _line("t", TEXT, temperature=0.9),
        {"id": "p", "text": TEXT},
        _line("e", "   "),
    ]


def _batch_file(folder: Path) -> Path:
    path = folder / "batch.jsonl"
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in _batch_lines())
    path.write_text(text, encoding="utf-8")
    return path


def _library(tokenizer: HFTokenizer) -> Library:
    """The real job, on a fake engine and the embedding double (given to run_job, through ctx.obj)."""
    engine = FakeEngine(tokenizer, respond=lambda request: "Ray runs tasks in worker processes.")

    def run_job(spec: JobSpec, on_result: Any = None, observer: JobObserver | None = None) -> JobSummary:
        return runner.run_job(spec, on_result, engine=engine, observer=observer, embedder=FakeEmbedder())

    return Library(run_job=run_job)


def _run(tokenizer: HFTokenizer, source: Path, out: Path, *flags: str) -> Result:
    args = ["run", "--input", str(source), "--output", str(out), "--no-progress", "--set", f"prompts_dir={PROMPTS}"]
    return CliRunner().invoke(cli, ["--log-level", "error", *args, *flags], obj=_library(tokenizer))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_text(encoding="utf-8").splitlines()]


def test_a_batch_file_runs_through_run_with_one_result_and_one_batch_line_per_line(
    tmp_path: Path, tokenizer: HFTokenizer
) -> None:
    """Every line gets one result (bad ones an error naming the problem), and one line in the batch files that
    parses with the service's line model; the good lines' custom_ids are the document ids."""
    result = _run(tokenizer, _batch_file(tmp_path), tmp_path / "out", "--batch-output")
    assert result.exit_code == 0, result.output
    assert f"batch output: {tmp_path / 'out' / BATCH_OUTPUT_FILE}" in result.stdout
    records = [DocumentResult.model_validate(r) for r in _lines(tmp_path / "out" / RESULTS_FILE)]
    assert [(r.id, r.error.code if r.error else "ok") for r in records] == [
        ("a", "ok"),
        ("b", "ok"),
        ("batch.jsonl:3", "malformed_json"),
        ("w", "invalid_url"),
        ("a", "duplicate_custom_id"),
        ("m", "invalid_request"),
        ("q", "prompt_mismatch"),
        ("t", "unsupported_setting"),
        ("p", "ok"),
        ("e", "empty"),
    ]
    assert records[1].question == "Where do tasks run?" and records[1].metadata == {"field": "x"}
    by_id = {r.id: r for r in records if r.error is not None}
    assert "'qa@2.0.0' (qa@2.0.0)" in by_id["q"].error.message and "'summarize'" in by_id["q"].error.message
    assert "--set sampling.temperature=0.9" in by_id["t"].error.message
    assert "body.model" in by_id["m"].error.message

    output = [OutputLine.model_validate(o) for o in _lines(tmp_path / "out" / BATCH_OUTPUT_FILE)]
    errors = [OutputLine.model_validate(e) for e in _lines(tmp_path / "out" / BATCH_ERRORS_FILE)]
    assert [(o.custom_id, o.response and o.response.status_code) for o in output] == [
        ("a", 200),
        ("b", 200),
        ("p", 200),
    ]
    assert all(DocumentResult.model_validate(o.response.body).ok for o in output if o.response)
    assert [(e.custom_id, e.error and e.error.code, e.response is None) for e in errors] == [
        (None, "malformed_json", True),
        ("w", "invalid_url", True),
        ("a", "duplicate_custom_id", True),
        ("m", "invalid_request", True),
        ("q", "prompt_mismatch", True),
        ("t", "unsupported_setting", True),
        ("e", "empty", False),
    ]
    empty = errors[-1].response
    assert empty is not None and empty.status_code == 400 and empty.body["error"]["code"] == "empty"


def test_run_writes_the_same_lines_as_the_service_for_the_same_results(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """For the same input file and results, `run --batch-output` and the service write equal lines (ids aside,
    as they derive from the batch id): output lines and errors, keys and values alike."""
    assert _run(tokenizer, _batch_file(tmp_path), tmp_path / "out", "--batch-output").exit_code == 0
    records = [DocumentResult.model_validate(r) for r in _lines(tmp_path / "out" / RESULTS_FILE)]
    ran = {r.id: r for r in records if r.error is None or r.error.code not in NOT_RUN_CODES}
    only_run = {"p", "q", "t"}  # a plain line; another prompt and other settings, which serve runs as other jobs

    service = make_service(tmp_path / "service")
    lines = [x for x in _batch_lines() if not (isinstance(x, dict) and x.get("custom_id", x.get("id")) in only_run)]
    batch_id = service.create(lines)
    service.batches.tick()
    job = service.runner.running()  # the service's job "computes" exactly what `run` computed
    job.spec.output.mkdir(parents=True, exist_ok=True)
    text = "".join(ran[str(doc["id"])].model_dump_json() + "\n" for doc in job.documents())
    (job.spec.output / RESULTS_FILE).write_text(text, encoding="utf-8")
    job.status = "succeeded"
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "completed"

    def without_ids(found: list[dict[str, Any]]) -> dict[tuple[str | None, str | None], dict[str, Any]]:
        keyed = {}
        for item in found:
            item = {**item, "id": None}
            if item["response"] is not None:
                item["response"] = {**item["response"], "request_id": None}
            if item["response"] is None:  # a rejected line: the message names the line its own way
                item["error"] = {**item["error"], "message": None}
            keyed[(item["custom_id"], item["error"] and item["error"]["code"])] = item
        return keyed

    for name, file_id in ((BATCH_OUTPUT_FILE, batch.output_file_id), (BATCH_ERRORS_FILE, batch.error_file_id)):
        written = [x for x in _lines(tmp_path / "out" / name) if x["custom_id"] not in only_run]
        assert without_ids(service.lines(file_id)) == without_ids(written), name
        assert [sorted(x) for x in service.lines(file_id)] == [sorted(x) for x in written]
    assert len(service.lines(batch.output_file_id)) == 2 and len(service.lines(batch.error_file_id)) == 5


def test_a_resumed_run_writes_the_batch_files_again(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A rerun into the same folder reuses every result (a duplicate line's error record does not hide the first
    line's) and writes the same batch files again (stable request ids)."""
    source = _batch_file(tmp_path)
    out = tmp_path / "out"
    assert _run(tokenizer, source, out, "--batch-output").exit_code == 0
    first = (out / BATCH_OUTPUT_FILE).read_bytes(), (out / BATCH_ERRORS_FILE).read_bytes()
    (out / BATCH_OUTPUT_FILE).unlink()
    again = _run(tokenizer, source, out, "--set", "output_format=batch")
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text())["resumed"] == 3
    assert ((out / BATCH_OUTPUT_FILE).read_bytes(), (out / BATCH_ERRORS_FILE).read_bytes()) == first


def test_without_batch_output_the_batch_files_of_an_earlier_run_are_removed(
    tmp_path: Path, tokenizer: HFTokenizer
) -> None:
    """output_format: results (the default) writes no batch files and removes earlier ones, which would no longer
    match results.jsonl."""
    source = _batch_file(tmp_path)
    out = tmp_path / "out"
    assert _run(tokenizer, source, out, "--batch-output").exit_code == 0
    assert (out / BATCH_OUTPUT_FILE).is_file()
    result = _run(tokenizer, source, out)
    assert result.exit_code == 0 and "batch output" not in result.stdout
    assert (out / RESULTS_FILE).is_file() and not (out / BATCH_OUTPUT_FILE).exists()
    assert not (out / BATCH_ERRORS_FILE).exists()


def _spec(**settings: Any) -> JobSpec:
    return apply_overrides({}, {"input": "in.jsonl", "output": "out", "prompts_dir": str(PROMPTS), **settings})


def _body(**fields: Any) -> MapReduceBody:
    return MapReduceBody.model_validate({"prompt": "summarize", "text": "t", **fields})


def test_a_line_prompt_runs_when_it_resolves_to_the_jobs_versions() -> None:
    """body.prompt is accepted when it names what the job runs (task, pinned version or label alike); another task
    or version, or one that does not resolve, is prompt_mismatch naming both prompts."""
    spec = _spec(prompt="summarize")
    check = JobRequests(spec, select_prompts(spec.prompt, spec.prompts_dir))
    for same in ("summarize", f"summarize@{SUMMARIZE}", "summarize@production"):
        assert check(_body(prompt=same)) is None
    code, message = check(_body(prompt="qa")) or ("", "")
    assert code == "prompt_mismatch" and "'qa' (qa@" in message and f"'summarize' (summarize@{SUMMARIZE})" in message
    code, message = check(_body(prompt="nosuchtask")) or ("", "")
    assert code == "prompt_mismatch" and "cannot be resolved" in message and "nosuchtask" in message


def test_per_request_settings_run_only_when_the_job_has_the_same_value() -> None:
    """A body setting equal to the job spec's field runs; any other value is unsupported_setting with the --set
    that would run it."""
    spec = _spec(**{"sampling.temperature": "0.2", "retrieval.top_k": "4"})
    check = JobRequests(spec, select_prompts(spec.prompt, spec.prompts_dir))
    assert check(_body(temperature=0.2, top_k=4, retrieval="all")) is None
    code, message = check(_body(max_tokens=64)) or ("", "")
    assert code == "unsupported_setting" and "sampling.reserved_output_tokens, which is not set" in message
    assert "--set sampling.reserved_output_tokens=64" in message
    code, message = check(_body(top_k=2)) or ("", "")
    assert code == "unsupported_setting" and "retrieval.top_k, which is 4" in message


def test_batch_output_flag_and_spec_field(tmp_path: Path) -> None:
    """--batch-output sets output_format: batch over a spec file's value; without it the spec's value stays."""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("input: in.jsonl\noutput: out\noutput_format: results\n")
    specs: list[JobSpec] = []

    def plan_job(spec: JobSpec, estimate: bool = False) -> tuple[Any, Any]:
        specs.append(spec)
        return None, iter(())

    double = RunJob()
    library = Library(run_job=double, plan_job=plan_job)
    ran = CliRunner().invoke(cli, ["run", str(spec_file), "--batch-output", "--no-progress"], obj=library)
    assert ran.exit_code == 0, ran.output
    assert f"batch output: {tmp_path / 'out' / BATCH_OUTPUT_FILE}" in ran.stdout
    assert CliRunner().invoke(cli, ["plan", str(spec_file), "--json"], obj=library).exit_code == 0
    ((spec, _, _),) = double.calls
    assert (spec.output_format, specs[0].output_format) == ("batch", "results")
