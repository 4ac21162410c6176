"""Shared by calibrate.py and quality.py: one vLLM engine in Ray, several question-answering jobs on it.

Every job runs through the product's own path (``mapreduce_llm.runner.run_job`` with a started engine), so
what is measured is what a user runs. Engine settings: the embedded SmolLM2-135M-Instruct, a 2048-token
context and chunks of at most ``MAX_CHUNK_TOKENS`` (a 135M model reads short chunks better).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from mapreduce_llm.config import VLLMEngineConfig, build_spec
from mapreduce_llm.results import DocumentResult, JobSummary

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MAX_MODEL_LEN = 2048
MAX_CHUNK_TOKENS = 1200


def needles() -> ModuleType:
    """benchmarks/needles.py as a module (benchmarks/ is a folder of scripts, not a package)."""
    if "needles" in sys.modules:
        return sys.modules["needles"]
    spec = importlib.util.spec_from_file_location("needles", HERE / "needles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["needles"] = module
    spec.loader.exec_module(module)
    return module


def write_jsonl(records: list[dict[str, Any]], path: Path) -> Path:
    """Write job input records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


def engine_config(eager: bool = True) -> VLLMEngineConfig:
    """The engine every job of a benchmark run shares."""
    return VLLMEngineConfig(
        max_model_len=MAX_MODEL_LEN,
        served_model_name="SmolLM2-135M-Instruct",
        engine_kwargs={"enforce_eager": True} if eager else {},
    )


@contextmanager
def started_engine(eager: bool = True) -> Iterator[Any]:
    """A local Ray session with one started vLLM engine actor, shared by the jobs run on it
    (:func:`mapreduce_llm.runner.shared_engine`, as ``prompts compare`` shares one)."""
    from mapreduce_llm.runner import shared_engine

    with shared_engine(engine_config(eager)) as engine:
        assert engine is not None
        yield engine


def run(
    engine: Any,
    input_path: Path,
    output: Path,
    prompt: str,
    *,
    prompts_dir: Path | None = None,
    retrieval: dict[str, Any] | None = None,
    cache: Path | None = None,
) -> tuple[JobSummary, list[DocumentResult]]:
    """Run one job on ``engine``; returns its summary and results (input order)."""
    from mapreduce_llm.runner import run_job

    spec = build_spec(
        {
            "input": str(input_path),
            "output": str(output),
            "prompt": prompt,
            "prompts_dir": str(prompts_dir or ROOT / "prompts"),
            "engine": engine_config().model_dump(),
            "chunking": {"max_chunk_tokens": MAX_CHUNK_TOKENS},
            "retrieval": retrieval or {},
            "cache": {"path": str(cache)} if cache else {},
        }
    )
    summary = run_job(spec, engine=engine)
    results = [
        DocumentResult.model_validate_json(line)
        for line in (output / "results.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return summary, results
