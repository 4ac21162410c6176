"""One real engine for the whole session: Ray started locally, vLLM (CPU build) serving the embedded model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mapreduce_llm.config import EngineConfig
from mapreduce_llm.engines.vllm_ray import VLLMRayEngine
from mapreduce_llm.runner import ray_session

# Small context so that real jobs on short test documents need several chunks and reduce levels.
# enforce_eager skips torch.compile: the engine starts ~50 s sooner, which outweighs slower steps here.
TEST_ENGINE = EngineConfig(max_model_len=1024, engine_kwargs={"enforce_eager": True})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def engine() -> Iterator[VLLMRayEngine]:
    """A started vLLM-in-Ray engine pool, shared by every integration test."""
    with ray_session(), VLLMRayEngine(TEST_ENGINE) as started:
        yield started
