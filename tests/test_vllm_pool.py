"""The vLLM replica pool's progress signal, with stand-in actors (no Ray, no vLLM)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from mapreduce_llm.config import VLLMEngineConfig
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.engines.vllm_ray import PROGRESS_MAX_AGE_S, VLLMRayEngine


class _Method:
    """``actor.method.remote(...)`` of a stand-in actor: an awaitable, as a Ray object ref is."""

    def __init__(self, body: Callable[..., Awaitable[Any]]) -> None:
        self.body = body

    def remote(self, *args: Any) -> Awaitable[Any]:
        return self.body(*args)


class StandInActor:
    """Answers after ``release`` is set; counts its progress reads. ``tokens`` is its progress count."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.reads = 0
        self.release = asyncio.Event()
        self.generate = _Method(self._generate)
        self.progress = _Method(self._progress)

    async def _generate(self, request: EngineRequest) -> EngineOutput:
        await self.release.wait()
        return EngineOutput(request.request_id, "done", 1, 1, -0.1, "stop", 0.0)

    async def _progress(self) -> int:
        self.reads += 1
        await asyncio.sleep(0.01)
        return self.tokens


def test_each_request_reads_the_progress_of_its_own_replica_once_for_all_waiters() -> None:
    """64 requests on two replicas: each gets its replica's count, and each replica is read once, not 32 times;
    a request not in flight reads 0."""
    engine = VLLMRayEngine(VLLMEngineConfig(max_concurrent_requests=64))

    async def go() -> tuple[list[int], int]:
        actors = [StandInActor(tokens=100), StandInActor(tokens=200)]
        for actor in actors:
            engine._attach(actor)
        requests = [EngineRequest(f"r{i}", [1], 1, "map") for i in range(64)]
        calls = [asyncio.create_task(engine.generate(r)) for r in requests]
        await asyncio.sleep(0)  # every call has picked its replica
        counts = await asyncio.gather(*(engine.progress(r.request_id) for r in requests))
        unknown = await engine.progress("not-sent")
        for actor in actors:
            actor.release.set()
        await asyncio.gather(*calls)
        assert [a.reads for a in actors] == [1, 1]
        return counts, unknown

    counts, unknown = asyncio.run(go())
    assert sorted(set(counts)) == [100, 200] and counts.count(100) == counts.count(200) == 32
    assert unknown == 0 and engine.served == [32, 32]
    assert PROGRESS_MAX_AGE_S <= 2  # reads stay frequent enough for a timeout of a few seconds


def test_a_replica_whose_progress_cannot_be_read_shows_no_progress() -> None:
    """A failing read gives the last known count, so the request's timeout is not reset by it."""
    engine = VLLMRayEngine(VLLMEngineConfig())

    class Broken(StandInActor):
        async def _progress(self) -> int:
            import ray

            raise ray.exceptions.RayActorError()

    async def go() -> int:
        actor = Broken(tokens=5)
        engine._attach(actor)
        call = asyncio.create_task(engine.generate(EngineRequest("r", [1], 1, "map")))
        await asyncio.sleep(0)
        count = await engine.progress("r")
        actor.release.set()
        await call
        return count

    assert asyncio.run(go()) == 0
