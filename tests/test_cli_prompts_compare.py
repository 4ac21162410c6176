"""`prompts compare` (cli/prompts_compare.py): two versions run on one engine and one cache, or two result folders."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mapreduce_llm.cli import Library, cli
from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fake_embeddings import FakeEmbedder
from tests.fakes import FakeEngine

FACT = "The combination of the safe in the Orlov study is 8093."
FILLER = "The standard library has many modules for working with text, files and the network. "
DOCUMENTS = [
    {"id": "needle", "text": FILLER * 3 + FACT, "question": "What is the combination of the safe?", "answer": "8093"},
    {"id": "nofact", "text": FILLER * 4, "question": "What is the combination of the safe?", "answer": None},
    {"id": "free", "text": FILLER * 2, "question": "What is the combination of the safe?"},
]


class Engines:
    """A shared_engine double: one fake engine that answers qa@2.0.0's records from the chunk it is given (free
    text for qa@1.0.0: chat filler); ``sessions`` counts the engine sessions opened."""

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self.tokenizer = tokenizer
        self.engine = FakeEngine(tokenizer, respond=self.respond)
        self.sessions = 0

    def respond(self, request: EngineRequest) -> str:
        if request.json_schema is None:
            return "I'm ready to help! What's your question?"
        if FACT in self.tokenizer.decode(request.prompt_token_ids):
            return json.dumps({"quote": FACT, "answer": "8093"})
        return json.dumps({"quote": "NOT FOUND", "answer": "NOT FOUND"})

    @contextmanager
    def __call__(self, config: Any) -> Iterator[FakeEngine]:
        self.sessions += 1
        yield self.engine


def _input(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCUMENTS), encoding="utf-8")
    return path


def _compare(*args: str, engines: Engines | None = None) -> Result:
    library = Library(
        shared_engine=engines or (lambda config: pytest.fail("no engine may start")), embedder=FakeEmbedder
    )
    cli_args = ["--log-level", "error", "prompts", "compare", *args, "--dir", str(PROMPTS)]
    return CliRunner().invoke(cli, cli_args, obj=library)


def _versions(tmp_path: Path, engines: Engines, *flags: str) -> Result:
    out = tmp_path / "cmp"
    return _compare("qa", "qa@1.0.0", "2.0.0", "-i", str(_input(tmp_path)), "-o", str(out), *flags, engines=engines)


def test_versions_run_on_one_engine_into_a_folder_each(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """Both versions run through the real job on one engine session, into DIR/<version>/, and are compared."""
    engines = Engines(tokenizer)
    result = _versions(tmp_path, engines, "--no-progress")
    assert result.exit_code == 0, result.output
    assert engines.sessions == 1
    for version in ("1.0.0", "2.0.0"):
        records = [json.loads(line) for line in (tmp_path / "cmp" / version / "results.jsonl").read_text().splitlines()]
        assert {r["prompt"]["version"] for r in records} == {version} and len(records) == 3
    assert (tmp_path / "cmp" / "cache.sqlite").is_file()
    table = result.stdout.splitlines()
    assert table[0].split() == ["qa@1.0.0", "qa@2.0.0"]
    assert "answers right" in table[3] and table[3].split()[-4:] == ["0/1", "(0%)", "1/1", "(100%)"]
    assert table[-1] == "better: qa@2.0.0, 2 of 2 documents right against 0"
    assert "qa@1.0.0: 3 ok, 0 errors of 3 documents" in result.stderr
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["better"] == "b"


def test_cached_requests_are_not_paid_twice(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A rerun reuses every result; with a version's folder gone, its requests come from the shared cache."""
    engines = Engines(tokenizer)
    assert _versions(tmp_path, engines, "--no-progress").exit_code == 0
    sent = len(engines.engine.requests)
    again = _versions(tmp_path, engines, "--no-progress", "--json")
    assert again.exit_code == 0, again.output
    assert len(engines.engine.requests) == sent and json.loads(again.stdout)["b"]["resumed"] == 3
    shutil.rmtree(tmp_path / "cmp" / "2.0.0")
    fresh = _versions(tmp_path, engines, "--no-progress", "--json")
    data = json.loads(fresh.stdout)
    assert len(engines.engine.requests) == sent and data["b"]["requests_sent"] == 0 and data["b"]["resumed"] == 0
    assert data["better"] == "b" and data["b"]["right"] == 2


def test_job_flags_and_set_reach_both_jobs(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """--max-chunk-tokens and --set apply to both jobs; a job id gets the version appended; cache.path is kept."""
    engines, cache = Engines(tokenizer), tmp_path / "shared.sqlite"
    flags = ["--max-chunk-tokens", "40", "--set", "job_id=cmp", "--set", f"cache.path={cache}"]
    result = _versions(tmp_path, engines, "--no-progress", *flags)
    assert result.exit_code == 0, result.output
    for version in ("1.0.0", "2.0.0"):
        job = json.loads((tmp_path / "cmp" / version / "summary.json").read_text())
        assert job["job_id"] == f"cmp-{version}" and job["chunks"] > 3
    assert cache.is_file() and not (tmp_path / "cmp" / "cache.sqlite").exists()


def test_two_result_folders_are_compared_without_an_engine(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """--results-a/--results-b read finished folders (named by the versions they ran); --json prints an object."""
    assert _versions(tmp_path, Engines(tokenizer), "--no-progress").exit_code == 0
    a, b = tmp_path / "cmp" / "1.0.0", tmp_path / "cmp" / "2.0.0"
    result = _compare("qa", "--results-a", str(a), "--results-b", str(b), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["a"]["name"], data["b"]["name"], data["b"]["source"]) == ("qa@1.0.0", "qa@2.0.0", str(b))
    same = _compare("qa", "--results-a", str(b), "--results-b", str(b))
    assert same.stdout.splitlines()[0].split() == ["A:", "qa@2.0.0", "B:", "qa@2.0.0"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["qa", "1.0.0"], "give two versions of qa (e.g. prompts compare qa 1.0.0 2.0.0"),
        (["qa", "1.0.0", "2.0.0", "--results-a", "x", "--results-b", "y"], "not both"),
        (["qa", "--results-a", "x"], "give both --results-a DIR and --results-b DIR"),
        (["qa", "--results-a", "x", "--results-b", "y", "--top-k", "3"], "apply only when comparing versions"),
        (["qa", "1.0.0", "2.0.0", "-i", "in.jsonl", "-o", "o", "--prompt", "qa"], "--prompt does not apply"),
        (["qa", "1.0.0", "qa@1.0.0", "-i", "in.jsonl", "-o", "o"], "A and B are both qa@1.0.0"),
        (["qa", "summarize@1.0.0", "2.0.0", "-i", "in.jsonl", "-o", "o"], "is a version of summarize, not of qa"),
        (["qa", "1.0.0", "2.0.0", "-i", "in.jsonl"], "--output is required"),
    ],
)
def test_bad_arguments_say_what_to_give(args: list[str], message: str) -> None:
    """Each wrong combination of arguments is a usage error (exit 2) saying what to give instead."""
    result = _compare(*args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_missing_input_and_folder_are_named(tmp_path: Path) -> None:
    """A missing input file or results folder is an error naming the path, before any engine starts."""
    missing = _compare("qa", "1.0.0", "2.0.0", "-i", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "o"))
    assert "none.jsonl does not exist" in str(missing.exception)
    folders = _compare("qa", "--results-a", str(tmp_path / "gone"), "--results-b", str(tmp_path))
    assert "gone does not exist; give the --output folder of a finished job" in str(folders.exception)
