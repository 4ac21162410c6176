"""The library's entry points: ``run_job`` (what ``mapreduce-llm run`` calls), ``plan_job`` (``plan``, no engine)
and ``shared_engine`` (one engine for several jobs, e.g. ``prompts compare``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mapreduce_llm.batch_lines import JobRequests
from mapreduce_llm.cache import RequestCache
from mapreduce_llm.config import JobSpec, VLLMEngineConfig
from mapreduce_llm.documents import read_documents
from mapreduce_llm.embeddings import TextEmbedder, shared_embedder
from mapreduce_llm.engines import Engine, open_engine
from mapreduce_llm.engines.config import EngineConfig, OpenAIEngineConfig
from mapreduce_llm.engines.vllm_ray import model_folder
from mapreduce_llm.errors import ConfigError, DocumentError
from mapreduce_llm.fingerprints import model_fingerprint
from mapreduce_llm.job import Job
from mapreduce_llm.monitoring import monitored
from mapreduce_llm.observers import JobObserver, Observers
from mapreduce_llm.output import OutputLock
from mapreduce_llm.planning import DocumentPlan, plan_document
from mapreduce_llm.prompts import PromptSelection, select_prompts
from mapreduce_llm.results import DocumentResult, JobSummary
from mapreduce_llm.tokenization import TiktokenTokenizer, Tokenizer, tokenizer_for


def run_job(
    spec: JobSpec,
    on_result: Callable[[DocumentResult], None] | None = None,
    engine: Engine | None = None,
    observer: JobObserver | None = None,
    embedder: TextEmbedder | None = None,
) -> JobSummary:
    """Run a job end to end on its engine (:func:`~mapreduce_llm.engines.open_engine`: vLLM in Ray, or an
    OpenAI-compatible server), monitored as ``spec.monitoring`` says (:func:`~mapreduce_llm.monitoring.monitored`:
    /metrics, Pushgateway, profiles, drift); returns its summary (also written to summary.json).

    ``engine``: an already started engine serving the same model (e.g. shared by several jobs); by default the
    job starts its own and stops it at the end. ``observer`` hears the job beside the monitoring. ``embedder``:
    the one embedding model of the job's retrieval and profiles (default: the process's all-MiniLM-L6-v2).
    """
    prompts = select_prompts(spec.prompt, spec.prompts_dir)
    if not spec.input.exists():
        raise ConfigError(f"input {spec.input} does not exist; check the path", parameter="input")
    OutputLock(spec.output, spec.resolved_job_id).check()  # refused now, not after the engine's start
    if spec.cache.enabled:  # this driver opens it: one it cannot use is reported now, and the job runs without it
        with RequestCache(spec.cache.path or spec.output / "cache.sqlite") as cache:
            if cache.check() is not None:
                spec = spec.model_copy(update={"cache": spec.cache.model_copy(update={"enabled": False})})
    tokenizer = tokenizer_for(spec.engine)
    embedder = embedder or shared_embedder()

    async def run(watcher: JobObserver) -> JobSummary:
        if engine is not None:
            identity = (
                model_fingerprint(model_folder(spec.engine)) if isinstance(spec.engine, VLLMEngineConfig) else None
            )
            job = Job(spec, prompts, tokenizer, engine, on_result, watcher, embedder, model_identity=identity)
            return await job.run()
        async with open_engine(spec.engine) as started:
            job = Job(spec, prompts, tokenizer, started, on_result, watcher, embedder, model_identity=started.identity)
            return await job.run()

    with monitored(spec, embedder=embedder) as monitoring:
        summary = asyncio.run(run(Observers(monitoring.observer, observer)))
    return monitoring.with_drift(summary)


def plan_job(spec: JobSpec, estimate: bool = False) -> tuple[PromptSelection, Iterator[DocumentPlan | DocumentError]]:
    """Plan every document of a job without starting an engine, lazily (one document in memory at a time).

    ``estimate``: count with tiktoken's cl100k_base instead of the served model's tokenizer — a quick
    estimate that needs no model folder; exact for OpenAI-family tokenizers only.
    """
    prompts = select_prompts(spec.prompt, spec.prompts_dir)
    tokenizer: Tokenizer = TiktokenTokenizer() if estimate else tokenizer_for(spec.engine)
    reserve = spec.sampling.reserved_output_tokens

    def plans() -> Iterator[DocumentPlan | DocumentError]:
        requests = JobRequests(spec, prompts)
        max_bytes = spec.limits.max_document_bytes
        for item in read_documents(spec.input, max_bytes, follow_symlinks=spec.follow_symlinks, requests=requests):
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


@contextmanager
def shared_engine(config: EngineConfig) -> Iterator[Engine | None]:
    """One started engine for several :func:`run_job` calls in this process (``run_job(spec, engine=...)``).

    Each job runs its own event loop; vLLM's pool serves any loop, so it is started once here, on a loop of its
    own, and stopped when the block ends. An OpenAI-compatible server has nothing to start: None, and each job
    opens its own client to it.
    """
    if isinstance(config, OpenAIEngineConfig):
        yield None
        return
    loop = asyncio.new_event_loop()
    opened = open_engine(config)
    try:
        engine = loop.run_until_complete(opened.__aenter__())
        try:
            yield engine
        except BaseException:
            loop.run_until_complete(opened.__aexit__(*sys.exc_info()))
            raise
        loop.run_until_complete(opened.__aexit__(None, None, None))
    finally:
        loop.close()
