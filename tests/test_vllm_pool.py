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


class Unreachable(StandInActor):
    """A replica whose node was lost: requests never come back, progress reads fail (as Ray's do for an actor that
    is dead or waiting for a node to restart on)."""

    async def _progress(self) -> int:
        import ray

        raise ray.exceptions.RayActorError()


class Answering(StandInActor):
    """Answers at once, tagged with its node."""

    async def _generate(self, request: EngineRequest) -> EngineOutput:
        return EngineOutput(request.request_id, "done", 1, 1, -0.1, "stop", 0.0, node="node-b")


async def _watch_until_done(engine: VLLMRayEngine, request_id: str, call: asyncio.Task[EngineOutput]) -> None:
    """Read the request's progress the way the client's watcher does, until the call ends."""
    while not call.done():
        await engine.progress(request_id)
        await asyncio.sleep(0.05)


def test_a_replica_lost_with_its_node_is_given_up_and_its_requests_go_to_the_others() -> None:
    """Replica 0 stops answering (its node died, nothing took it again): after engine.replica_lost_after_s its
    request fails as transient — the client retries it — naming the replica and the setting, and new requests go
    to replica 1 only."""
    from mapreduce_llm.errors import RequestError

    engine = VLLMRayEngine(VLLMEngineConfig(replica_lost_after_s=0.3))

    async def go() -> tuple[BaseException | None, list[str | None]]:
        engine._attach(Unreachable(tokens=0))
        engine._attach(Answering(tokens=0))
        engine._in_flight[1] = 1  # replica 1 looks busier, so the first request goes to replica 0
        call = asyncio.create_task(engine.generate(EngineRequest("r0", [1], 1, "map")))
        await asyncio.sleep(0)
        engine._in_flight[1] = 0
        started = asyncio.get_running_loop().time()
        await _watch_until_done(engine, "r0", call)
        assert asyncio.get_running_loop().time() - started < 5
        later = await asyncio.gather(*(engine.generate(EngineRequest(f"n{i}", [1], 1, "map")) for i in range(4)))
        return call.exception(), [out.node for out in later]

    error, nodes = asyncio.run(go())
    assert isinstance(error, RequestError) and error.transient
    assert "replica 0 was given up" in str(error) and "engine.replica_lost_after_s" in str(error)
    assert nodes == ["node-b"] * 4 and engine.served == [0, 4] and engine.nodes[1] == "node-b"


def test_when_every_replica_is_lost_the_job_stops_with_what_to_do() -> None:
    """The only replica is given up: the request ends with an EngineError (the job stops, keeping what is finished)
    that says what a replica needs and to add a node, and any later request fails the same way at once."""
    from mapreduce_llm.errors import EngineError

    engine = VLLMRayEngine(VLLMEngineConfig(replica_lost_after_s=0.2, resources_per_replica={"engine": 1}))

    async def go() -> tuple[BaseException | None, BaseException]:
        engine._attach(Unreachable(tokens=0))
        call = asyncio.create_task(engine.generate(EngineRequest("r0", [1], 1, "map")))
        await asyncio.sleep(0)
        await _watch_until_done(engine, "r0", call)
        try:
            await engine.generate(EngineRequest("r1", [1], 1, "map"))
        except EngineError as exc:
            return call.exception(), exc
        raise AssertionError("a request was sent to a pool with no replica left")

    first, later = asyncio.run(go())
    assert isinstance(first, EngineError)
    for message in (str(first), str(later)):
        assert "every vLLM engine replica was given up" in message
        assert "CPU: 1, engine: 1" in message and "Add a node" in message and "already finished are kept" in message


def test_replicas_ask_for_the_custom_resources_of_the_spec() -> None:
    """engine.resources_per_replica goes into each actor's Ray resources, and into the actor's bundle of a
    tensor-parallel replica, so replicas land only on nodes that declare them."""
    from mapreduce_llm.engines.vllm_actor import tensor_parallel_bundles

    config = VLLMEngineConfig(resources_per_replica={"engine": 1})
    assert VLLMRayEngine(config)._placement()["resources"] == {"engine": 1}
    sharded = VLLMEngineConfig(resources_per_replica={"engine": 1}, tensor_parallel_size=2, num_gpus_per_replica=2)
    assert tensor_parallel_bundles(sharded) == [{"CPU": 1, "engine": 1}, {"GPU": 1.0}, {"GPU": 1.0}]


def test_a_request_to_a_restarting_replica_is_sent_again_when_it_is_back() -> None:
    """Ray reports the replica unavailable (restarting, e.g. on a replacement node) for the first two sends: the
    pool sends the request again until the replica answers, without failing it."""
    import ray

    engine = VLLMRayEngine(VLLMEngineConfig(replica_lost_after_s=30))

    class Restarting(Answering):
        unavailable = 2

        async def _generate(self, request: EngineRequest) -> EngineOutput:
            if self.unavailable:
                self.unavailable -= 1
                raise ray.exceptions.ActorUnavailableError("restarting", None)
            return await super()._generate(request)

    async def go() -> EngineOutput:
        engine._attach(Restarting(tokens=0))
        return await engine.generate(EngineRequest("r", [1], 1, "map"))

    output = asyncio.run(go())
    assert output.node == "node-b" and engine.served == [1] and engine._lost == [False]


def _arrival_order(policy: str) -> list[str]:
    """One slot, held by a first map call; two more maps and then a collapse call wait for it. The order in which
    the stand-in actor receives them."""
    engine = VLLMRayEngine(VLLMEngineConfig(max_concurrent_requests=1, scheduling_policy=policy))

    class Recording(StandInActor):
        def __init__(self) -> None:
            super().__init__(tokens=0)
            self.received: list[str] = []

        async def _generate(self, request: EngineRequest) -> EngineOutput:
            self.received.append(request.request_id)
            return await super()._generate(request)

    async def go() -> list[str]:
        actor = Recording()
        engine._attach(actor)
        first = asyncio.create_task(engine.generate(EngineRequest("map0", [1], 1, "map", priority=1)))
        await asyncio.sleep(0.01)  # map0 holds the only slot
        waiting = [
            asyncio.create_task(engine.generate(EngineRequest(rid, [1], 1, stage, priority=p)))
            for rid, stage, p in [("map1", "map", 1), ("map2", "map", 1), ("collapse", "collapse", 0)]
        ]
        await asyncio.sleep(0.01)
        actor.release.set()
        await asyncio.gather(first, *waiting)
        return actor.received

    return asyncio.run(go())


def test_a_replica_takes_waiting_collapse_calls_before_waiting_maps() -> None:
    assert _arrival_order("priority") == ["map0", "collapse", "map1", "map2"]
    assert _arrival_order("fcfs") == ["map0", "map1", "map2", "collapse"]
