"""An OpenAI-compatible server (e.g. ``vllm serve``) behind the engine protocol.

Requests go to the server's ``/completions`` endpoint with the prompt as a list of token ids, so the server
runs exactly the ids the planner counted (vLLM accepts token-id prompts there, as OpenAI's legacy API does).
``logprobs: 0`` returns the chosen tokens' logprobs, summed into ``cumulative_logprob``. A request with a
JSON schema sends it as vLLM's ``structured_outputs`` extension.

Completions are streamed (server-sent events, with the usage in a last event), and every token that arrives
on any of this engine's streams counts as its progress (:meth:`OpenAIEngine.progress`): the engine client
abandons a request only when the server has sent this job nothing for ``engine.request_timeout_s``, never
because it is slow. Cancelling a call closes its connection, and vLLM aborts the request.

Concurrency is bounded by ``engine.max_concurrent_requests``. One call is one attempt: the engine client
retries answers 429 and 5xx and dropped connections (up to ``engine.http_retries`` times). The context
length comes from the server's ``/models`` listing (vLLM reports ``max_model_len``), retried here.

Use as an async context manager: the HTTP client and the server's model are set up on enter.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from types import TracebackType
from typing import Any

import httpx
import structlog
from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt, wait_random_exponential

from mapreduce_llm.engines.base import EngineBusy, EngineInfo, EngineOutput, EngineRequest
from mapreduce_llm.engines.config import OpenAIEngineConfig
from mapreduce_llm.errors import EngineError, RequestError
from mapreduce_llm.fingerprints import server_model_fingerprint

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
    ``backoff_s``: scale of the delays between retries of the model listing at start (random up to
    backoff_s * 2**retry, "full jitter", at most 20 s).
    """

    def __init__(
        self,
        config: OpenAIEngineConfig,
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
        self.identity: str | None = None
        """The served model's identity for fingerprints and cache keys: what the server says of it (id, root,
        context length), since its files cannot be read from here. Set on start."""
        self._streamed = 0
        self.retries = 0
        """Model listings sent again after a transient failure, since start."""

    @property
    def info(self) -> EngineInfo:
        """The served model and its context length (after start)."""
        if self._info is None:
            raise EngineError("engine not started; use `async with open_engine(config) as engine:`")
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
        self.identity = server_model_fingerprint(str(cfg.base_url), models[name])
        # vLLM reports the context length; other servers may not, then the configured one is used. An
        # explicitly configured max_model_len below the server's caps the budgets.
        served = models[name].get("max_model_len")
        length = int(served) if served else cfg.max_model_len
        if "max_model_len" in cfg.model_fields_set:
            length = min(length, cfg.max_model_len)
        return EngineInfo(model=cfg.served_model_name or name, max_model_len=length, replicas=1)

    async def generate(self, request: EngineRequest) -> EngineOutput:
        """Stream one completion; RequestError (``transient`` for 5xx and lost connections, EngineBusy for 429)."""
        if self._slots is None or self._client is None:
            raise EngineError("engine not started; use `async with open_engine(config) as engine:`")
        body: dict[str, Any] = {
            "model": self._server_model,
            "prompt": request.prompt_token_ids,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "logprobs": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.json_schema is not None:
            body["structured_outputs"] = {"json": request.json_schema}  # vLLM's structured outputs extension
        if request.frequency_penalty:
            body["frequency_penalty"] = request.frequency_penalty
        if request.presence_penalty:
            body["presence_penalty"] = request.presence_penalty
        if request.repetition_penalty != 1.0:
            body["repetition_penalty"] = request.repetition_penalty  # a vLLM extension of the API
        if request.ignore_eos:
            body["ignore_eos"] = True  # a vLLM extension of the API
        # request.priority is not sent: vLLM's server rejects any priority but 0 unless it was started with
        # --scheduling-policy priority, which a client cannot see.
        started = time.perf_counter()
        stream = _Stream()
        async with self._slots:
            try:
                async with self._client.stream(
                    "POST", "completions", json=body, timeout=self._stream_timeout
                ) as answer:
                    if answer.is_error:
                        await answer.aread()
                        raise _failed(request, answer.status_code, _server_message(answer))
                    async for line in answer.aiter_lines():
                        event = _event(request, line)
                        if event is None:
                            continue
                        if event is _DONE:
                            break
                        self._streamed += stream.add(request, event)
            except httpx.TransportError as exc:  # refused, dropped or cut mid-stream: worth another attempt
                raise RequestError(
                    f"request {request.request_id}: {self.config.base_url}: {_describe(exc)}", transient=True
                ) from None
        return _output(request, stream.answer(), time.perf_counter() - started)

    async def progress(self, request_id: str) -> int:
        """Tokens received on all of this engine's streams so far (the server is one engine for all requests)."""
        return self._streamed

    @property
    def _stream_timeout(self) -> httpx.Timeout:
        """Connecting and sending are bounded by ``http_timeout_s``; reading is not: a stream that stops is
        abandoned by the engine client after ``request_timeout_s`` without progress."""
        return httpx.Timeout(self.config.http_timeout_s, connect=10.0, read=None)

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


_DONE: dict[str, Any] = {}
"""The end-of-stream marker (``data: [DONE]``)."""


def _event(request: EngineRequest, line: str) -> dict[str, Any] | None:
    """One server-sent event's JSON (``data: {...}``), _DONE at the end, None for other lines."""
    if not line.startswith("data:"):
        return None  # blank separators, comments and other fields
    data = line[len("data:") :].strip()
    if data == "[DONE]":
        return _DONE
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise RequestError(f"request {request.request_id}: unreadable event from the server: {exc}") from None
    if not isinstance(event, dict):
        raise RequestError(f"request {request.request_id}: unreadable event from the server: {data[:200]}")
    return event


class _Stream:
    """The events of one streamed completion, merged into the shape of a non-streamed answer."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.tokens: list[Any] = []
        self.logprobs: list[Any] = []
        self.reported_logprobs = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.choices = 0

    def add(self, request: EngineRequest, event: dict[str, Any]) -> int:
        """Merge one event; returns how many tokens it brought. An error event raises RequestError."""
        if "error" in event:
            error = event["error"] if isinstance(event["error"], dict) else {"message": event["error"]}
            raise _failed(request, int(error.get("code") or 500), f"{error.get('message', error)}")
        if event.get("usage"):
            self.usage = event["usage"]
        brought = 0
        for choice in event.get("choices") or []:
            self.choices += 1
            self.text.append(choice.get("text") or "")
            reported = choice.get("logprobs")
            if reported:
                self.reported_logprobs = True
                self.tokens.extend(reported.get("tokens") or [])
                self.logprobs.extend(reported.get("token_logprobs") or [])
                brought += len(reported.get("token_logprobs") or [])
            else:
                brought += 1 if choice.get("text") else 0
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return brought

    def answer(self) -> dict[str, Any]:
        """The merged answer, as ``/completions`` returns it without streaming."""
        choices = []
        if self.choices:
            choice: dict[str, Any] = {"text": "".join(self.text), "finish_reason": self.finish_reason}
            if self.reported_logprobs:
                choice["logprobs"] = {"tokens": self.tokens, "token_logprobs": self.logprobs}
            choices.append(choice)
        answer: dict[str, Any] = {"choices": choices}
        if self.usage is not None:
            answer["usage"] = self.usage
        return answer


def _failed(request: EngineRequest, status: int, detail: str) -> RequestError:
    """The error for a request the server answered with ``status``: 429 busy, retryable statuses transient."""
    message = f"server failed request {request.request_id}: HTTP {status}: {detail[:300]}"
    if status == 429:
        return EngineBusy(message)
    return RequestError(message, transient=status in RETRY_STATUSES or status >= 500)


def _server_message(answer: httpx.Response) -> str:
    """The server's message in an error answer, on one line."""
    return answer.text.strip().replace("\n", " ")


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
        return f"HTTP {exc.response.status_code}: {_server_message(exc.response)[:300]}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
