"""The engine protocol: what the pipeline needs from any inference backend.

A backend takes token-id requests and returns completions with token counts and logprobs, and says how much
work it has done (:meth:`Engine.progress`), so a caller can tell a slow engine from a stopped one. The pipeline
only talks to this protocol, through :class:`~mapreduce_llm.engines.client.EngineClient`; vLLM-in-Ray is the
production backend, test doubles live under tests/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mapreduce_llm.common import StageName as StageName  # re-exported: callers import it from here
from mapreduce_llm.errors import RequestError

MAP_PRIORITY = 1
"""Priority of map calls (and re-retrieval, which runs the map prompt)."""
REDUCE_PRIORITY = 0
"""Priority of collapse and reduce calls: ahead of maps."""


def stage_priority(stage: StageName) -> int:
    """The priority of a call of ``stage``: reduce-tree calls ahead of map calls."""
    return REDUCE_PRIORITY if stage in ("collapse", "reduce") else MAP_PRIORITY


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """One generation request: exact prompt token ids plus sampling."""

    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    stage: StageName
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = 0
    timeout_s: float | None = None
    """Abandon the request when the engine serving it has produced no token for this long (None: the client's
    ``engine.request_timeout_s``). Enforced by the client through :meth:`Engine.progress`, not by the engine."""
    json_schema: dict[str, Any] | None = None
    """Constrain the output to JSON matching this schema (vLLM structured outputs); None: free text."""
    priority: int = 0
    """Scheduling priority: lower runs earlier (vLLM's convention). The flows give reduce-tree calls
    :data:`REDUCE_PRIORITY` and map calls :data:`MAP_PRIORITY`, so a document that has its map outputs back
    finishes before new maps start. Honoured by the vLLM backend (its replicas' request slots, and vLLM's
    scheduler with ``engine.scheduling_policy: priority``); the OpenAI-compatible backend does not send it."""
    ignore_eos: bool = False
    """Generate exactly ``max_tokens`` tokens, past the end-of-sequence token (vLLM's ``ignore_eos``): for
    benchmarks that need every run to do the same work; jobs never set it."""


@dataclass(frozen=True, slots=True)
class EngineOutput:
    """A finished generation."""

    request_id: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    cumulative_logprob: float | None
    """Sum of the chosen tokens' logprobs; None if the backend cannot report it."""
    finish_reason: str | None
    seconds: float
    """Time from submission to the last token, as seen by the engine host."""
    cached_prompt_tokens: int | None = None
    """Prompt tokens served from the prefix cache, when the backend reports it."""
    tokens: tuple[str, ...] | None = None
    """The generated tokens' text, one entry per token, when the backend reports it."""
    token_logprobs: tuple[float, ...] | None = None
    """Logprob of each generated token, when reported (vLLM: over the tokens an output schema allows)."""
    node: str | None = None
    """The Ray node id of the vLLM replica that produced it (None for a server): where the work ran."""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mean_logprob(self) -> float | None:
        """Mean logprob per generated token: a confidence signal that does not depend on length."""
        if self.cumulative_logprob is None or self.completion_tokens == 0:
            return None
        return self.cumulative_logprob / self.completion_tokens


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What a started engine serves."""

    model: str
    max_model_len: int
    replicas: int


class Engine(Protocol):
    """An inference backend the pipeline can stream requests into."""

    @property
    def info(self) -> EngineInfo:
        """The served model and its context length."""
        ...

    async def generate(self, request: EngineRequest) -> EngineOutput:
        """Run one request to completion, however long that takes; one attempt, no retries.

        When the calling task is cancelled the request must be aborted in the engine too (the client cancels a
        request whose engine makes no progress). Raises RequestError for a request that fails alone —
        ``transient`` when a retry may succeed (engine error, dropped connection), not when the engine rejects
        it; :class:`EngineBusy` when the engine asks to be called later — and EngineError when the engine itself
        is gone.
        """
        ...

    async def progress(self, request_id: str) -> int:
        """A count of tokens processed by the engine instance serving ``request_id`` (any of its requests).

        Cheap enough to call every few seconds per request in flight. It rises while that engine works, whether
        on this request or on others batched or queued with it; a value that stays the same means nothing was
        produced. Only changes are meaningful (a restarted engine may count from 0 again).
        """
        ...


class EngineBusy(RequestError):
    """The engine refused a request for now (HTTP 429): retried with backoff, but not an engine fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)
