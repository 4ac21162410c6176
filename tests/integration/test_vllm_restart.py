"""Fault drill on the real engine: kill the vLLM actor mid-job; Ray restarts it and the job still finishes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import ray

from mapreduce_llm.config import JobSpec
from mapreduce_llm.engines.vllm_ray import VLLMRayEngine
from mapreduce_llm.runner import run_job
from tests.conftest import CORPUS, PROMPTS
from tests.integration.conftest import TEST_ENGINE


def test_killed_engine_actor_is_restarted_and_the_job_finishes(engine: VLLMRayEngine, tmp_path: Path) -> None:
    """After the actor is killed mid-job, in-flight requests are retried on the restarted actor;
    every document finishes, each with exactly one result line."""
    src = tmp_path / "docs"
    src.mkdir()
    text = (CORPUS / "python-howtos.md").read_text(encoding="utf-8")
    for i in range(3):
        (src / f"part{i}.md").write_text(text[i * 4000 : i * 4000 + 3000])
    spec = JobSpec.model_validate(
        {
            "input": src,
            "output": tmp_path / "out",
            "prompts_dir": PROMPTS,
            "engine": TEST_ENGINE.model_dump(),
            "sampling": {"reserved_output_tokens": 48},
        }
    )
    before = sum(engine.served)
    pid_before = ray.get(engine.actors[0].start.remote(), timeout=60)["pid"]
    failure: list[BaseException] = []

    def work() -> None:
        try:
            run_job(spec, engine=engine)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failure.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 300
    while sum(engine.served) < before + 1 and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.1)
    assert worker.is_alive(), "the job ended before the engine could be killed"
    ray.kill(engine.actors[0], no_restart=False)  # a crash: Ray restarts the actor (engine.max_restarts)
    worker.join(timeout=600)
    assert not worker.is_alive() and not failure, failure
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in results) == ["part0.md", "part1.md", "part2.md"]
    assert all(r["status"] == "ok" for r in results)
    assert ray.get(engine.actors[0].start.remote(), timeout=300)["pid"] != pid_before  # a new process serves
