"""Several engines: a pool of two vLLM-CPU actors on one machine, with requests spread by load."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.engines.vllm_ray import VLLMRayEngine
from tests.integration.conftest import TEST_ENGINE, held_engine

# Two replicas on two cores: half a CPU each in Ray's books, a small KV cache each.
POOL = TEST_ENGINE.model_copy(update={"replicas": 2, "num_cpus_per_replica": 0.5, "kv_cache_space_gib": 1})


@pytest.fixture(scope="module")
def pool() -> Iterator[VLLMRayEngine]:
    """Two engine actors, started for this module only (before the session's single engine starts)."""
    with held_engine(POOL) as started:
        assert isinstance(started, VLLMRayEngine)
        yield started


def test_both_replicas_serve_requests(pool: VLLMRayEngine) -> None:
    """Concurrent requests go to the least-busy replica, so both engines answer some."""

    async def go() -> list[str]:
        requests = [EngineRequest(f"r{i}", [100 + i] * 24, 4, "map") for i in range(8)]
        outputs = await asyncio.gather(*(pool.generate(r) for r in requests))
        return [o.request_id for o in outputs]

    assert asyncio.run(go()) == [f"r{i}" for i in range(8)]
    assert pool.info.replicas == 2
    assert len(pool.served) == 2 and all(n > 0 for n in pool.served) and sum(pool.served) == 8
