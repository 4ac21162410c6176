"""The one place a job calls its engine: request ids, the output cache, timeouts, retries, a circuit breaker.

Every engine call of a job goes through :meth:`EngineClient.generate`:

1. the output cache is asked first (a rerun never recomputes a finished request);
2. the request is sent and watched: it is abandoned — cancelled in the engine — only when the engine serving it
   has produced no token for ``request_timeout_s`` (:meth:`Engine.progress`). A request that waits behind 63
   others on a slow engine is not a fault, however long it takes;
3. a transient failure (engine error, lost connection, HTTP 429/5xx, abandoned) is retried with exponential
   backoff and jitter, a bounded number of times (tenacity); then the request fails with RequestError and only
   its document fails;
4. after ``circuit_breaker_failures`` failed attempts in a row, with no success for ``circuit_breaker_after_s``,
   the engine is taken for broken: the client stops sending and raises EngineError, which ends the job with
   what it finished;
5. the output is stored in the cache and reported to the observer.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from mapreduce_llm.cache import RequestCache, request_key
from mapreduce_llm.engines.base import Engine, EngineBusy, EngineOutput, EngineRequest, StageName, stage_priority
from mapreduce_llm.engines.config import EngineConfig, OpenAIEngineConfig
from mapreduce_llm.errors import EngineError, RequestError
from mapreduce_llm.prompts import PromptRef, prompt_hash

log = structlog.get_logger(__name__)

MAX_POLL_S = 5.0
"""Longest interval between two progress checks of one request in flight."""


class RequestObserver(Protocol):
    """Told about every request the engine finished (job observers implement it)."""

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        """An engine request finished (``output`` None: it failed after its retries)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What a call gave back: the output, and whether it came from the cache instead of the engine."""

    output: EngineOutput
    from_cache: bool


class CircuitBreaker:
    """Counts failed engine attempts in a row; it opens for good — every call raises — once ``threshold`` of
    them came in a row and no attempt has succeeded for ``after_s`` seconds.

    The time condition keeps a short outage from ending a job: 64 requests in flight that fail together when a
    server restarts are 64 failures within a second, but the next success, after the retries' backoff, resets
    the count. A stopped engine has had no success for at least ``request_timeout_s`` by the time its requests
    fail, so it opens the breaker at once.

    Written here rather than taken from a library: it is a counter, a clock and a message, and the libraries that
    exist (pybreaker, circuitbreaker) are built for call-level decorators with half-open recovery, which a batch
    job that should stop and be rerun does not want.
    """

    def __init__(self, threshold: int, hint: str, after_s: float = 0.0) -> None:
        self.threshold = threshold
        self.after_s = after_s
        self.failures = 0
        """Failed attempts since the last success."""
        self._hint = hint
        self._open: str | None = None
        self._last_success = time.monotonic()

    @property
    def is_open(self) -> bool:
        """True once the breaker opened: nothing more is sent."""
        return self._open is not None

    def check(self) -> None:
        """Raise EngineError if the breaker is open."""
        if self._open is not None:
            raise EngineError(self._open)

    def succeeded(self) -> None:
        """An attempt succeeded: the run of failures is over."""
        self.failures = 0
        self._last_success = time.monotonic()

    def failed(self, error: BaseException) -> None:
        """An attempt failed; raises EngineError when this failure opens the breaker."""
        self.failures += 1
        quiet_s = time.monotonic() - self._last_success
        if self.failures >= self.threshold and quiet_s >= self.after_s and self._open is None:
            self._open = (
                f"the engine failed {self.failures} attempts in a row with no success for {quiet_s:.0f}s "
                f"(engine.circuit_breaker_failures={self.threshold}, circuit_breaker_after_s={self.after_s:g}); "
                f"last error: {error}. The job stops sending requests; finished documents are kept and a rerun "
                f"resumes. Check {self._hint}, or raise engine.circuit_breaker_failures if the engine is only "
                "briefly unavailable"
            )
            log.error("engine.circuit_open", failures=self.failures, quiet_s=round(quiet_s, 1), last_error=str(error))
        self.check()


class EngineClient:
    """Calls one engine for one job. See the module docstring for what a call does.

    ``cache``: where outputs are kept (None: no cache; assign one later with :attr:`cache`).
    ``observer``: told about every request the engine finished.
    ``job_id``: prefix of request ids (unique per job; retries of a request keep its id).
    ``model_identity``: what names the model in cache keys, so new weights under an old name miss the cache.
    """

    def __init__(
        self,
        engine: Engine,
        config: EngineConfig,
        *,
        job_id: str,
        cache: RequestCache | None = None,
        observer: RequestObserver | None = None,
        model_identity: str | None = None,
    ) -> None:
        self.engine = engine
        self.model_identity = model_identity
        """The model's identity in cache keys (its files' hash, :func:`~mapreduce_llm.fingerprints.model_fingerprint`);
        None: the engine's model name."""
        self.config = config
        self.job_id = job_id
        self.cache = cache
        self.observer = observer
        self.breaker = CircuitBreaker(
            config.circuit_breaker_failures, _engine_hint(config), config.circuit_breaker_after_s
        )
        self.requests_sent = 0
        """Attempts sent to the engine (retries included)."""
        self.requests_by_node: Counter[str] = Counter()
        """Requests answered by the engine (not the cache), by the Ray node that ran them (vLLM replicas)."""
        self.requests_from_cache = 0
        """Calls answered by the cache."""
        self._ids = itertools.count()
        self._prompt_hashes: dict[str, str] = {}

    def request(
        self,
        stage: StageName,
        prompt_token_ids: list[int],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        repetition_penalty: float,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        json_schema: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> EngineRequest:
        """A new request with this job's next request id, the engine's seed and the progress timeout;
        ``priority`` None: the stage's (:func:`~mapreduce_llm.engines.base.stage_priority`)."""
        return EngineRequest(
            request_id=f"{self.job_id}:{next(self._ids)}:{stage}",
            prompt_token_ids=prompt_token_ids,
            max_tokens=max_tokens,
            stage=stage,
            temperature=temperature,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            seed=self.config.seed,
            timeout_s=self.config.request_timeout_s,
            json_schema=json_schema,
            priority=stage_priority(stage) if priority is None else priority,
        )

    async def generate(self, request: EngineRequest, prompt: PromptRef) -> Reply:
        """The output of ``request`` (rendered from ``prompt``): from the cache, else from the engine.

        Raises RequestError when the request failed after its retries (its document fails), EngineError when
        the engine is gone or the circuit breaker opened (the job stops).
        """
        cache = self.cache
        key = (
            ""
            if cache is None
            else request_key(request, self._prompt_hash(prompt), self.model_identity or self.engine.info.model)
        )
        if cache is not None:
            cached = await asyncio.to_thread(cache.get, key)
            if cached is not None:
                self.requests_from_cache += 1
                return Reply(cached, from_cache=True)
        try:
            output = await self._with_retries(request)
        except RequestError:
            if self.observer is not None:
                self.observer.request_done(prompt, request, None)
            raise
        if cache is not None:
            await asyncio.to_thread(cache.put, key, output)
        if self.observer is not None:
            self.observer.request_done(prompt, request, output)
        return Reply(output, from_cache=False)

    def close(self) -> None:
        """Close the cache."""
        if self.cache is not None:
            self.cache.close()

    async def _with_retries(self, request: EngineRequest) -> EngineOutput:
        cfg = self.config
        retrying = AsyncRetrying(
            stop=stop_after_attempt(cfg.retries + 1),
            wait=wait_exponential(multiplier=cfg.retry_backoff_s, max=cfg.retry_backoff_max_s)
            + wait_random(0, cfg.retry_backoff_s),
            retry=retry_if_exception(lambda exc: isinstance(exc, RequestError) and exc.transient),
            before_sleep=lambda state: _log_retry(request, state),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(request)
        raise AssertionError("unreachable: tenacity returns or re-raises the last error")  # pragma: no cover

    async def _attempt(self, request: EngineRequest) -> EngineOutput:
        """One attempt, counted by the circuit breaker (rejections and 429s are neither faults nor successes)."""
        self.breaker.check()
        self.requests_sent += 1
        try:
            output = await self._watched(request)
        except EngineBusy:
            raise
        except RequestError as exc:
            if exc.transient:
                self.breaker.failed(exc)
            raise
        self.breaker.succeeded()
        if output.node:
            self.requests_by_node[output.node] += 1
        return output

    async def _watched(self, request: EngineRequest) -> EngineOutput:
        """Run the request; abandon it when its engine produces no token for ``timeout_s``.

        The deadline is moved forward whenever :meth:`Engine.progress` changes, so only a stopped engine
        reaches it; asyncio.timeout then cancels the call, and the engine aborts the request.
        """
        limit = request.timeout_s or self.config.request_timeout_s
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                watcher = asyncio.create_task(self._watch(request.request_id, limit, deadline))
                try:
                    return await self.engine.generate(request)
                finally:
                    watcher.cancel()
        except TimeoutError as exc:
            if not deadline.expired():  # not ours: the engine timed out on something of its own
                raise RequestError(f"request {request.request_id}: {exc or 'timed out'}", transient=True) from None
            raise RequestError(
                f"request {request.request_id}: the engine produced no token for {limit:g}s "
                "(engine.request_timeout_s); abandoned",
                transient=True,
            ) from None

    async def _watch(self, request_id: str, limit: float, deadline: asyncio.Timeout) -> None:
        """Move ``deadline`` to ``limit`` seconds from now whenever the engine's progress count changes."""
        loop = asyncio.get_running_loop()
        interval = min(limit / 4, MAX_POLL_S)
        last = await self._progress(request_id)
        while not deadline.expired():
            await asyncio.sleep(interval)
            now = await self._progress(request_id)
            if now is None:
                continue
            if last is not None and now != last and not deadline.expired():
                deadline.reschedule(loop.time() + limit)
            last = now

    async def _progress(self, request_id: str) -> int | None:
        """The engine's progress count, or None when it cannot be read (which counts as no progress)."""
        try:
            return await self.engine.progress(request_id)
        except Exception as exc:  # noqa: BLE001 - a failed read must not end the watch; it just shows nothing new
            log.debug("engine.progress_unreadable", request_id=request_id, error=str(exc))
            return None

    def _prompt_hash(self, prompt: PromptRef) -> str:
        if prompt.ref not in self._prompt_hashes:
            self._prompt_hashes[prompt.ref] = prompt_hash(prompt.file)
        return self._prompt_hashes[prompt.ref]


def _engine_hint(config: EngineConfig) -> str:
    """What to check when the engine keeps failing."""
    if isinstance(config, OpenAIEngineConfig):
        return f"that the server at {config.base_url} is up and healthy (its log, GET /health)"
    return "the engine actors (`ray status`, the actors' logs in the Ray dashboard or `ray logs`)"


def _log_retry(request: EngineRequest, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "engine.request_retry",
        request_id=request.request_id,
        attempt=state.attempt_number,
        retry_in_s=round(state.next_action.sleep, 2) if state.next_action is not None else None,
        error=str(error),
    )
