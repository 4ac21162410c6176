"""Shared fixtures: the embedded model's real tokenizer, prompt files, and Jobs built with the embedding double."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import structlog

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mapreduce_llm.config import JobSpec
from mapreduce_llm.engines.base import Engine
from mapreduce_llm.job import Job
from mapreduce_llm.model_store import ensure_embedded_model
from mapreduce_llm.prompts import PromptRef, PromptSelection, select_prompts
from mapreduce_llm.tokenization import HFTokenizer, Tokenizer
from tests.fake_embeddings import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "prompts"
SUMMARIZE = select_prompts("summarize", PROMPTS).base.version
"""The version `summarize` runs with the shipped prompts (its production label): tests of a job's records and
metrics read it here instead of naming it."""
CORPUS = ROOT / "benchmarks" / "corpus" / "docs"


def benchmark_module(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (benchmarks/ is a folder of scripts, not a package), loaded once."""
    if name in sys.modules:
        return sys.modules[name]
    folder = str(ROOT / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the scripts import their shared helpers (answer_jobs) by name
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _structlog_config_per_test() -> Iterator[None]:
    """structlog's configuration as it was before each test: a CLI invocation configures it for the process (a
    ``--log-level error`` would otherwise hide the warnings a later test captures)."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def tokenizer() -> HFTokenizer:
    """The served model's real tokenizer (embedded SmolLM2), converted once per machine."""
    return HFTokenizer(ensure_embedded_model())


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """A long real document from the example corpus."""
    return (CORPUS / "python-howtos.md").read_text(encoding="utf-8")


def make_job(
    spec: JobSpec, prompts: PromptSelection | PromptRef, tokenizer: Tokenizer, engine: Engine, **options: Any
) -> Job:
    """A Job that embeds with the hashed bag-of-words double instead of all-MiniLM-L6-v2 (8 s to load), given
    through its constructor; ``options`` go to :class:`Job` as they are (an ``embedder`` among them wins)."""
    options.setdefault("embedder", FakeEmbedder())
    return Job(spec, prompts, tokenizer, engine, **options)
