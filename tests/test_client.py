"""EngineClient: the cache, observer, progress timeout, bounded retries and the circuit breaker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mapreduce_llm.cache import RequestCache
from mapreduce_llm.config import VLLMEngineConfig
from mapreduce_llm.engines.base import EngineBusy, EngineOutput, EngineRequest
from mapreduce_llm.engines.client import EngineClient, Reply
from mapreduce_llm.errors import EngineError, RequestError
from mapreduce_llm.prompts import PromptRef, select_prompts
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fakes import FakeEngine

PROMPT = select_prompts("summarize", PROMPTS).base


def _config(**kwargs: object) -> VLLMEngineConfig:
    defaults = {"retry_backoff_s": 0, "request_timeout_s": 0.2, "circuit_breaker_after_s": 0}
    return VLLMEngineConfig.model_validate({**defaults, **kwargs})


def _request(client: EngineClient) -> EngineRequest:
    return client.request("map", [1, 2, 3], max_tokens=4, temperature=0, top_p=1, repetition_penalty=1)


class ScriptedEngine(FakeEngine):
    """Raises the given errors, in order, on the first attempts (any request), then answers."""

    def __init__(self, tokenizer: HFTokenizer, errors: list[RequestError]) -> None:
        super().__init__(tokenizer, respond=lambda r: "fine")
        self.errors = errors

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        if self.errors:
            self.requests.append(request)
            raise self.errors.pop(0)
        return await super()._answer(request)


class Seen:
    def __init__(self) -> None:
        self.done: list[tuple[str, EngineOutput | None]] = []

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        self.done.append((request.request_id, output))


def test_request_ids_are_unique_per_job_and_carry_the_engine_settings(tokenizer: HFTokenizer) -> None:
    """Ids are job:number:stage; seed and progress timeout come from the engine config."""
    client = EngineClient(FakeEngine(tokenizer), _config(seed=7), job_id="j")
    first, second = _request(client), _request(client)
    assert (first.request_id, second.request_id) == ("j:0:map", "j:1:map")
    assert (first.seed, first.timeout_s) == (7, 0.2)


def test_a_cached_output_is_returned_without_calling_the_engine(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """The second identical request comes from the cache; counters and the observer tell them apart."""
    engine, seen = FakeEngine(tokenizer), Seen()
    client = EngineClient(engine, _config(), job_id="j", cache=RequestCache(tmp_path / "c.sqlite"), observer=seen)

    async def go() -> tuple[Reply, Reply]:
        return await client.generate(_request(client), PROMPT), await client.generate(_request(client), PROMPT)

    first, second = asyncio.run(go())
    assert (first.from_cache, second.from_cache) == (False, True) and first.output == second.output
    assert len(engine.requests) == 1 and (client.requests_sent, client.requests_from_cache) == (1, 1)
    assert [rid for rid, _ in seen.done] == ["j:0:map"]


def test_the_observer_hears_of_failed_requests(tokenizer: HFTokenizer) -> None:
    """A request that fails after its retries is reported with no output, then raised."""
    seen = Seen()
    engine = ScriptedEngine(tokenizer, [RequestError("bad", transient=True) for _ in range(2)])
    client = EngineClient(engine, _config(request_retries=1), job_id="j", observer=seen)
    with pytest.raises(RequestError, match="bad"):
        asyncio.run(client.generate(_request(client), PROMPT))
    assert seen.done == [("j:0:map", None)] and client.requests_sent == 2


def test_a_success_ends_the_run_of_failures(tokenizer: HFTokenizer) -> None:
    """Failures separated by successes never open the breaker, however many there are."""
    engine = ScriptedEngine(tokenizer, [])
    client = EngineClient(engine, _config(request_retries=1, circuit_breaker_failures=2), job_id="j")

    async def go() -> None:
        for _ in range(6):
            engine.errors.append(RequestError("hiccup", transient=True))
            await client.generate(_request(client), PROMPT)

    asyncio.run(go())
    assert client.requests_sent == 12 and client.breaker.failures == 0


def test_rejections_and_busy_answers_are_not_engine_faults(tokenizer: HFTokenizer) -> None:
    """Rejected requests and 429s between two engine failures neither count nor end the run of failures."""
    engine = ScriptedEngine(tokenizer, [])
    client = EngineClient(engine, _config(request_retries=0, circuit_breaker_failures=3), job_id="j")

    async def fails(error: RequestError) -> None:
        engine.errors.append(error)
        with pytest.raises(RequestError):
            await client.generate(_request(client), PROMPT)

    async def go() -> None:
        await fails(RequestError("down", transient=True))
        for _ in range(3):
            await fails(EngineBusy("HTTP 429"))
            await fails(RequestError("too long"))
        await fails(RequestError("down", transient=True))

    asyncio.run(go())
    assert client.breaker.failures == 2 and not client.breaker.is_open


def test_a_short_outage_does_not_open_the_breaker(tokenizer: HFTokenizer) -> None:
    """Many failures at once right after a success (a server restart) are retried, not taken for a dead engine:
    the breaker also needs circuit_breaker_after_s without a success."""
    down = [RequestError("connection refused", transient=True) for _ in range(6)]
    engine = ScriptedEngine(tokenizer, down)
    client = EngineClient(
        engine, _config(request_retries=6, circuit_breaker_failures=2, circuit_breaker_after_s=60), job_id="j"
    )
    reply = asyncio.run(client.generate(_request(client), PROMPT))
    assert reply.output.text == "fine" and client.requests_sent == 7 and not client.breaker.is_open


def test_an_open_breaker_sends_nothing_more(tokenizer: HFTokenizer) -> None:
    """Once open, every call raises EngineError at once and the engine sees no new request."""
    engine = ScriptedEngine(tokenizer, [RequestError("down", transient=True)])
    client = EngineClient(engine, _config(circuit_breaker_failures=1), job_id="j")
    with pytest.raises(EngineError, match=r"1 attempts in a row.*last error: down"):
        asyncio.run(client.generate(_request(client), PROMPT))
    with pytest.raises(EngineError, match="circuit_breaker_failures=1"):
        asyncio.run(client.generate(_request(client), PROMPT))
    assert len(engine.requests) == 1 and client.requests_sent == 1


def test_retry_delays_are_capped(tokenizer: HFTokenizer) -> None:
    """Exponential backoff stops growing at retry_backoff_max_s: five retries take a bounded time."""
    engine = ScriptedEngine(tokenizer, [RequestError("hiccup", transient=True) for _ in range(5)])
    config = _config(request_retries=5, retry_backoff_s=0.05, retry_backoff_max_s=0.1, circuit_breaker_failures=100)
    client = EngineClient(engine, config, job_id="j")
    started = time.perf_counter()
    asyncio.run(client.generate(_request(client), PROMPT))
    elapsed = time.perf_counter() - started
    assert 0.05 + 4 * 0.1 <= elapsed < 5 * (0.1 + 0.05) + 0.5  # uncapped, the delays would add up to 1.55 s+


class UnreadableEngine(FakeEngine):
    """Answers after ``delay_s``; its progress cannot be read (raises, or never returns)."""

    def __init__(self, tokenizer: HFTokenizer, delay_s: float, hang: bool) -> None:
        super().__init__(tokenizer, respond=lambda r: "late")
        self.delay_s = delay_s
        self.hang = hang

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        await asyncio.sleep(self.delay_s)
        return await super()._answer(request)

    async def progress(self, request_id: str) -> int:
        if self.hang:
            await asyncio.Event().wait()
        raise ConnectionError("replica unreachable")


@pytest.mark.parametrize("hang", [False, True])
def test_progress_that_cannot_be_read_counts_as_none(tokenizer: HFTokenizer, hang: bool) -> None:
    """A progress read that fails or never returns does not keep a request alive past request_timeout_s."""
    client = EngineClient(UnreadableEngine(tokenizer, 5, hang), _config(request_retries=0), job_id="j")
    started = time.perf_counter()
    with pytest.raises(RequestError, match=r"no token for 0\.2s"):
        asyncio.run(client.generate(_request(client), PROMPT))
    assert time.perf_counter() - started < 1


class TickingEngine(FakeEngine):
    """Answers after ``delay_s`` while its token count rises every ``tick_s``."""

    def __init__(self, tokenizer: HFTokenizer, delay_s: float, tick_s: float) -> None:
        super().__init__(tokenizer, respond=lambda r: "slow")
        self.delay_s = delay_s
        self.tick_s = tick_s

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        ticks = int(self.delay_s / self.tick_s)
        for _ in range(ticks):
            await asyncio.sleep(self.tick_s)
            self.tokens += 1
        return await super()._answer(request)


def test_a_request_is_kept_while_its_engine_makes_progress(tokenizer: HFTokenizer) -> None:
    """A request ten times longer than request_timeout_s completes in one attempt when tokens flow."""
    engine = TickingEngine(tokenizer, delay_s=2.0, tick_s=0.05)
    client = EngineClient(engine, _config(request_retries=0), job_id="j")
    reply = asyncio.run(client.generate(_request(client), PROMPT))
    assert reply.output.text and client.requests_sent == 1


def test_requests_are_counted_by_the_node_that_answered_them(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """Engine answers count for the node in their output (where a vLLM replica ran); answers from the cache and
    outputs without a node (an OpenAI server) count for none."""
    import dataclasses

    class TwoNodes(FakeEngine):
        async def _answer(self, request: EngineRequest) -> EngineOutput:
            output = await super()._answer(request)
            node = None if request.prompt_token_ids[0] == 9 else f"node-{len(self.requests) % 2}"
            return dataclasses.replace(output, node=node)

    client = EngineClient(TwoNodes(tokenizer), _config(), job_id="j", cache=RequestCache(tmp_path / "c.sqlite"))

    async def go() -> None:
        for first in (1, 2, 3, 1, 9):  # the second [1, ...] comes from the cache; [9, ...] has no node
            request = client.request("map", [first, 2, 3], max_tokens=4, temperature=0, top_p=1, repetition_penalty=1)
            await client.generate(request, PROMPT)

    asyncio.run(go())
    assert client.requests_by_node == {"node-1": 2, "node-0": 1} and client.requests_from_cache == 1
