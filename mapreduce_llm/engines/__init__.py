"""Inference backends behind one protocol (:mod:`.base`), and :func:`open_engine`, the one way to start one.

==================  ======================================================================================
:mod:`.base`        the Engine protocol; EngineRequest / EngineOutput / EngineInfo
:mod:`.config`      the engine section of a job spec, one model per backend
:mod:`.client`      EngineClient: the job's one engine-call boundary (ids, cache, timeouts, retries)
:mod:`.vllm_ray`    vLLM in Ray actors: the replica pool, the model folder, the Ray session
:mod:`.vllm_actor`  inside one actor: vLLM's AsyncLLM
:mod:`.openai_http` an OpenAI-compatible completions server
==================  ======================================================================================
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from mapreduce_llm.engines.base import Engine, EngineInfo, EngineOutput, EngineRequest
from mapreduce_llm.engines.config import EngineConfig, OpenAIEngineConfig

if TYPE_CHECKING:
    import httpx

    from mapreduce_llm.engines.openai_http import OpenAIEngine
    from mapreduce_llm.engines.vllm_ray import VLLMRayEngine

__all__ = ["Engine", "EngineInfo", "EngineOutput", "EngineRequest", "open_engine"]


@asynccontextmanager
async def open_engine(
    config: EngineConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[VLLMRayEngine | OpenAIEngine]:
    """A started engine for ``config``, stopped when the block ends, whatever the backend.

    ``vllm``: joins the Ray cluster in ``$RAY_ADDRESS`` (or starts a local one for the block, unless Ray is already
    up), finds the model folder on this machine and starts ``engine.replicas`` actors, waiting up to
    ``engine.startup_timeout_s`` for them to load it; the wait blocks the event loop, as nothing can run before
    the engine is up. ``openai``: opens the HTTP client and reads the served model from the server;
    ``transport`` is an httpx transport used instead of the network (tests mount a fake server through it).

    Either engine carries ``identity``: the served model's identity for cache keys and fingerprints (its files'
    hash, or what the server reports about it).
    """
    if isinstance(config, OpenAIEngineConfig):
        from mapreduce_llm.engines.openai_http import OpenAIEngine

        async with OpenAIEngine(config, transport=transport) as server:
            yield server
        return
    from mapreduce_llm.engines.vllm_ray import engine_pool, ray_session

    pool = engine_pool(config)  # a missing model folder fails here, before Ray starts
    with ray_session():
        pool.start()
        try:
            yield pool
        finally:
            pool.close()
