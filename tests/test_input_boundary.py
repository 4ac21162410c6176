"""The input boundary holds through a whole job: a link leaving the input folder is a record, never a document."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mapreduce_llm.config import JobSpec
from mapreduce_llm.job import Job
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fakes import FakeEngine

SECRET = "hunter2-token-7f3a9c"


def _job(tmp_path: Path, folder: Path, tokenizer: HFTokenizer, **extra: object) -> tuple[Job, FakeEngine]:
    spec = JobSpec.model_validate(
        {"input": folder, "output": tmp_path / "out", "prompts_dir": PROMPTS, "prompt": "summarize", **extra}
    )
    engine = FakeEngine(tokenizer, respond=lambda _r: "A summary.")
    return Job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine), engine


def _folder_with_outside_link(tmp_path: Path) -> Path:
    secret = tmp_path / "private" / "token.txt"
    secret.parent.mkdir()
    secret.write_text(f"The deploy token is {SECRET}.")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("An ordinary document about gardening. " * 10)
    (folder / "leak.txt").symlink_to(secret)
    return folder


def test_link_leaving_the_folder_is_a_record_and_never_reaches_the_engine(
    tmp_path: Path, tokenizer: HFTokenizer
) -> None:
    """`run` over a folder with a link to a file outside it: a `symlink` record, the target never sent."""
    job, engine = _job(tmp_path, _folder_with_outside_link(tmp_path), tokenizer)
    summary = asyncio.run(job.run())
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in results] == [("a.txt", "ok"), ("leak.txt", "error")]
    assert results[1]["error"]["code"] == "symlink" and "follow_symlinks" in results[1]["error"]["message"]
    secret_ids = tokenizer.encode_data(SECRET)
    for request in engine.requests:
        ids = request.prompt_token_ids
        assert not any(ids[i : i + len(secret_ids)] == secret_ids for i in range(len(ids)))
    assert summary.errors_by_code == {"symlink": 1}


def test_follow_symlinks_reads_the_target(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """With follow_symlinks the link is read as a document, as asked."""
    job, _ = _job(tmp_path, _folder_with_outside_link(tmp_path), tokenizer, follow_symlinks=True)
    summary = asyncio.run(job.run())
    assert summary.ok == 2 and summary.errors == 0
