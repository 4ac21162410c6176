"""An OpenAI-compatible server (e.g. ``vllm serve``) behind the engine protocol.

Requests go to the server's ``/completions`` endpoint with the prompt as a list of token ids, so the server
runs exactly the ids the planner counted (vLLM accepts token-id prompts there, as OpenAI's legacy API does).
``logprobs: 0`` returns the chosen tokens' logprobs, summed into ``cumulative_logprob``. A request with a
JSON schema sends it as vLLM's ``structured_outputs`` extension.

Concurrency is bounded by ``engine.max_concurrent_requests``; answers 429 and 5xx, timeouts and dropped
connections are retried with exponential backoff and jitter (tenacity), at most ``engine.http_retries``
times. The context length comes from the server's ``/models`` listing (vLLM reports ``max_model_len``).

Use as an async context manager: the HTTP client and the server's model are set up on enter.
"""

from __future__ import annotations

import asyncio
import os
import time
from types import TracebackType
from typing import Any

import httpx
import structlog
from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt, wait_random_exponential

from mapreduce_llm.config import EngineConfig
from mapreduce_llm.engines.base import EngineInfo, EngineOutput, EngineRequest
from mapreduce_llm.errors import EngineError, RequestError

log = structlog.get_logger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying: the server is busy or failed transiently, not the request."""


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry can fix: 429/5xx answers, timeouts and connection errors."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in RETRY_STATUSES
    return isinstance(exc, httpx.TransportError)


class OpenAIEngine:
    """An OpenAI-compatible completions server as an :class:`~mapreduce_llm.engines.base.Engine`.

    ``transport``: an httpx transport to use instead of the network (tests mount fakes through it).
    ``backoff_s``: scale of the retry delays (random up to backoff_s * 2**retry, "full jitter", at most 20 s).
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_s: float = 0.5,
    ) -> None:
        if not config.base_url:
            raise EngineError("engine.base_url is not set; give the OpenAI-compatible server's API root")
        self.config = config
        self._transport = transport
        self._backoff_s = backoff_s
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._info: EngineInfo | None = None
        self._server_model = ""
        self.retries = 0
        """Requests sent again after a transient failure, since start."""

    @property
    def info(self) -> EngineInfo:
        """The served model and its context length (after start)."""
        if self._info is None:
            raise EngineError("engine not started; use `async with OpenAIEngine(...) as engine:`")
        return self._info

    async def start(self) -> None:
        """Open the HTTP client and read the served model and its context length from ``/models``."""
        cfg = self.config
        headers = {}
        api_key = os.environ.get(cfg.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            base_url=str(cfg.base_url).rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(cfg.http_timeout_s, connect=10.0),
            transport=self._transport,
            limits=httpx.Limits(max_connections=cfg.max_concurrent_requests),
        )
        self._slots = asyncio.Semaphore(cfg.max_concurrent_requests)
        try:
            listing = await self._send("GET", "models")
        except (httpx.HTTPError, RetryError) as exc:
            await self.close()
            raise EngineError(
                f"cannot list models at {cfg.base_url}: {_describe(exc)}; check engine.base_url, that the server "
                f"is up, and the API key in ${cfg.api_key_env}"
            ) from None
        self._info = self._choose_model(listing)
        log.info("engine.ready", backend="openai", model=self._info.model, max_model_len=self._info.max_model_len)

    def _choose_model(self, listing: dict[str, Any]) -> EngineInfo:
        cfg = self.config
        models = {m["id"]: m for m in listing.get("data", [])}
        if cfg.model is None and len(models) != 1:
            raise EngineError(
                f"the server at {cfg.base_url} serves {len(models)} models ({', '.join(sorted(models)) or 'none'}); "
                "set engine.model to one of them"
            )
        name = cfg.model or next(iter(models))
        if name not in models:
            raise EngineError(
                f"the server at {cfg.base_url} does not serve {name!r}; it serves: {', '.join(sorted(models))}"
            )
        self._server_model = name  # served_model_name may rename it in results; the server knows this id
        # vLLM reports the context length; other servers may not, then the configured one is used. An
        # explicitly configured max_model_len below the server's caps the budgets.
        served = models[name].get("max_model_len")
        length = int(served) if served else cfg.max_model_len
        if "max_model_len" in cfg.model_fields_set:
            length = min(length, cfg.max_model_len)
        return EngineInfo(model=cfg.served_model_name or name, max_model_len=length, replicas=1)

    async def generate(self, request: EngineRequest) -> EngineOutput:
        """Run one completion; retried on 429/5xx/timeouts, then RequestError (or EngineError if unreachable)."""
        if self._slots is None:
            raise EngineError("engine not started; use `async with OpenAIEngine(...) as engine:`")
        body: dict[str, Any] = {
            "model": self._server_model,
            "prompt": request.prompt_token_ids,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "logprobs": 0,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.json_schema is not None:
            body["structured_outputs"] = {"json": request.json_schema}  # vLLM's structured outputs extension
        if request.repetition_penalty != 1.0:
            body["repetition_penalty"] = request.repetition_penalty  # a vLLM extension of the API
        started = time.perf_counter()
        async with self._slots:
            try:
                answer = await self._send("POST", "completions", body)
            except RetryError as exc:
                cause = exc.last_attempt.exception() or exc
                if isinstance(cause, httpx.ConnectError):
                    raise EngineError(f"server {self.config.base_url} unreachable: {_describe(cause)}") from None
                raise RequestError(f"request {request.request_id} failed after retries: {_describe(cause)}") from None
            except httpx.HTTPError as exc:
                raise RequestError(f"server rejected request {request.request_id}: {_describe(exc)}") from None
            except ValueError as exc:  # an answer that is not JSON
                raise RequestError(f"request {request.request_id}: unreadable answer from the server: {exc}") from None
        return _output(request, answer, time.perf_counter() - started)

    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One HTTP call, retried with backoff while the failure is transient."""
        assert self._client is not None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.http_retries + 1),
            wait=wait_random_exponential(multiplier=self._backoff_s, max=20),
            retry=retry_if_exception(is_transient),
            reraise=False,
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.retries += 1
                response = await self._client.request(method, path, json=body)
                response.raise_for_status()
                data: dict[str, Any] = response.json()
                return data
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> OpenAIEngine:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _output(request: EngineRequest, answer: dict[str, Any], seconds: float) -> EngineOutput:
    """An :class:`EngineOutput` from a completions answer."""
    try:
        choice = answer["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise RequestError(f"request {request.request_id}: the server's answer has no choices") from None
    usage = answer.get("usage") or {}
    reported = choice.get("logprobs") or {}
    logprobs = reported.get("token_logprobs")
    chosen = [lp for lp in logprobs or [] if lp is not None]
    tokens = reported.get("tokens")
    details = usage.get("prompt_tokens_details") or {}
    return EngineOutput(
        request_id=request.request_id,
        text=choice.get("text") or "",
        prompt_tokens=int(usage.get("prompt_tokens", len(request.prompt_token_ids))),
        completion_tokens=int(usage.get("completion_tokens", len(chosen))),
        cumulative_logprob=sum(chosen) if logprobs is not None else None,
        finish_reason=choice.get("finish_reason"),
        seconds=seconds,
        cached_prompt_tokens=details.get("cached_tokens"),
        tokens=tuple(str(t) for t in tokens) if tokens and logprobs and len(tokens) == len(logprobs) else None,
        token_logprobs=(
            tuple(float("nan") if lp is None else float(lp) for lp in logprobs)
            if tokens and logprobs and len(tokens) == len(logprobs)
            else None
        ),
    )


def _describe(exc: BaseException) -> str:
    """A one-line description of an HTTP failure: status and the server's message, or the transport error."""
    if isinstance(exc, httpx.HTTPStatusError):
        text = exc.response.text.strip().replace("\n", " ")
        return f"HTTP {exc.response.status_code}: {text[:300]}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
