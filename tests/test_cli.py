"""The command line: thin commands over the library, clear usage errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mapreduce_llm.cli import cli
from tests.conftest import PROMPTS


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


def test_prompts_list_and_show() -> None:
    """`prompts list` shows tasks and versions; `prompts show` prints a file."""
    runner = CliRunner()
    listed = runner.invoke(cli, ["prompts", "list", "--dir", str(PROMPTS)])
    assert listed.exit_code == 0 and "qa" in listed.output and "summarize" in listed.output
    shown = runner.invoke(cli, ["prompts", "show", "qa", "--dir", str(PROMPTS)])
    assert shown.exit_code == 0 and "NOT FOUND" in shown.output


def test_plan_estimate_counts_with_tiktoken(tmp_path: Path) -> None:
    """`plan --estimate` counts in cl100k_base tokens, which differ from the served model's counts."""
    (tmp_path / "a.txt").write_text("Tokenizers disagree about unusual words like antidisestablishmentarianism. " * 300)
    env = {"MAPREDUCE_LLM_PROMPTS": str(PROMPTS)}
    exact = CliRunner().invoke(cli, ["plan", "--input", str(tmp_path), "--json"], env=env)
    estimate = CliRunner().invoke(cli, ["plan", "--input", str(tmp_path), "--json", "--estimate"], env=env)
    assert exact.exit_code == 0 and estimate.exit_code == 0, estimate.output
    assert json.loads(exact.output)["tokens"] != json.loads(estimate.output)["tokens"]


def test_retrieval_flags_reach_the_job_spec(tmp_path: Path) -> None:
    from mapreduce_llm.cli import _spec_from

    spec = _spec_from(
        None,
        tmp_path / "in.jsonl",
        tmp_path / "out",
        "qa@2.0.0",
        None,
        None,
        None,
        None,
        None,
        retrieval="top_k",
        top_k=3,
        reretrieve=False,
        need_output=True,
    )
    assert (spec.retrieval.mode, spec.retrieval.top_k, spec.retrieval.reretrieve) == ("top_k", 3, False)
    default = _spec_from(
        None, tmp_path / "in.jsonl", tmp_path / "out", None, None, None, None, None, None, need_output=True
    )
    assert (default.retrieval.mode, default.retrieval.reretrieve) == ("all", True)
