"""Test doubles. They live here only; the package has none."""

from __future__ import annotations

import asyncio
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
    rejected with RequestError, as vLLM rejects it.
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
        self._info = EngineInfo(model="fake-model", max_model_len=max_model_len, replicas=1)

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def generate(self, request: EngineRequest) -> EngineOutput:
        try:
            return await asyncio.wait_for(self._answer(request), request.timeout_s)
        except TimeoutError:
            raise RequestError(f"no answer within {request.timeout_s}s", transient=True) from None

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
