"""Job commands (cli/jobs.py): `run` through the library seam, `plan` without an engine, `schema`; flags to spec."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mapreduce_llm.cli import Library, cli
from mapreduce_llm.config import JobSpec, VLLMEngineConfig
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.observers import JobObserver, ProgressLogObserver, ProgressObserver
from mapreduce_llm.results import DocumentResult, ErrorInfo, JobSummary
from tests.conftest import PROMPTS
from tests.fake_openai import FakeOpenAIServer, serve


def test_plan_prints_chunks_and_token_counts(tmp_path: Path, corpus_text: str) -> None:
    """`plan --json` reports every document's chunks and exact prompt sizes without an engine."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "text": corpus_text[:20_000]}) + "\n{bad\n")
    result = CliRunner().invoke(
        cli,
        ["plan", "--input", str(src), "--json", "--max-model-len", "1024"],
        env={"MAPREDUCE_LLM_PROMPTS": str(PROMPTS)},
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert rows[0]["id"] == "a" and rows[0]["max_prompt_tokens"] + 200 <= 1024
    assert sum(c["tokens"] for c in rows[0]["chunks"]) == rows[0]["tokens"]
    assert rows[1]["status"] == "error" and rows[1]["code"] == "malformed_json"


def test_plan_table(tmp_path: Path) -> None:
    """The default plan output is a table with one row per document."""
    (tmp_path / "a.txt").write_text("Hello there. " * 500)
    result = CliRunner().invoke(
        cli,
        ["plan", "--input", str(tmp_path), "--prompt", "summarize@1.0.0"],
        env={"MAPREDUCE_LLM_PROMPTS": str(PROMPTS)},
    )
    assert result.exit_code == 0, result.output
    assert "summarize@1.0.0" in result.output and "a.txt" in result.output


def test_run_without_input_is_a_usage_error() -> None:
    """`run` with neither a spec nor --input explains what to give."""
    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code == 2 and "--input" in result.output


def test_schema_command_prints_json_schema() -> None:
    """`schema` prints the job spec's JSON schema."""
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0 and json.loads(result.output)["title"] == "JobSpec"


def test_plan_estimate_counts_with_tiktoken(tmp_path: Path) -> None:
    """`plan --estimate` counts in cl100k_base tokens, which differ from the served model's counts."""
    (tmp_path / "a.txt").write_text("Tokenizers disagree about unusual words like antidisestablishmentarianism. " * 300)
    env = {"MAPREDUCE_LLM_PROMPTS": str(PROMPTS)}
    exact = CliRunner().invoke(cli, ["plan", "--input", str(tmp_path), "--json"], env=env)
    estimate = CliRunner().invoke(cli, ["plan", "--input", str(tmp_path), "--json", "--estimate"], env=env)
    assert exact.exit_code == 0 and estimate.exit_code == 0, estimate.output
    assert json.loads(exact.output)["tokens"] != json.loads(estimate.output)["tokens"]


def _planned(args: list[str]) -> tuple[Result, list[JobSpec]]:
    """Run `plan ARGS` against a plan_job double; returns the result and the job specs it was given."""
    specs: list[JobSpec] = []

    def plan_job(spec: JobSpec, estimate: bool = False) -> tuple[Any, Iterator[Any]]:
        specs.append(spec)
        return None, iter(())

    def run_job(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("plan never runs a job")

    return CliRunner().invoke(cli, ["plan", "--json", *args], obj=Library(run_job=run_job, plan_job=plan_job)), specs


def test_named_flags_reach_their_job_spec_fields(tmp_path: Path) -> None:
    """Each named flag sets the field it is declared for; flags not given leave the defaults."""
    flags = "--prompt qa@2.0.0 --retrieval top_k --top-k 3 --no-reretrieve --max-model-len 4096"
    flags += " --max-chunk-tokens 500 --replicas 2 --job-id j1"
    result, (spec,) = _planned(["--input", str(tmp_path), *flags.split()])
    assert result.exit_code == 0, result.output
    assert (spec.retrieval.mode, spec.retrieval.top_k, spec.retrieval.reretrieve) == ("top_k", 3, False)
    assert (spec.engine.max_model_len, spec.chunking.max_chunk_tokens, spec.job_id, spec.prompt) == (
        4096,
        500,
        "j1",
        "qa@2.0.0",
    )
    assert isinstance(spec.engine, VLLMEngineConfig) and spec.engine.replicas == 2
    assert spec.output == Path("mapreduce-output") and spec.follow_symlinks is False
    _, (default,) = _planned(["--input", str(tmp_path)])
    assert (default.retrieval.mode, default.retrieval.reretrieve, default.engine.max_model_len) == ("all", True, 2048)


def test_set_reaches_any_field_and_wins_over_named_flags(tmp_path: Path) -> None:
    """--set KEY=VALUE sets any field by dotted path, read as YAML except for text, after the named flags."""
    sets = "engine.max_model_len=1024 engine.engine_kwargs.enforce_eager=true retrieval.min_similarity=0.25"
    sets += " job_id=2024 limits.max_documents_in_flight=4 cache.enabled=false"
    args = [arg for item in sets.split() for arg in ("--set", item)]
    result, (spec,) = _planned(["--input", str(tmp_path), "--max-model-len", "4096", *args])
    assert result.exit_code == 0, result.output
    assert spec.engine.max_model_len == 1024 and spec.job_id == "2024"
    assert isinstance(spec.engine, VLLMEngineConfig) and spec.engine.engine_kwargs == {"enforce_eager": True}
    assert spec.retrieval.min_similarity == 0.25 and spec.limits.max_documents_in_flight == 4
    assert spec.cache.enabled is False


def test_flags_override_a_spec_file(tmp_path: Path) -> None:
    """Flags and --set override the spec file's fields; its other fields and relative paths stay."""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("input: docs\noutput: out\nengine: {max_model_len: 4096, replicas: 2}\n")
    result, (spec,) = _planned([str(spec_file), "--max-model-len", "1024", "--set", "retrieval.top_k=7"])
    assert result.exit_code == 0, result.output
    assert spec.input == tmp_path / "docs" and spec.output == tmp_path / "out"
    assert isinstance(spec.engine, VLLMEngineConfig) and (spec.engine.max_model_len, spec.engine.replicas) == (1024, 2)
    assert spec.retrieval.top_k == 7


def test_a_flag_of_the_other_backend_is_an_error_naming_it(tmp_path: Path) -> None:
    """--replicas on a job served by an OpenAI-compatible server is refused, naming the field and its backend."""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("input: docs\noutput: out\nengine: {backend: openai, base_url: 'http://h:8000/v1'}\n")
    result, specs = _planned([str(spec_file), "--replicas", "2"])
    assert isinstance(result.exception, ConfigError) and not specs
    assert "engine.replicas belongs to backend vllm" in str(result.exception)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "engine.max_model_length=4096"], "did you mean engine.max_model_len"),
        (["--set", "retrieval.top_k=many"], "retrieval.top_k"),
        (["--set", "retrieval.top_k.first=1"], "retrieval.top_k is a value"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, args: list[str], message: str) -> None:
    """An unknown key or a bad value is one ConfigError naming the key."""
    result, specs = _planned(["--input", str(tmp_path), *args])
    assert isinstance(result.exception, ConfigError) and message in str(result.exception) and not specs


def test_set_without_equals_is_a_usage_error(tmp_path: Path) -> None:
    """--set needs KEY=VALUE: anything else is a usage error showing an example."""
    result, specs = _planned(["--input", str(tmp_path), "--set", "engine.max_model_len"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output and not specs


def _summary(**fields: Any) -> JobSummary:
    base = {
        "job_id": "j",
        "status": "completed",
        "input": "in",
        "output": "out",
        "prompt": "summarize",
        "model": "m",
        "max_model_len": 2048,
        "started_at": 1.0,
        "finished_at": 3.5,
        "seconds": 2.5,
        "documents": 3,
        "ok": 2,
        "errors": 1,
        "errors_by_code": {"empty": 1},
        "chunks": 4,
        "requests": {"map": 4, "reduce": 2},
        "max_levels": 1,
    }
    return JobSummary.model_validate(base | fields)


class RunJob:
    """A run_job double: hands two results to the job's on_result, keeps what it was called with."""

    def __init__(self, summary: JobSummary | None = None) -> None:
        self.summary = summary or _summary()
        self.calls: list[tuple[JobSpec, Any, JobObserver | None]] = []

    def __call__(self, spec: JobSpec, on_result: Any = None, observer: JobObserver | None = None) -> JobSummary:
        self.calls.append((spec, on_result, observer))
        on_result(DocumentResult(id="a", status="ok", output="done"))
        on_result(DocumentResult(id="b", status="error", error=ErrorInfo(code="empty", message="empty")))
        return self.summary


def _run(tmp_path: Path, *flags: str, run_job: RunJob | None = None) -> tuple[Result, RunJob]:
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text("A document.")
    double = run_job or RunJob()
    args = ["run", "--input", str(tmp_path), "--output", str(tmp_path / "out"), *flags]
    return CliRunner().invoke(cli, args, obj=Library(run_job=double)), double


def test_run_prints_the_summary(tmp_path: Path) -> None:
    """`run` prints counts, errors by code and where results and summary are."""
    result, _ = _run(tmp_path, "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "2 ok, 1 errors of 3 documents in 2.5 s (4 chunks, 6 engine requests, up to 1 reduce levels)",
        "  1 × empty",
        f"results: {tmp_path / 'out' / 'results.jsonl'}",
        f"summary: {tmp_path / 'out' / 'summary.json'}",
    ]


def test_run_off_a_terminal_logs_progress(tmp_path: Path) -> None:
    """Off a terminal (or with --no-progress) the job's observer and on_result are one progress log observer."""
    for flags in ([], ["--no-progress"]):
        result, double = _run(tmp_path, *flags)
        assert result.exit_code == 0, result.output
        ((_, on_result, observer),) = double.calls
        assert isinstance(observer, ProgressLogObserver) and on_result.__self__ is observer
        assert (observer.total, observer.documents, observer.errors) == (3, 2, 1)


def test_run_with_progress_shows_bars(tmp_path: Path) -> None:
    """--progress shows the bars: documents (reused ones too, through on_result) and engine calls."""
    result, double = _run(tmp_path, "--progress")
    assert result.exit_code == 0, result.output
    ((_, on_result, observer),) = double.calls
    assert isinstance(observer, ProgressObserver) and on_result.__self__ is observer
    assert observer.documents.n == 2 and observer.errors == 1
    assert "documents" in result.stderr


def test_run_prints_the_drift_of_its_summary(tmp_path: Path) -> None:
    """With a baseline, the drift scores of summary.json are printed with their level."""
    drifted = _summary(drift={"summarize@1.0.0": {"embedding_centroid": 0.5, "length_psi": 0.01}})
    result, _ = _run(tmp_path, "--no-progress", run_job=RunJob(drifted))
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("drift ")]
    assert lines == [
        ["drift", "summarize@1.0.0", "embedding_centroid", "0.5000", "alert"],
        ["drift", "summarize@1.0.0", "length_psi", "0.0100", "ok"],
    ]


def test_run_flags_reach_the_spec(tmp_path: Path) -> None:
    """`run` builds its spec like the other job commands: named flags, then --set."""
    result, double = _run(tmp_path, "--no-progress", "--prompt", "qa", "--set", "limits.max_documents_in_flight=2")
    assert result.exit_code == 0, result.output
    ((spec, _, _),) = double.calls
    assert spec.prompt == "qa" and spec.limits.max_documents_in_flight == 2 and spec.input == tmp_path


def test_run_without_doubles_runs_the_job(tmp_path: Path) -> None:
    """With no library double, `run` runs the real job (here on a fake OpenAI-compatible server) and reports it."""
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"d{i}.txt").write_text("Ray runs Python code on a cluster. " * 50)
    with serve(FakeOpenAIServer()) as url:
        args = ["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress"]
        args += ["--set", "engine.backend=openai", "--set", f"engine.base_url={url}", "--set", f"prompts_dir={PROMPTS}"]
        result = CliRunner().invoke(cli, ["--log-level", "error", *args])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("3 ok, 0 errors of 3 documents in ")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["ok"] == 3
