"""The job: read → resume → bounded concurrency → plan/select/flow per document → record → summary.

Every document runs as its own asyncio task: it is planned (in a worker thread: tokenizing releases the GIL),
retrieval selects its chunks, and its flow (:mod:`mapreduce_llm.flows`, picked by the prompt version's
``output:``) sends its map calls all at once and starts its reduce tree as soon as they are back. There is no
barrier across documents, so the engine always has map calls of some documents and reduce calls of others to
batch together. ``limits.max_documents_in_flight`` bounds how many documents are open at a time; up to
``limits.read_ahead`` more are read ahead, and the longest of those starts first, so a long document's reduce tree
runs beside the short ones' maps rather than alone at the end. Reduce-tree calls go to the engine ahead of map
calls (:func:`~mapreduce_llm.engines.base.stage_priority`).

A document whose earlier result in the output folder has the same input and settings fingerprints
(:mod:`mapreduce_llm.fingerprints`) is not run again: its result is reused. Errors that concern one document
become its error record (a bug in one document is its ``internal_error`` record); an :class:`EngineError` stops
the job, after writing what was finished.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import structlog

from mapreduce_llm.batch_lines import JobRequests
from mapreduce_llm.cache import RequestCache
from mapreduce_llm.config import JobSpec
from mapreduce_llm.documents import Document, read_documents
from mapreduce_llm.embeddings import TextEmbedder, shared_embedder
from mapreduce_llm.engines.base import Engine
from mapreduce_llm.engines.client import EngineClient
from mapreduce_llm.errors import BudgetError, DocumentError, EngineError
from mapreduce_llm.fingerprints import input_fingerprint
from mapreduce_llm.flows import DocumentRun, VersionSettings, flow_for
from mapreduce_llm.observers import JobObserver, NoObserver
from mapreduce_llm.output import ResultLog
from mapreduce_llm.planning import DocumentPlan, plan_document
from mapreduce_llm.prompts import PromptRef, PromptSelection
from mapreduce_llm.results import (
    DocumentResult,
    Fingerprints,
    JobSummary,
    JobTally,
    Timings,
    error_result,
    printable,
)
from mapreduce_llm.retrieval import ScoredPlan, chunk_scores, retrieve_chunks
from mapreduce_llm.tokenization import Tokenizer

log = structlog.get_logger(__name__)


class Job:
    """One run of a :class:`JobSpec` against an engine.

    ``prompts`` decides each document's prompt version (pinned, labelled or a sticky rollout); a plain
    :class:`PromptRef` runs that one version for every document. ``on_result`` hears every document's result,
    reused ones included; ``observer`` hears engine requests, computed documents and the job's end. ``embedder``
    embeds for retrieval (default: the process's shared all-MiniLM-L6-v2). ``client`` makes every engine call
    (default: an :class:`EngineClient` built from ``spec.engine`` that reports to ``observer``).
    ``model_identity``: the served model's identity for the settings fingerprint and cache keys (its files'
    hash, see :mod:`mapreduce_llm.fingerprints`); None: the engine's model name.
    """

    def __init__(
        self,
        spec: JobSpec,
        prompts: PromptSelection | PromptRef,
        tokenizer: Tokenizer,
        engine: Engine,
        on_result: Callable[[DocumentResult], None] | None = None,
        observer: JobObserver | None = None,
        embedder: TextEmbedder | None = None,
        client: EngineClient | None = None,
        model_identity: str | None = None,
    ) -> None:
        self.spec = spec
        self.prompts = prompts if isinstance(prompts, PromptSelection) else PromptSelection(prompts.ref, prompts)
        self.tokenizer = tokenizer
        self.engine = engine
        self.on_result = on_result or (lambda _r: None)
        self.observer: JobObserver = observer or NoObserver()
        self.embedder: TextEmbedder = embedder or shared_embedder()
        self.job_id = spec.resolved_job_id
        self.model_identity = model_identity
        self.client = client or EngineClient(
            engine, spec.engine, job_id=self.job_id, observer=self.observer, model_identity=model_identity
        )
        """Every engine call goes through it: cache, progress timeout, retries, circuit breaker."""
        self.log = log.bind(job_id=self.job_id, prompt=self.prompts.reference)
        self.peak_buffered = 0
        """Most finished results the last run held waiting for an earlier document (bounded by
        ``limits.max_buffered_results``)."""
        self.versions = VersionSettings(spec, engine, model_identity, self.log)
        """Sampling, calibration and settings fingerprint of each prompt version."""

    # ---- one document ---------------------------------------------------------------------------
    async def process(self, doc: Document) -> tuple[DocumentResult, DocumentPlan]:
        """Plan one document, select its chunks, run its flow and make its record; DocumentError is turned into
        an error record by the caller."""
        started = time.perf_counter()
        prompt = self.prompts.choose(doc.id)
        params = self.versions.params(prompt)
        dlog = self.log.bind(document_id=doc.id, prompt_version=prompt.version)
        plan = await asyncio.to_thread(
            plan_document,
            doc,
            prompt,
            self.tokenizer,
            self.engine.info.max_model_len,
            self.spec.chunking,
            params.reserve,
        )
        dlog.debug("document.planned", chunks=len(plan.chunks), chunk_budget=plan.chunk_budget)
        retrieval = None
        if self.spec.retrieval.similarity_for(prompt.file.output):
            scores = await asyncio.to_thread(chunk_scores, self.embedder, plan)
            plan = ScoredPlan.of(plan, scores)  # observers get the scores too: a drift profile reuses them
            retrieval = retrieve_chunks(plan, scores, self.spec.retrieval)
        run = DocumentRun(
            plan=plan,
            selected=list(range(len(plan.chunks))) if retrieval is None else retrieval.mapped,
            params=params,
            spec=self.spec,
            calibration=self.versions.calibration(prompt),
            model=self.engine.info.model,
            tokenizer=self.tokenizer,
            embedder=self.embedder,
            client=self.client,
            log=dlog,
        )
        planned = time.perf_counter()
        outcome = await flow_for(prompt.file)(run)
        finished = time.perf_counter()
        timings = Timings(
            plan_s=round(planned - started, 4),
            map_s=round(outcome.map_s, 4),
            reduce_s=round(finished - planned - outcome.map_s, 4),
            total_s=round(finished - started, 4),
        )
        fingerprints = Fingerprints(input=input_fingerprint(doc), settings=self.versions.fingerprint(prompt))
        return run.result(outcome, retrieval, timings, fingerprints), plan

    # ---- the whole job --------------------------------------------------------------------------
    async def run(self) -> JobSummary:
        """Process every document and write results.jsonl and summary.json; returns the summary.

        Memory stays flat as the corpus grows: documents are read lazily, at most
        ``limits.max_documents_in_flight`` are open, at most ``limits.max_buffered_results`` finished results
        wait for a slower earlier one (reading pauses meanwhile), results stream to disk and the summary is a
        running tally. A document's earlier result in the folder is reused only when its input and settings
        fingerprints both match. Anything that goes wrong with one document becomes its error record; only
        job-level faults (the engine, the output folder) fail the job.
        """
        started_at = time.time()
        sink = ResultLog(self.spec.output, self.job_id, batch_output=self.spec.output_format == "batch")
        opened_cache = self.spec.cache.enabled and self.client.cache is None
        if opened_cache:
            self.client.cache = RequestCache(self.spec.cache.path or self.spec.output / "cache.sqlite")
        this = _Pass(self, sink)
        self.log.info(
            "job.start", input=str(self.spec.input), model=self.engine.info.model, earlier_results=sink.previous.count
        )
        fatal: BaseException | None = None
        try:
            await this.feed()
        except (EngineError, BudgetError) as exc:
            fatal = exc
        except BaseException as exc:  # noqa: BLE001 - interrupted (Ctrl-C): keep what is done, re-raised below
            fatal = exc
        finally:
            await this.cancel()
        if opened_cache:
            self.client.close()
            self.client.cache = None
        summary = self._summary(this.tally, started_at, fatal)
        self.peak_buffered = sink.peak_buffered
        self.observer.job_done(summary)
        if fatal is None:
            sink.finish(summary)
        else:
            sink.abandon(summary)
            self.log.error("job.failed", error=str(fatal), finished=this.tally.documents)
            raise fatal
        self.log.info(
            "job.done",
            ok=summary.ok,
            errors=summary.errors,
            resumed=summary.resumed,
            recomputed=summary.recomputed,
            seconds=summary.seconds,
            peak_buffered=sink.peak_buffered,
        )
        return summary

    def internal_error(
        self, document_id: str, source: str | None, exc: BaseException, prompt: PromptRef | None = None
    ) -> DocumentResult:
        """The record of a document that hit a bug: logged with its traceback under an id the message names."""
        traceback_id = uuid.uuid4().hex[:12]
        self.log.error(
            "document.internal_error",
            document_id=printable(document_id),
            traceback_id=traceback_id,
            error=printable(f"{type(exc).__name__}: {exc}")[:500],
            exc_info=exc,
        )
        err = DocumentError(
            f"{source or document_id}: internal error ({type(exc).__name__}) while processing this document; "
            f"the job log has its traceback under traceback_id {traceback_id} — please report it with that "
            "log line. The other documents were not affected.",
            document_id=document_id,
            code="internal_error",
        )
        return error_result(err, prompt, self.engine.info.model, source)

    def _summary(self, tally: JobTally, started_at: float, fatal: BaseException | None) -> JobSummary:
        finished_at = time.time()
        return JobSummary(
            job_id=self.job_id,
            status="completed" if fatal is None else "failed",
            input=str(self.spec.input),
            output=str(self.spec.output),
            prompt=self.prompts.reference,
            documents_by_version=dict(tally.by_version),
            model=self.engine.info.model,
            max_model_len=self.engine.info.max_model_len,
            started_at=started_at,
            finished_at=finished_at,
            seconds=round(finished_at - started_at, 3),
            documents=tally.documents,
            ok=tally.ok,
            errors=tally.errors,
            resumed=tally.resumed,
            recomputed=dict(tally.recomputed),
            errors_by_code=dict(tally.errors_by_code),
            chunks=tally.chunks,
            requests=dict(tally.requests),
            prompt_tokens=tally.prompt_tokens,
            completion_tokens=tally.completion_tokens,
            cached_prompt_tokens=tally.cached_prompt_tokens,
            requests_from_cache=self.client.requests_from_cache,
            requests_sent=self.client.requests_sent,
            requests_by_node=dict(self.client.requests_by_node),
            max_levels=tally.max_levels,
            fatal_error=None if fatal is None else f"{type(fatal).__name__}: {fatal}",
        )


READ_GRACE_S = 0.05
"""How long a free place waits for the next input item before the longest document read so far starts: ample
for reading a file or a line, short beside a document's run."""


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A document read but not started yet: its input position, itself and its prompt version."""

    index: int
    doc: Document
    prompt: PromptRef


class _ReadAhead:
    """The job's input, read one item at a time in a worker thread (a slow input does not hold up the documents
    in flight), into a window of documents waiting for a place.

    ``admit`` turns each item read into a waiting document, or records it at once (unreadable, reused) and
    returns None. Reading goes on while the window holds at most ``read_ahead`` documents and ``has_room()``
    (the reorder buffer is not full), so with ``read_ahead`` 0 documents start in input order. When a place is
    free, :meth:`fill` reads on while the next item comes within a grace period (a file or a line does) and
    :meth:`pop_longest` takes the longest document: documents that arrive over time start as they arrive.
    """

    def __init__(
        self,
        items: Iterator[Document | DocumentError],
        admit: Callable[[int, Document | DocumentError], _Waiting | None],
        read_ahead: int,
        has_room: Callable[[], bool],
    ) -> None:
        self.items = items
        self.admit = admit
        self.read_ahead = read_ahead
        self.has_room = has_room
        self.window: list[_Waiting] = []
        self.pending: asyncio.Future[Document | DocumentError | None] | None = None
        """The next item, being read."""
        self.reading = True
        """False once the input is exhausted."""
        self.index = 0
        """The input position of the next item."""

    @property
    def finished(self) -> bool:
        """Every item read and every document of the window started."""
        return not self.reading and not self.window and self.pending is None

    def read_next(self) -> bool:
        """Start reading the next item when there is room for it; True while an item is being read."""
        if self.pending is None and self.reading and len(self.window) <= self.read_ahead and self.has_room():
            self.pending = asyncio.ensure_future(asyncio.to_thread(next, self.items, None))
        return self.pending is not None

    def take(self) -> None:
        """The item just read: admitted (into the window, or recorded), or the end of the input."""
        assert self.pending is not None and self.pending.done()
        item, self.pending = self.pending.result(), None
        if item is None:
            self.reading = False
            return
        waiting = self.admit(self.index, item)
        if waiting is not None:
            self.window.append(waiting)
        self.index += 1

    async def fill(self, grace_s: float) -> None:
        """Read on while each next item comes within ``grace_s`` seconds and there is room for it."""
        while self.read_next():
            assert self.pending is not None
            await asyncio.wait({self.pending}, timeout=grace_s)
            if not self.pending.done():
                return
            self.take()

    def pop_longest(self) -> _Waiting:
        """The longest document of the window (ties: the earliest in the input), out of it."""
        longest = max(self.window, key=lambda w: (len(w.doc.text), -w.index))
        self.window.remove(longest)
        return longest

    def cancel(self) -> None:
        """Stop waiting for the item being read (the worker thread finishes reading it)."""
        if self.pending is not None:
            self.pending.cancel()


class _Pass:
    """One pass of a job over its input: the result log, the running totals, the documents in flight (at most
    ``limits.max_documents_in_flight``) and the backpressure on the reorder buffer."""

    def __init__(self, job: Job, sink: ResultLog) -> None:
        self.job = job
        self.sink = sink
        self.tally = JobTally()
        self.slots = asyncio.Semaphore(job.spec.limits.max_documents_in_flight)
        self.room = asyncio.Event()
        self.max_buffered = job.spec.limits.max_buffered_results
        self.tasks: set[asyncio.Task[None]] = set()

    async def feed(self) -> None:
        """Read every input item; record the unreadable and the reusable ones, start the others; wait for all.

        Each time a place (``limits.max_documents_in_flight``) is free, the reader reads on while the input keeps
        up, then the longest document read so far starts there (see :class:`_ReadAhead`). Reading pauses while
        the reorder buffer is full.
        """
        job = self.job
        items = read_documents(
            job.spec.input,
            job.spec.limits.max_document_bytes,
            follow_symlinks=job.spec.follow_symlinks,
            requests=JobRequests(job.spec, job.prompts),
        )
        reader = _ReadAhead(
            iter(items),
            self.admit,
            job.spec.limits.read_ahead,
            has_room=lambda: self.sink.buffered < self.max_buffered,
        )
        place: asyncio.Task[Literal[True]] | None = None
        """A place being waited for, for the next document of the window."""
        try:
            while not reader.finished:
                reader.read_next()
                if reader.window and place is None:
                    place = asyncio.ensure_future(self.slots.acquire())
                waits = {f for f in (reader.pending, place) if f is not None}
                if not waits:  # nothing to start and no room to read: the reorder buffer is full
                    await self.wait_for_room()
                    continue
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if reader.pending is not None and reader.pending.done():
                    reader.take()
                if place is not None and place.done():
                    place = None
                    await reader.fill(READ_GRACE_S)
                    self.start(reader.pop_longest())
        finally:
            reader.cancel()
            if place is not None:
                place.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks)

    def start(self, waiting: _Waiting) -> None:
        """Start a document of the window in the place just taken."""
        done = [t for t in self.tasks if t.done()]
        for t in done:
            self.tasks.discard(t)
            t.result()  # re-raise a fatal error early
        self.tasks.add(asyncio.create_task(self.guarded(waiting.index, waiting.doc, waiting.prompt)))

    def admit(self, index: int, item: Document | DocumentError) -> _Waiting | None:
        """Input item ``index`` as read: recorded at once when unreadable or reusable, else a document to run."""
        job = self.job
        if isinstance(item, DocumentError):
            self.record(index, error_result(item, None, job.engine.info.model, item.source))
            return None
        try:
            chosen = job.prompts.choose(item.id)
            input_fp, settings_fp = input_fingerprint(item), job.versions.fingerprint(chosen)
            earlier = self.sink.previous.lookup(item.id, input_fp, settings_fp)
        except Exception as exc:  # noqa: BLE001 - as in guarded(): this document only
            self.record(index, job.internal_error(item.id, item.source, exc))
            return None
        if isinstance(earlier, DocumentResult):
            self.record(index, earlier, fresh=False)
            return None
        if earlier is not None:
            self.tally.recomputed[earlier] += 1
            job.log.info("document.recompute", document_id=item.id, reason=earlier)
        return _Waiting(index, item, chosen)

    async def cancel(self) -> None:
        """Stop the documents still in flight (after a fatal error or an interruption)."""
        for t in self.tasks:
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def guarded(self, index: int, doc: Document, prompt: PromptRef) -> None:
        """Process one document; whatever goes wrong with it becomes its record, except job-level faults."""
        job = self.job
        try:
            self.record(index, *await job.process(doc))
        except DocumentError as err:
            fingerprints = Fingerprints(input=input_fingerprint(doc), settings=job.versions.fingerprint(prompt))
            self.record(index, error_result(err, prompt, job.engine.info.model, doc.source, fingerprints))
        except (EngineError, BudgetError):
            raise  # job-level: stops the job
        except Exception as exc:  # noqa: BLE001 - one document's bug must not stop the others
            self.record(index, job.internal_error(doc.id, doc.source, exc, prompt))
        finally:
            self.slots.release()

    async def wait_for_room(self) -> None:
        """Backpressure: stop reading while the reorder buffer is full (an earlier document is slow)."""
        while self.sink.buffered >= self.max_buffered:
            self.room.clear()
            await self.room.wait()

    def record(
        self, index: int, result: DocumentResult, plan: DocumentPlan | None = None, *, fresh: bool = True
    ) -> None:
        """Write input item ``index``'s result (``fresh``: computed now, not reused), count it and report it."""
        job = self.job
        try:
            self.sink.add(index, result, fresh=fresh)
        except (ValueError, UnicodeError) as exc:  # a record that cannot be written as UTF-8 JSON
            result = job.internal_error(result.id, result.source, exc)
            self.sink.add(index, result, fresh=fresh)
        self.tally.add(result, resumed=not fresh)
        if self.sink.buffered < self.max_buffered:
            self.room.set()
        if fresh:
            job.observer.document_done(result, plan)
        job.on_result(result)
        job.log.info(
            "document.done",
            document_id=result.id,
            prompt_version=result.prompt.version if result.prompt else None,
            status=result.status,
            error_code=result.error.code if result.error else None,
            chunks=result.chunks,
            levels=result.levels,
            seconds=result.timings.total_s,
            resumed=not fresh,
        )
