"""The OpenAI-compatible backend against a fake server: streamed answers, retries, stalls, budgets."""

from __future__ import annotations

import asyncio
import time

import pytest

from mapreduce_llm.config import OpenAIEngineConfig, build_spec
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.engines.client import EngineClient
from mapreduce_llm.engines.openai_http import OpenAIEngine, _output
from mapreduce_llm.errors import ConfigError, EngineError, RequestError
from mapreduce_llm.prompts import select_prompts
from tests.conftest import PROMPTS
from tests.fake_openai import FakeOpenAIServer, serve

REQUEST = EngineRequest("r1", [1, 2, 3, 4], 8, "map")
PROMPT = select_prompts("summarize", PROMPTS).base


def _config(base_url: str = "http://fake/v1", **kwargs: object) -> OpenAIEngineConfig:
    return OpenAIEngineConfig.model_validate(
        {
            "backend": "openai",
            "base_url": base_url,
            "http_retries": 3,
            "retry_backoff_s": 0.01,
            "circuit_breaker_after_s": 0,
            **kwargs,
        }
    )


async def _through_client(
    fake: FakeOpenAIServer, config: OpenAIEngineConfig, *requests: EngineRequest
) -> list[EngineOutput]:
    """Send ``requests`` at once through an engine client to ``fake``, mounted in-process."""
    async with OpenAIEngine(config, transport=fake.transport()) as engine:
        client = EngineClient(engine, config, job_id="t")
        replies = await asyncio.gather(*(client.generate(r, PROMPT) for r in requests))
        return [r.output for r in replies]


def _requests(n: int) -> list[EngineRequest]:
    return [EngineRequest(f"r{i}", [1, 2, 3, 4], 64, "map") for i in range(n)]


def test_a_streamed_answer_is_the_answer_the_server_gives_without_streaming() -> None:
    """Text, tokens, logprobs, usage, cached tokens and finish reason are merged from the stream unchanged."""
    fake = FakeOpenAIServer(tokens=3, cached_tokens=2)
    (streamed,) = asyncio.run(_through_client(fake, _config(), REQUEST))
    body = fake.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True} and body["logprobs"] == 0
    _, whole = fake.handle("POST", "/v1/completions", {**body, "stream": False})
    assert isinstance(whole, dict)
    expected = _output(REQUEST, whole, streamed.seconds)
    assert streamed == expected
    assert streamed.text == "ok ok ok " and streamed.tokens == ("ok ",) * 3
    assert streamed.cumulative_logprob == pytest.approx(-1.5) and streamed.token_logprobs == (-0.5,) * 3
    assert (streamed.prompt_tokens, streamed.completion_tokens, streamed.cached_prompt_tokens) == (4, 3, 2)
    assert streamed.finish_reason == "length"


def test_penalties_are_sent_as_openai_fields_only_when_set() -> None:
    """frequency_penalty and presence_penalty are standard completion fields; unset (0) they are not sent."""
    fake = FakeOpenAIServer(tokens=2)
    penalised = EngineRequest("p", [1, 2, 3, 4], 8, "map", frequency_penalty=0.5, presence_penalty=0.25)
    asyncio.run(_through_client(fake, _config(), penalised, REQUEST))
    sent = [body for body in fake.requests if body.get("frequency_penalty") is not None]
    assert len(fake.requests) == 2 and len(sent) == 1, fake.requests
    assert sent[0]["frequency_penalty"] == 0.5 and sent[0]["presence_penalty"] == 0.25
    plain = next(body for body in fake.requests if body is not sent[0])
    assert "frequency_penalty" not in plain and "presence_penalty" not in plain


def test_429_and_503_are_retried_until_the_server_answers() -> None:
    """Two busy answers, then a completion: the client retries with backoff and the request succeeds."""
    fake = FakeOpenAIServer(failures=[429, 503])
    (out,) = asyncio.run(_through_client(fake, _config(), REQUEST))
    assert fake.statuses == [429, 503, 200]
    assert out.completion_tokens == 3 and out.cumulative_logprob == pytest.approx(-1.5)
    assert fake.requests[-1]["prompt"] == [1, 2, 3, 4]


def test_persistent_overload_fails_the_request_not_the_engine() -> None:
    """A server that keeps answering 503 fails that request with RequestError after http_retries retries."""
    fake = FakeOpenAIServer(failures=[503] * 10)
    with pytest.raises(RequestError, match="HTTP 503"):
        asyncio.run(_through_client(fake, _config(http_retries=2), REQUEST))
    assert fake.statuses == [503, 503, 503]


def test_a_rejected_request_is_not_retried() -> None:
    """A 400 is the request's fault: no retry, RequestError naming the status."""
    fake = FakeOpenAIServer(failures=[400])
    with pytest.raises(RequestError, match="HTTP 400"):
        asyncio.run(_through_client(fake, _config(), REQUEST))
    assert fake.statuses == [400]


def test_a_stalled_stream_is_abandoned_after_request_timeout_s_and_retried() -> None:
    """Two tokens, then nothing: each attempt is closed after request_timeout_s without a token, then the
    request fails after its retries."""
    fake = FakeOpenAIServer(tokens=5, stall_after=2, token_delay_s=0.01)
    config = _config(request_timeout_s=0.3, http_retries=1)
    started = time.perf_counter()
    with pytest.raises(RequestError, match=r"no token for 0\.3s"):
        asyncio.run(_through_client(fake, config, REQUEST))
    elapsed = time.perf_counter() - started
    assert len(fake.requests) == 2 and fake.closed_early == 2  # both streams were cancelled by the client
    assert 0.6 <= elapsed < 2.5


def test_slow_streams_and_queued_requests_are_not_timed_out() -> None:
    """The server streams one request at a time: the others wait far longer than request_timeout_s without a
    byte, but the server's tokens keep coming, so none is abandoned or sent twice."""
    fake = FakeOpenAIServer(tokens=10, token_delay_s=0.04, running=1)
    config = _config(request_timeout_s=0.3, http_retries=3)
    started = time.perf_counter()
    outputs = asyncio.run(_through_client(fake, config, *_requests(4)))
    assert time.perf_counter() - started > 4 * 0.3  # the last request waited well past the timeout
    assert [o.completion_tokens for o in outputs] == [10] * 4
    assert len(fake.requests) == 4 and fake.closed_early == 0


def test_http_timeout_s_does_not_cut_a_long_stream() -> None:
    """http_timeout_s bounds connecting and sending, not reading: a stream longer than it completes."""
    fake = FakeOpenAIServer(tokens=5, token_delay_s=0.05)

    async def go() -> EngineOutput:
        async with OpenAIEngine(_config(http_timeout_s=0.1), transport=fake.transport()) as engine:
            return await engine.generate(REQUEST)

    assert asyncio.run(go()).completion_tokens == 5


def test_a_server_that_goes_away_trips_the_circuit_breaker() -> None:
    """Connections refused on every attempt: after circuit_breaker_failures attempts in a row the client stops
    with EngineError naming the server, in bounded time, although each request had retries left."""
    fake = FakeOpenAIServer()
    config = _config(http_retries=10, circuit_breaker_failures=3)

    async def go() -> None:
        async with OpenAIEngine(config, transport=fake.transport()) as engine:
            fake.down = True
            client = EngineClient(engine, config, job_id="t")
            await asyncio.gather(*(client.generate(r, PROMPT) for r in _requests(2)))

    started = time.perf_counter()
    with pytest.raises(EngineError, match=r"3 attempts in a row.*ConnectError.*http://fake/v1"):
        asyncio.run(go())
    assert time.perf_counter() - started < 2


def test_context_length_comes_from_the_server_capped_by_an_explicit_setting() -> None:
    """max_model_len is the server's, unless the job spec sets a smaller one."""
    fake = FakeOpenAIServer(max_model_len=3000)

    async def length(config: OpenAIEngineConfig) -> int:
        async with OpenAIEngine(config) as engine:
            return engine.info.max_model_len

    with serve(fake) as url:
        assert asyncio.run(length(_config(url))) == 3000
        assert asyncio.run(length(_config(url, max_model_len=1024))) == 1024


def test_completions_stream_over_real_http() -> None:
    """Over a loopback socket too, the answer is read from the event stream."""
    fake = FakeOpenAIServer(tokens=2)

    async def go(url: str) -> EngineOutput:
        async with OpenAIEngine(_config(url)) as engine:
            return await engine.generate(REQUEST)

    with serve(fake) as url:
        out = asyncio.run(go(url))
    assert (out.text, out.completion_tokens, out.finish_reason) == ("ok ok ", 2, "length")


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
