"""The OpenAI-compatible backend against a fake server on loopback: retries, failures, budgets."""

from __future__ import annotations

import asyncio

import pytest

from mapreduce_llm.config import EngineConfig, build_spec
from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.engines.openai_http import OpenAIEngine
from mapreduce_llm.errors import ConfigError, EngineError, RequestError
from tests.fake_openai import FakeOpenAIServer, serve

REQUEST = EngineRequest("r1", [1, 2, 3, 4], 8, "map")


def _config(base_url: str, **kwargs: object) -> EngineConfig:
    return EngineConfig.model_validate({"backend": "openai", "base_url": base_url, "http_retries": 3, **kwargs})


def test_429_and_503_are_retried_until_the_server_answers() -> None:
    """Two busy answers, then a completion: the request succeeds after two retries with backoff."""
    fake = FakeOpenAIServer(failures=[429, 503])

    async def go(url: str) -> tuple[int, float | None, int]:
        async with OpenAIEngine(_config(url), backoff_s=0.01) as engine:
            out = await engine.generate(REQUEST)
            return out.completion_tokens, out.cumulative_logprob, engine.retries

    with serve(fake) as url:
        tokens, logprob, retries = asyncio.run(go(url))
    assert fake.statuses == [429, 503, 200] and retries == 2
    assert tokens == 3 and logprob == pytest.approx(-1.5)
    assert fake.requests[-1]["prompt"] == [1, 2, 3, 4] and fake.requests[-1]["logprobs"] == 0


def test_persistent_overload_fails_the_request_not_the_engine() -> None:
    """A server that keeps answering 503 fails that request with RequestError after the retries."""
    fake = FakeOpenAIServer(failures=[503] * 10)

    async def go(url: str) -> None:
        async with OpenAIEngine(_config(url, http_retries=2), backoff_s=0.01) as engine:
            await engine.generate(REQUEST)

    with serve(fake) as url, pytest.raises(RequestError, match="after retries: HTTP 503"):
        asyncio.run(go(url))
    assert fake.statuses == [503, 503, 503]


def test_a_rejected_request_is_not_retried() -> None:
    """A 400 is the request's fault: no retry, RequestError naming the status."""
    fake = FakeOpenAIServer(failures=[400])

    async def go(url: str) -> None:
        async with OpenAIEngine(_config(url), backoff_s=0.01) as engine:
            await engine.generate(REQUEST)

    with serve(fake) as url, pytest.raises(RequestError, match="HTTP 400"):
        asyncio.run(go(url))
    assert fake.statuses == [400]


def test_context_length_comes_from_the_server_capped_by_an_explicit_setting() -> None:
    """max_model_len is the server's, unless the job spec sets a smaller one."""
    fake = FakeOpenAIServer(max_model_len=3000)

    async def length(config: EngineConfig) -> int:
        async with OpenAIEngine(config) as engine:
            return engine.info.max_model_len

    with serve(fake) as url:
        assert asyncio.run(length(_config(url))) == 3000
        assert asyncio.run(length(_config(url, max_model_len=1024))) == 1024


def test_unreachable_server_is_explained() -> None:
    """Nothing listening: EngineError naming the URL and what to check."""
    with serve(FakeOpenAIServer()) as url:
        pass  # the port is closed again

    async def go() -> None:
        async with OpenAIEngine(_config(url, http_retries=1), backoff_s=0.01):
            pass

    with pytest.raises(EngineError, match=r"cannot list models at http://127\.0\.0\.1"):
        asyncio.run(go())


def test_unknown_model_is_explained() -> None:
    """A model the server does not serve: EngineError listing the ones it does."""

    async def go(url: str) -> None:
        async with OpenAIEngine(_config(url, model="other")):
            pass

    with serve(FakeOpenAIServer()) as url, pytest.raises(EngineError, match="serves: fake-model"):
        asyncio.run(go(url))


def test_openai_backend_needs_a_base_url() -> None:
    """The spec says what is missing."""
    with pytest.raises(ConfigError, match="backend openai needs base_url"):
        build_spec({"input": "x", "output": "y", "engine": {"backend": "openai"}})
