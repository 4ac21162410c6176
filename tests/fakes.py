"""Test doubles. They live here only; the package has none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mapreduce_llm.engines.base import EngineInfo, EngineOutput, EngineRequest
from mapreduce_llm.errors import RequestError
from mapreduce_llm.tokenization import Tokenizer


class FakeEngine:
    """A deterministic stand-in for vLLM that enforces the context limit like the real engine does.

    ``respond(request) -> str`` chooses the answer (default: a long filler answer that uses the whole
    ``max_tokens``, the worst case for the reduce tree). Every token gets logprob ``logprob`` (a number, or a
    function of the request and the answer text). Answers are cut to ``max_tokens`` tokens, as vLLM does.
    Every request is kept in ``requests``; a request over the context is recorded in ``violations`` and
    rejected with RequestError, as vLLM rejects it. ``tokens`` counts the tokens answered so far
    (:meth:`progress`).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_model_len: int = 2048,
        respond: Callable[[EngineRequest], str] | None = None,
        logprob: float | Callable[[EngineRequest, str], float] = -0.2,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.respond = respond or (lambda req: "The text explains several facts in detail. " * 200)
        self.logprob = logprob
        self.requests: list[EngineRequest] = []
        self.violations: list[EngineRequest] = []
        self.tokens = 0
        self._info = EngineInfo(model="fake-model", max_model_len=max_model_len, replicas=1)

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def generate(self, request: EngineRequest) -> EngineOutput:
        return await self._answer(request)

    async def progress(self, request_id: str) -> int:
        return self.tokens

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        self.requests.append(request)
        if len(request.prompt_token_ids) + request.max_tokens > self.max_model_len:
            self.violations.append(request)
            raise RequestError(f"prompt of {len(request.prompt_token_ids)} tokens + {request.max_tokens} > context")
        await asyncio.sleep(0)
        ids = self.tokenizer.encode_data(self.respond(request))[: request.max_tokens]
        text = self.tokenizer.decode(ids)
        logprob = self.logprob(request, text) if callable(self.logprob) else self.logprob
        tokens = tuple(self.tokenizer.decode([i]) for i in ids)
        self.tokens += len(ids)
        return EngineOutput(
            request_id=request.request_id,
            text=text,
            prompt_tokens=len(request.prompt_token_ids),
            completion_tokens=len(ids),
            cumulative_logprob=logprob * len(ids),
            finish_reason="length",
            seconds=0.0,
            tokens=tokens,
            token_logprobs=tuple(logprob for _ in ids),
        )

    def stages(self) -> list[str]:
        return [r.stage for r in self.requests]


class SharedEngine(FakeEngine):
    """Continuous batching on a slow engine: one token every ``step_s`` for the whole engine, given in turn to
    the requests in flight, and ``tokens_per_request`` tokens per request. So the more requests share the
    engine, the longer each takes, while the engine's token count (:meth:`progress`) keeps rising.

    Records the id of every attempt as it arrives (``received``), how long each took (``latency``) and the most
    requests in flight at once.
    """

    def __init__(self, tokenizer: Tokenizer, step_s: float, tokens_per_request: int, max_model_len: int = 2048) -> None:
        super().__init__(tokenizer, max_model_len=max_model_len)
        self.step_s = step_s
        self.tokens_per_request = tokens_per_request
        self.received: list[str] = []
        self.latency: dict[str, float] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._turn: asyncio.Lock | None = None

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        if self._turn is None:
            self._turn = asyncio.Lock()  # FIFO: each token goes to the request that waited longest
        self.received.append(request.request_id)
        started = time.perf_counter()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for _ in range(self.tokens_per_request):
                async with self._turn:
                    await asyncio.sleep(self.step_s)
                    self.tokens += 1
            return await super()._answer(request)
        finally:
            self.in_flight -= 1
            self.latency[request.request_id] = time.perf_counter() - started


class HungEngine(FakeEngine):
    """Takes every request and never answers; its token count never moves. Records the cancelled calls."""

    def __init__(self, tokenizer: Tokenizer, max_model_len: int = 2048) -> None:
        super().__init__(tokenizer, max_model_len=max_model_len)
        self.cancelled: list[tuple[str, float]] = []
        """(request id, seconds from the call to its cancellation) of every abandoned call."""

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        self.requests.append(request)
        started = time.perf_counter()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append((request.request_id, time.perf_counter() - started))
            raise
        raise AssertionError("unreachable")


class BrokenEngine(FakeEngine):
    """Answers until it has answered a ``stage`` request, then fails every attempt with a transient error, like
    an engine whose process died behind a live front end. ``failed`` counts the failed attempts."""

    def __init__(self, tokenizer: Tokenizer, stage: str = "reduce", max_model_len: int = 2048) -> None:
        super().__init__(tokenizer, max_model_len=max_model_len)
        self.stage = stage
        self.broken = False
        self.failed = 0

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        if self.broken:
            self.failed += 1
            await asyncio.sleep(0)
            raise RequestError("engine core died", transient=True)
        out = await super()._answer(request)
        self.broken = self.broken or request.stage == self.stage
        return out
