"""open_engine: one async context manager starts any backend, yields it ready, and stops it at the end; a vLLM
replica checks its model folder on the node it lands on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mapreduce_llm.config import OpenAIEngineConfig, VLLMEngineConfig
from mapreduce_llm.engines import open_engine
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.engines.vllm_actor import NodeInfo, check_model_folder
from mapreduce_llm.engines.vllm_ray import start_failure
from mapreduce_llm.errors import ConfigError, EngineError
from tests.fake_openai import FakeOpenAIServer

SERVER = OpenAIEngineConfig(base_url="http://fake/v1", http_retries=0)


def test_an_openai_engine_is_ready_inside_the_block_and_closed_after() -> None:
    """Inside the block the server's model is known and requests are served; after it, the engine is closed."""
    fake = FakeOpenAIServer(max_model_len=1536, tokens=2)

    async def go() -> tuple[str, int, str | None, EngineOutput, Exception]:
        async with open_engine(SERVER, transport=fake.transport()) as engine:
            out = await engine.generate(EngineRequest("r", [1, 2, 3], 8, "map"))
            info, identity = engine.info, engine.identity
        try:
            await engine.generate(EngineRequest("late", [1], 8, "map"))
        except EngineError as exc:
            return info.model, info.max_model_len, identity, out, exc
        raise AssertionError("a closed engine served a request")

    model, length, identity, out, late = asyncio.run(go())
    assert (model, length, out.text, out.completion_tokens) == ("fake-model", 1536, "ok ok ", 2)
    assert identity is not None and identity.startswith("server:")
    assert "not started" in str(late)


def test_an_unreachable_server_fails_on_entry_naming_it() -> None:
    """A server that refuses connections is an EngineError when the block is entered, naming the URL to check."""
    fake = FakeOpenAIServer()
    fake.down = True

    async def go() -> None:
        async with open_engine(SERVER, transport=fake.transport()):
            raise AssertionError("entered with the server down")

    with pytest.raises(EngineError, match=r"cannot list models at http://fake/v1"):
        asyncio.run(go())


def test_a_missing_model_folder_fails_before_ray_starts(tmp_path: Path) -> None:
    """vllm: a model folder that is not on this machine is a ConfigError naming engine.model; Ray is not started."""
    import ray

    ray_was_up = ray.is_initialized()  # the session's shared engine may already have started Ray in this process

    async def go() -> None:
        async with open_engine(VLLMEngineConfig(model=str(tmp_path / "missing"))):
            raise AssertionError("entered without a model")

    with pytest.raises(ConfigError, match=r"engine\.model") as info:
        asyncio.run(go())
    assert info.value.parameter == "engine.model" and ray.is_initialized() == ray_was_up


NODE = NodeInfo(hostname="gpu-worker-7", node_id="2f9c5e", ip="10.4.0.17")


def test_the_model_folder_is_checked_on_the_node_the_engine_landed_on(tmp_path: Path) -> None:
    """A folder missing on the engine's node, or without config.json, is a ConfigError naming the node (host, Ray
    node id, IP), the path and the fix (shared storage or a copy on every node); a model folder is returned."""
    missing = str(tmp_path / "missing")
    with pytest.raises(ConfigError) as info:
        check_model_folder(missing, NODE)
    message = str(info.value)
    assert f"engine.model {missing!r} is not a folder on node gpu-worker-7 (Ray node 2f9c5e, 10.4.0.17)" in message
    assert "shared storage" in message and "every node" in message and info.value.parameter == "engine.model"
    (tmp_path / "half").mkdir()
    with pytest.raises(ConfigError, match=r"on node gpu-worker-7 .* has no config\.json"):
        check_model_folder(str(tmp_path / "half"), NODE)
    (tmp_path / "half" / "config.json").write_text("{}")
    assert check_model_folder(str(tmp_path / "half"), NODE) == tmp_path / "half"


def test_a_replica_that_cannot_find_its_model_fails_the_start_with_that_error() -> None:
    """The ConfigError an actor raised while starting comes out of the pool's start as itself (no Ray traceback);
    any other failure of a replica's start is an EngineError."""
    import ray

    raised = ConfigError("engine.model '/models/x' is not a folder on node n", parameter="engine.model", value="x")
    failure = start_failure(ray.exceptions.RayTaskError("VLLMEngineActor.start", "Traceback ...", raised))
    assert isinstance(failure, ConfigError) and str(failure) == str(raised) and failure.parameter == "engine.model"
    crashed = start_failure(ray.exceptions.RayActorError())
    assert isinstance(crashed, EngineError) and str(crashed).startswith("vLLM engine failed to start")
