"""Shared fixtures: the embedded model's real tokenizer, prompt files, and engine doubles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mapreduce_llm.model_store import ensure_embedded_model
from mapreduce_llm.tokenization import HFTokenizer

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "prompts"
CORPUS = ROOT / "benchmarks" / "corpus" / "docs"


@pytest.fixture(scope="session")
def tokenizer() -> HFTokenizer:
    """The served model's real tokenizer (embedded SmolLM2), converted once per machine."""
    return HFTokenizer(ensure_embedded_model())


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """A long real document from the example corpus."""
    return (CORPUS / "python-howtos.md").read_text(encoding="utf-8")
