"""How a job starts: the Ray session, the model and its tokenizer, the engine pool, then the pipeline.

``run_job`` is what ``mapreduce-llm run`` calls; ``plan_job`` is the engine-free dry run behind
``mapreduce-llm plan``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from mapreduce_llm.config import EngineConfig, JobSpec
from mapreduce_llm.documents import read_documents
from mapreduce_llm.engines.base import Engine
from mapreduce_llm.errors import ConfigError, DocumentError
from mapreduce_llm.fingerprints import model_fingerprint
from mapreduce_llm.model_store import EMBEDDED_MODEL_NAME, ensure_embedded_model
from mapreduce_llm.output import OutputLock
from mapreduce_llm.pipeline import Job, JobObserver
from mapreduce_llm.planning import DocumentPlan, plan_document
from mapreduce_llm.prompts import PromptSelection, select_prompts
from mapreduce_llm.results import DocumentResult, JobSummary
from mapreduce_llm.tokenization import HFTokenizer, TiktokenTokenizer, Tokenizer

log = structlog.get_logger(__name__)


def model_folder(engine: EngineConfig) -> Path:
    """The served model's folder on this machine: the configured one, or the embedded model (converted once)."""
    if engine.model is None:
        return ensure_embedded_model()
    path = Path(engine.model)
    if not path.is_dir():
        raise ConfigError(
            f"engine.model {engine.model!r} is not a folder on this machine; give the path of a model folder "
            "(weights are never downloaded at run time) or leave it unset for the embedded model",
            parameter="engine.model",
            value=engine.model,
        )
    return path


def engine_tokenizer(engine: EngineConfig) -> Tokenizer:
    """The served model's tokenizer on this machine, for exact budgets.

    ``vllm``: the model folder's. ``openai``: ``engine.tokenizer`` — a local folder with the served model's
    tokenizer files, or ``tiktoken`` (cl100k_base) for OpenAI-family models — else the embedded model's.
    """
    if engine.backend != "openai":
        return HFTokenizer(model_folder(engine))
    if engine.tokenizer == "tiktoken":
        return TiktokenTokenizer()
    if engine.tokenizer is None:
        return HFTokenizer(ensure_embedded_model())
    if not Path(engine.tokenizer).is_dir():
        raise ConfigError(
            f"engine.tokenizer {engine.tokenizer!r} is not a folder on this machine; give a folder with the "
            "served model's tokenizer files (counts must match the server's), or `tiktoken` for OpenAI models",
            parameter="engine.tokenizer",
            value=engine.tokenizer,
        )
    return HFTokenizer(engine.tokenizer)


def served_name(engine: EngineConfig, folder: Path) -> str:
    """The model name recorded in results."""
    if engine.served_model_name:
        return engine.served_model_name
    return EMBEDDED_MODEL_NAME if engine.model is None else folder.name


@contextmanager
def ray_session() -> Iterator[None]:
    """Join the Ray cluster in ``RAY_ADDRESS``, or start a local one for the duration of the job."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = os.environ.get("RAY_ADDRESS")
    ray.init(address=address or None, include_dashboard=bool(address), log_to_driver=True)
    try:
        yield
    finally:
        ray.shutdown()


def run_job(
    spec: JobSpec,
    on_result: Callable[[DocumentResult], None] | None = None,
    engine: Engine | None = None,
    observer: JobObserver | None = None,
) -> JobSummary:
    """Run a job end to end on vLLM engines in Ray, or on an OpenAI-compatible server (``engine.backend:
    openai``); returns its summary (also written to summary.json).

    ``engine``: an already started engine serving the same model (e.g. shared by several jobs); by
    default the job starts its own on Ray and stops it at the end.
    """
    from mapreduce_llm.engines.vllm_ray import VLLMRayEngine

    prompts = select_prompts(spec.prompt, spec.prompts_dir)
    if not spec.input.exists():
        raise ConfigError(f"input {spec.input} does not exist; check the path", parameter="input")
    OutputLock(spec.output, spec.resolved_job_id).check()  # refused now, not after the engine's start
    if spec.engine.backend == "openai":
        return asyncio.run(_run_on_server(spec, prompts, engine_tokenizer(spec.engine), on_result, observer, engine))
    folder = model_folder(spec.engine)
    tokenizer = HFTokenizer(folder)
    identity = model_fingerprint(folder)
    if engine is not None:
        return asyncio.run(Job(spec, prompts, tokenizer, engine, on_result, observer, model_identity=identity).run())
    engine_model = "embedded" if spec.engine.model is None else str(folder)
    config = spec.engine.model_copy(update={"served_model_name": served_name(spec.engine, folder)})
    with ray_session(), VLLMRayEngine(config, model=engine_model) as started:
        return asyncio.run(Job(spec, prompts, tokenizer, started, on_result, observer, model_identity=identity).run())


async def _run_on_server(
    spec: JobSpec,
    prompts: PromptSelection,
    tokenizer: Tokenizer,
    on_result: Callable[[DocumentResult], None] | None,
    observer: JobObserver | None,
    engine: Engine | None,
) -> JobSummary:
    """A job against an OpenAI-compatible server: no Ray, one HTTP client for the job."""
    from mapreduce_llm.engines.openai_http import OpenAIEngine

    if engine is not None:
        return await Job(spec, prompts, tokenizer, engine, on_result, observer).run()
    async with OpenAIEngine(spec.engine) as server:
        return await Job(spec, prompts, tokenizer, server, on_result, observer, model_identity=server.identity).run()


def plan_job(spec: JobSpec, estimate: bool = False) -> tuple[PromptSelection, Iterator[DocumentPlan | DocumentError]]:
    """Plan every document of a job without starting an engine, lazily (one document in memory at a time).

    ``estimate``: count with tiktoken's cl100k_base instead of the served model's tokenizer — a quick
    estimate that needs no model folder; exact for OpenAI-family tokenizers only.
    """
    prompts = select_prompts(spec.prompt, spec.prompts_dir)
    tokenizer: Tokenizer = TiktokenTokenizer() if estimate else engine_tokenizer(spec.engine)
    reserve = spec.sampling.reserved_output_tokens

    def plans() -> Iterator[DocumentPlan | DocumentError]:
        for item in read_documents(spec.input, spec.limits.max_document_bytes, follow_symlinks=spec.follow_symlinks):
            if isinstance(item, DocumentError):
                yield item
                continue
            try:
                prompt = prompts.choose(item.id)
                yield plan_document(item, prompt, tokenizer, spec.engine.max_model_len, spec.chunking, reserve)
            except DocumentError as err:
                err.source = err.source or item.source
                yield err

    return prompts, plans()
