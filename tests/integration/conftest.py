"""One real engine for the whole session: Ray started locally, vLLM (CPU build) serving the embedded model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from mapreduce_llm.config import EngineConfig, VLLMEngineConfig
from mapreduce_llm.engines import open_engine

# Small context so that real jobs on short test documents need several chunks and reduce levels.
# enforce_eager skips torch.compile: the engine starts ~50 s sooner, which outweighs slower steps here.
TEST_ENGINE = VLLMEngineConfig(max_model_len=1024, engine_kwargs={"enforce_eager": True})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@contextmanager
def held_engine(config: EngineConfig) -> Iterator[Any]:
    """``open_engine(config)`` held open from synchronous code (a fixture), on an event loop of its own.

    Tests then run jobs on it with ``run_job(spec, engine=...)``, each in its own event loop: a vLLM pool
    serves any loop (an OpenAI engine's HTTP client belongs to the loop that opened it, so it is not held here).
    """
    loop = asyncio.new_event_loop()
    opened = open_engine(config)
    engine = loop.run_until_complete(opened.__aenter__())
    try:
        yield engine
    finally:
        loop.run_until_complete(opened.__aexit__(None, None, None))
        loop.close()


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    """A started vLLM-in-Ray engine pool, shared by every integration test."""
    with held_engine(TEST_ENGINE) as started:
        yield started
