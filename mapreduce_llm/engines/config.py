"""The engine section of a job spec: one model per backend, chosen by ``backend``.

Settings every backend honours (the model, its context, timeouts, retry delays, the circuit breaker) are declared
once, on :class:`_EngineBase`; each backend adds its own. A field placed under the wrong backend is an error
naming it and the backend it belongs to, not a setting silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

from mapreduce_llm.common import StrictModel

Backend = Literal["vllm", "openai"]
BACKENDS: tuple[Backend, ...] = ("vllm", "openai")


class _EngineBase(StrictModel):
    """What every backend honours: the model, its context, and how requests are sent, timed out and retried."""

    model: str | None = None
    """``vllm``: model folder (must already be on disk); None: the embedded SmolLM2-135M-Instruct.
    ``openai``: the served model's name on the server; None: the only model it serves."""
    served_model_name: str | None = None
    """Name recorded in results. Default: the model folder's name (``vllm``), the server's model name (``openai``)."""
    max_model_len: Annotated[int, Field(ge=256)] = 2048
    """Context window in tokens: every request (prompt + reserved output) fits inside it. ``openai``: the
    server's own context length when it reports one, capped by this value when it is set."""
    seed: int = 0
    """Sampling seed, for reproducible outputs."""
    max_concurrent_requests: Annotated[int, Field(ge=1)] = 64
    """Requests in flight per engine — per vLLM replica, or to the OpenAI-compatible server; the engine batches
    them continuously."""
    request_timeout_s: Annotated[float, Field(gt=0)] = 900
    """A request is abandoned (cancelled in the engine) and retried when the engine serving it — its vLLM
    replica, or the OpenAI-compatible server's streams to this job — has produced no token for this long.
    It measures a stopped engine, not a slow request: time queued or batched behind other requests while the
    engine produces theirs does not count, however long the request takes. Checked every
    min(request_timeout_s / 4, 5 s)."""
    retry_backoff_s: Annotated[float, Field(ge=0)] = 1.0
    """Delay before the first retry of a request; it doubles at each further retry, plus a random jitter of up
    to this much, so that requests that failed together do not come back together."""
    retry_backoff_max_s: Annotated[float, Field(ge=0)] = 30
    """Longest delay between two attempts of one request (before jitter). So a request whose engine has stopped
    ends within (retries + 1) × request_timeout_s + retries × (this + retry_backoff_s), or sooner when the
    circuit breaker trips."""
    circuit_breaker_failures: Annotated[int, Field(ge=1)] = 8
    """Failed engine attempts in a row — engine errors, HTTP 5xx, lost connections, no token for
    ``request_timeout_s``; no request succeeded in between — after which the job stops sending and fails with
    an EngineError, keeping the documents already finished (a rerun resumes). Rejected requests and HTTP 429
    (the server asks to be called later) neither count nor reset the count."""
    circuit_breaker_after_s: Annotated[float, Field(ge=0)] = 60
    """The circuit breaker opens only when, besides ``circuit_breaker_failures`` failures in a row, no request
    has succeeded for this long: a server restart that fails the 64 requests in flight at once is survived
    (their retries succeed), a stopped engine is not."""

    @model_validator(mode="before")
    @classmethod
    def _no_field_of_another_backend(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        backend = data.get("backend", cls.model_fields["backend"].default)
        misplaced = [key for key in data if _FIELD_BACKEND.get(key, backend) != backend]
        if misplaced:
            owner = _FIELD_BACKEND[misplaced[0]]
            names = ", ".join(f"engine.{key}" for key in misplaced)
            raise PydanticCustomError(
                "wrong_backend",
                "{names} {verb} to backend {owner}; this job's engine.backend is {backend}: remove {it}, or set "
                "engine.backend: {owner}",
                {
                    "names": names,
                    "verb": "belongs" if len(misplaced) == 1 else "belong",
                    "owner": owner,
                    "backend": backend,
                    "it": "it" if len(misplaced) == 1 else "them",
                    "field": f"engine.{misplaced[0]}",
                },
            )
        return data


class VLLMEngineConfig(_EngineBase):
    """vLLM engines hosted in Ray actors (``backend: vllm``, the default)."""

    backend: Literal["vllm"] = "vllm"
    """Engine backend. ``vllm``: vLLM engines hosted in Ray actors. ``openai``: an OpenAI-compatible server
    (e.g. ``vllm serve``) at ``base_url``, sent token-id prompts on its completions endpoint."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weights dtype. ``auto``: decided where the engine runs — the model's own dtype on a GPU, bfloat16 on a
    CPU with native bf16 (avx512_bf16/AMX), float32 on other CPUs, where bf16 is emulated several times slower
    (see ``mapreduce_llm.engines.dtype``). The choice is logged as ``engine.dtype`` when the engine starts."""
    cpu_threads: Literal["auto", "all", "vllm"] = "auto"
    """CPU engines only: which cores run the model's threads. ``vllm``: vLLM's default, one core per rank kept for
    its frontend; ``all``: every core the engine may use; ``auto``: ``all`` on nodes with at most 2 cores (where
    the kept core is half the node; the example job took 0.85 of the time), ``vllm`` elsewhere. A
    ``VLLM_CPU_OMP_THREADS_BIND`` in the job's environment wins (see ``mapreduce_llm.engines.cpu_threads``)."""
    kv_cache_space_gib: Annotated[int, Field(ge=1)] = 2
    """CPU engines only: KV cache size in GiB (``VLLM_CPU_KVCACHE_SPACE``)."""
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    """GPU engines only: share of GPU memory vLLM may use."""
    replicas: Annotated[int, Field(ge=1)] = 1
    """Number of engine actors (each holds one full copy of the model)."""
    num_gpus_per_replica: Annotated[float, Field(ge=0)] = 0
    """GPUs per engine actor. 0 on CPU machines; ``tensor_parallel_size`` or more on GPU clusters."""
    num_cpus_per_replica: Annotated[float, Field(ge=0)] = 1
    """CPUs Ray reserves for each engine actor."""
    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1
    """GPUs one engine shards the model over."""
    resources_per_replica: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    """Custom Ray resources each engine actor needs besides CPUs and GPUs, e.g. ``{engine: 1}``: replicas are then
    placed only on nodes that declare them (``ray start --resources '{"engine": 4}'``, or ``rayStartParams``'
    ``resources`` of a KubeRay worker group), never on the head or on nodes kept for other work."""
    replica_lost_after_s: Annotated[float, Field(gt=0)] | None = None
    """A replica that has not answered for this long is given up: its node was lost and Ray could not place it
    again (no live node has the resources it needs), or it hangs. Its requests go to the other replicas; when
    none is left the job stops with an EngineError that says so (finished documents are kept, a rerun resumes).
    None: ``startup_timeout_s`` — a replacement node has that long to join and the replica to load its model."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes (instructions come first in every prompt)."""
    block_size: Annotated[int, Field(ge=1)] | None = 32
    """KV cache block size in tokens. The prefix cache reuses whole blocks only, so instructions shorter
    than one block are never reused: vLLM-CPU's own default (128) is longer than the shipped prompts'
    instructions; 32 is the smallest size its kernels are tuned for. None: vLLM's default."""
    startup_timeout_s: Annotated[float, Field(gt=0)] = 600
    """How long to wait for an engine to load its model before failing the job."""
    request_retries: Annotated[int, Field(ge=0, le=10)] = 2
    """Retries of one request that failed transiently (an engine error, or no token for ``request_timeout_s``);
    then the document gets an ``engine_request`` error record, while the others go on. Rejected requests are
    not retried."""
    max_restarts: Annotated[int, Field(ge=0)] = 3
    """Times Ray restarts a crashed engine actor; requests in flight on it are retried after the restart."""
    scheduling_policy: Literal["priority", "fcfs"] = "priority"
    """Order in which each replica takes requests. ``priority``: collapse and reduce calls ahead of map calls
    (a document whose maps are back finishes before new maps start), then first come, first served — in the
    replica's request slots (``max_concurrent_requests``) and in vLLM's scheduler. ``fcfs``: first come, first
    served only (vLLM's default)."""
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments forwarded to vLLM's ``AsyncEngineArgs`` as they are."""

    def priority_of(self, request_priority: int) -> int:
        """The priority a request goes in with: its own under ``scheduling_policy: priority``, else 0 (vLLM
        rejects any other under ``fcfs``)."""
        return request_priority if self.scheduling_policy == "priority" else 0

    @property
    def retries(self) -> int:
        """Retries of one request on this backend (``request_retries``)."""
        return self.request_retries

    @property
    def lost_after_s(self) -> float:
        """Seconds without an answer after which a replica is given up (``replica_lost_after_s``)."""
        return self.replica_lost_after_s or self.startup_timeout_s

    @model_validator(mode="after")
    def _gpus_cover_tensor_parallel(self) -> VLLMEngineConfig:
        if self.num_gpus_per_replica and self.num_gpus_per_replica < self.tensor_parallel_size:
            raise ValueError(
                f"num_gpus_per_replica must be at least tensor_parallel_size ({self.tensor_parallel_size}), "
                f"got {self.num_gpus_per_replica}; raise num_gpus_per_replica or lower tensor_parallel_size"
            )
        return self


class OpenAIEngineConfig(_EngineBase):
    """An OpenAI-compatible server already running (``backend: openai``), e.g. ``vllm serve``."""

    backend: Literal["openai"] = "openai"
    """Engine backend: an OpenAI-compatible server at ``base_url``, sent token-id prompts on its completions
    endpoint."""
    base_url: str | None = None
    """The server's API root, e.g. ``http://vllm.internal:8000/v1`` (required)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (keys never go into job specs)."""
    tokenizer: str | None = None
    """Local folder with the served model's tokenizer files, for exact token counts, or ``tiktoken``
    (cl100k_base) for OpenAI-family models. None: the embedded model's tokenizer."""
    http_retries: Annotated[int, Field(ge=0, le=20)] = 6
    """Retries of one request that failed transiently — answered 429 or 5xx, connection lost, or no token for
    ``request_timeout_s`` — and of the model listing at start; then the document gets an ``engine_request``
    error record. Delays as for ``retry_backoff_s``."""
    http_timeout_s: Annotated[float, Field(gt=0)] = 600
    """Seconds to wait for the model listing at start, and for the server to take a request (connect, send).
    Completions are streamed: a long answer is never cut by this, ``request_timeout_s`` abandons one that
    stops producing tokens."""

    @property
    def retries(self) -> int:
        """Retries of one request on this backend (``http_retries``)."""
        return self.http_retries

    @model_validator(mode="after")
    def _needs_base_url(self) -> OpenAIEngineConfig:
        if not self.base_url:
            raise ValueError(
                "backend openai needs base_url, got none; set engine.base_url to the server's API root, "
                "e.g. http://127.0.0.1:8000/v1"
            )
        return self


_FIELD_BACKEND: dict[str, Backend] = {
    name: cls.model_fields["backend"].default
    for cls in (VLLMEngineConfig, OpenAIEngineConfig)
    for name in cls.model_fields
    if name not in _EngineBase.model_fields and name != "backend"
}
"""The backend each backend-specific engine field belongs to."""


def _backend_of(value: Any) -> str:
    """The tag of an engine section: its ``backend``, vllm when absent."""
    if isinstance(value, dict):
        return str(value.get("backend", "vllm"))
    return str(getattr(value, "backend", "vllm"))


EngineConfig = Annotated[
    Annotated[VLLMEngineConfig, Tag("vllm")] | Annotated[OpenAIEngineConfig, Tag("openai")],
    Discriminator(
        _backend_of,
        custom_error_type="backend",
        custom_error_message="engine.backend must be vllm or openai",
    ),
]
"""The engine section: :class:`VLLMEngineConfig` or :class:`OpenAIEngineConfig`, chosen by ``backend``."""
