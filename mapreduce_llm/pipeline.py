"""The job: read → plan → map → reduce → write, for all documents at once.

Every document runs as its own asyncio task: it is planned (in a worker thread: tokenizing releases the
GIL), its map requests are sent to the engine all at once, and as soon as they are back its reduce tree
starts — there is no barrier across documents, so the engine always has map calls of some documents and
reduce calls of others to batch together. ``limits.max_documents_in_flight`` bounds how many documents
are open at a time.

Two kinds of prompt versions run here. Free-text ones (``output: text``) map every chunk and reduce the
outputs (:meth:`Job._text`). Answer ones (``output: answer``) get a checked record per chunk, keep only those
whose evidence is in the chunk and whose relevance and confidence reach the version's calibrated thresholds,
reduce the survivors best first and re-retrieve when the answer is unsure or missing (:meth:`Job._answer`;
the checks are in :mod:`mapreduce_llm.answers`, retrieval in :mod:`mapreduce_llm.retrieval`).

Errors that concern one document become its error record; an :class:`EngineError` stops the job, after
writing what was finished.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import structlog

from mapreduce_llm.answers import (
    AnswerRecord,
    Candidate,
    Judged,
    agrees,
    answer_schema,
    candidate_line,
    classify,
    judge,
    parse_record,
    says_not_found,
    span_confidence,
    value_span,
)
from mapreduce_llm.cache import RequestCache
from mapreduce_llm.config import JobSpec
from mapreduce_llm.documents import Document, read_documents
from mapreduce_llm.embeddings import TextEmbedder, shared_embedder
from mapreduce_llm.engines.base import Engine, EngineOutput, EngineRequest, StageName
from mapreduce_llm.engines.client import EngineClient
from mapreduce_llm.errors import BudgetError, DocumentError, EngineError, RequestError
from mapreduce_llm.fingerprints import digest, input_fingerprint
from mapreduce_llm.output import ResultLog
from mapreduce_llm.planning import DocumentPlan, plan_document
from mapreduce_llm.prompts import ModelCalibration, PromptRef, PromptSelection, load_calibration, prompt_hash
from mapreduce_llm.reduce import Partial, ReduceStage, SourceSpan, reduce_tree
from mapreduce_llm.results import (
    DocumentResult,
    ErrorInfo,
    Fingerprints,
    JobSummary,
    MapAnswer,
    PromptInfo,
    Provenance,
    ReretrievalInfo,
    ReretrievalRound,
    RetrievalInfo,
    Timings,
    Usage,
)
from mapreduce_llm.retrieval import (
    best_passages,
    chunk_at,
    chunk_similarities,
    passages_of,
    query_of,
    select_chunks,
    similarities,
)
from mapreduce_llm.tokenization import Tokenizer

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Accounting:
    requests: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    from_cache: int = 0

    def add(self, stage: str, out: EngineOutput, *, from_cache: bool = False) -> None:
        self.requests[stage] += 1
        self.from_cache += from_cache
        self.prompt_tokens += out.prompt_tokens
        self.completion_tokens += out.completion_tokens
        self.cached_prompt_tokens += out.cached_prompt_tokens or 0

    def usage(self) -> Usage:
        return Usage(
            requests=dict(self.requests),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens,
            requests_from_cache=self.from_cache,
        )


def error_result(
    err: DocumentError,
    prompt: PromptRef | None,
    model: str | None,
    source: str | None,
    fingerprints: Fingerprints | None = None,
) -> DocumentResult:
    """The record of a document that failed (ids, sources and messages made writable as UTF-8 whatever they hold)."""
    return DocumentResult(
        id=printable(err.document_id),
        status="error",
        error=ErrorInfo(code=err.code, message=printable(str(err))),
        source=None if source is None else printable(source),
        prompt=None if prompt is None else PromptInfo(name=prompt.task, version=prompt.version),
        model=model,
        fingerprints=fingerprints,
    )


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) shown as backslash escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass(frozen=True, slots=True)
class _Params:
    """Sampling of one prompt version, with the job spec's overrides applied."""

    reserve: int
    temperature: float
    top_p: float
    repetition_penalty: float


@dataclass(slots=True)
class _Answered:
    """What the map and reduce stages made of one document."""

    output: str
    levels: int
    not_found: bool | None
    mean_logprob: float | None
    provenance: list[Provenance]
    map_s: float
    confidence: float | None = None
    answers: list[MapAnswer] = field(default_factory=list)
    parse_failures: int = 0
    reretrieval: ReretrievalInfo | None = None


class JobObserver(Protocol):
    """Receives what a job does, as it happens (metrics exporters implement this)."""

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        """An engine request finished (``output`` None: it failed)."""

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        """A document finished, successfully or not (``plan`` None when it failed before planning)."""

    def job_done(self, summary: JobSummary) -> None:
        """The job finished or failed."""


class Observers:
    """Several observers as one (e.g. metrics and a progress display)."""

    def __init__(self, *observers: JobObserver | None) -> None:
        self.observers = [o for o in observers if o is not None]

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        for o in self.observers:
            o.request_done(prompt, request, output)

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        for o in self.observers:
            o.document_done(result, plan)

    def job_done(self, summary: JobSummary) -> None:
        for o in self.observers:
            o.job_done(summary)


class _NoObserver:
    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        pass

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        pass

    def job_done(self, summary: JobSummary) -> None:
        pass


class Job:
    """One run of a :class:`JobSpec` against an engine.

    ``prompts`` decides each document's prompt version (pinned, labelled or a sticky rollout); a plain
    :class:`PromptRef` runs that one version for every document. ``client`` makes every engine call (default:
    an :class:`EngineClient` built from ``spec.engine`` that reports to ``observer``).
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
        self.observer: JobObserver = observer or _NoObserver()
        self.job_id = spec.resolved_job_id
        self.client = client or EngineClient(
            engine, spec.engine, job_id=self.job_id, observer=self.observer, model_identity=model_identity
        )
        """Every engine call goes through it: cache, progress timeout, retries, circuit breaker."""
        self._calibrations: dict[str, ModelCalibration | None] = {}
        self._embedder = embedder
        self.log = log.bind(job_id=self.job_id, prompt=self.prompts.reference)
        self.model_identity = model_identity
        """The served model's identity for the settings fingerprint (its files' hash, see
        :mod:`mapreduce_llm.fingerprints`); None: the engine's model name."""
        self._settings_fingerprints: dict[str, str] = {}
        self.peak_buffered = 0
        """Most finished results the last run held waiting for an earlier document (bounded by
        ``limits.max_buffered_results``)."""

    @property
    def embedder(self) -> TextEmbedder:
        """The embedding model for retrieval (the process's shared all-MiniLM-L6-v2 unless one was given)."""
        if self._embedder is None:
            self._embedder = shared_embedder()
        return self._embedder

    def params(self, prompt: PromptRef) -> _Params:
        """Sampling for a prompt version: the prompt file's defaults, overridden by the job spec."""
        pf, override = prompt.file, self.spec.sampling
        return _Params(
            reserve=override.reserved_output_tokens or pf.reserved_output_tokens,
            temperature=pf.sampling.temperature if override.temperature is None else override.temperature,
            top_p=override.top_p or pf.sampling.top_p,
            repetition_penalty=override.repetition_penalty or pf.sampling.repetition_penalty,
        )

    # ---- one engine call ------------------------------------------------------------------------
    async def _call(
        self,
        plan: DocumentPlan,
        prompt: PromptRef,
        stage: StageName,
        slot_ids: Sequence[int],
        acct: _Accounting,
        json_schema: dict[str, Any] | None = None,
    ) -> EngineOutput:
        template = {
            "map": plan.map_template,
            "collapse": plan.collapse_template,
            "reduce": plan.reduce_template,
            "reretrieve": plan.map_template,  # the map prompt, over the re-retrieved passages
        }[stage]
        ids = template.request_ids(list(slot_ids))
        params = self.params(prompt)
        if len(ids) + params.reserve > plan.max_model_len:
            # Planning makes this impossible; if it ever happens it is a bug, not bad input.
            raise BudgetError(
                f"internal error: a {stage} request of {len(ids)} tokens + {params.reserve} reserved exceeds "
                f"max_model_len {plan.max_model_len} for document {plan.document.id!r}; please report it"
            )
        request = self.client.request(
            stage,
            ids,
            max_tokens=params.reserve,
            temperature=params.temperature,
            top_p=params.top_p,
            repetition_penalty=params.repetition_penalty,
            json_schema=json_schema,
        )
        try:
            reply = await self.client.generate(request, prompt)
        except RequestError as exc:
            raise DocumentError(
                f"{plan.document.source}: a {stage} request failed: {exc}",
                document_id=plan.document.id,
                code="engine_request",
            ) from None
        acct.add(stage, reply.output, from_cache=reply.from_cache)
        return reply.output

    @property
    def cache(self) -> RequestCache | None:
        """The client's output cache (set by :meth:`run` from ``spec.cache`` when none was given)."""
        return self.client.cache

    @cache.setter
    def cache(self, cache: RequestCache | None) -> None:
        self.client.cache = cache

    @property
    def requests_sent(self) -> int:
        """Engine attempts so far (retries included)."""
        return self.client.requests_sent

    @property
    def requests_from_cache(self) -> int:
        """Engine calls answered by the output cache so far."""
        return self.client.requests_from_cache

    def _partial(self, out: EngineOutput, sources: tuple[SourceSpan, ...]) -> Partial:
        text = out.text.strip()
        return Partial(text, tuple(self.tokenizer.encode_data(text)), sources, out.mean_logprob)

    @staticmethod
    def _is_not_found(prompt: PromptRef, partial: Partial) -> bool:
        pf = prompt.file
        if pf.not_found is None:
            return False
        if partial.text.upper().startswith(pf.not_found.upper()):
            return True
        threshold = pf.not_found_below_mean_logprob
        return threshold is not None and partial.mean_logprob is not None and partial.mean_logprob < threshold

    # ---- one document ---------------------------------------------------------------------------
    async def process(self, doc: Document) -> tuple[DocumentResult, DocumentPlan]:
        """Plan, map and reduce one document; DocumentError is turned into an error record by the caller."""
        started = time.perf_counter()
        acct = _Accounting()
        prompt = self.prompts.choose(doc.id)
        dlog = self.log.bind(document_id=doc.id, prompt_version=prompt.version)
        plan = await asyncio.to_thread(
            plan_document,
            doc,
            prompt,
            self.tokenizer,
            self.engine.info.max_model_len,
            self.spec.chunking,
            self.params(prompt).reserve,
        )
        dlog.debug("document.planned", chunks=len(plan.chunks), chunk_budget=plan.chunk_budget)
        retrieval = None
        selected = list(range(len(plan.chunks)))
        if self.spec.retrieval.similarity_for(prompt.file.output):
            scores = await asyncio.to_thread(chunk_similarities, self.embedder, plan)
            selected = select_chunks(scores, self.spec.retrieval)
            retrieval = RetrievalInfo(
                query=query_of(plan)[1], mode=self.spec.retrieval.mode, similarities=scores, mapped=selected
            )
        planned = time.perf_counter()
        if prompt.file.output == "answer":
            answered = await self._answer(plan, prompt, selected, acct, dlog)
        else:
            answered = await self._text(plan, prompt, selected, acct, dlog)
        finished = time.perf_counter()
        result = DocumentResult(
            id=doc.id,
            status="ok",
            output=answered.output,
            source=doc.source,
            prompt=PromptInfo(name=prompt.task, version=prompt.version),
            model=self.engine.info.model,
            question=doc.question,
            chunks=len(plan.chunks),
            levels=answered.levels,
            not_found=answered.not_found,
            mean_logprob=answered.mean_logprob,
            confidence=answered.confidence,
            provenance=answered.provenance,
            answers=answered.answers,
            parse_failures=answered.parse_failures,
            retrieval=retrieval,
            reretrieval=answered.reretrieval,
            usage=acct.usage(),
            timings=Timings(
                plan_s=round(planned - started, 4),
                map_s=round(answered.map_s, 4),
                reduce_s=round(finished - planned - answered.map_s, 4),
                total_s=round(finished - started, 4),
            ),
            metadata=doc.metadata,
            fingerprints=Fingerprints(input=input_fingerprint(doc), settings=self.settings_fingerprint(prompt)),
        )
        return result, plan

    async def _text(
        self, plan: DocumentPlan, prompt: PromptRef, selected: list[int], acct: _Accounting, dlog: Any
    ) -> _Answered:
        """Free-text prompts: map the selected chunks, drop "not found" outputs, reduce the rest."""
        doc = plan.document
        started = time.perf_counter()

        async def map_chunk(index: int) -> Partial:
            chunk = plan.chunks[index]
            out = await self._call(plan, prompt, "map", chunk.token_ids, acct)
            return self._partial(out, (SourceSpan(index, chunk.start, chunk.end),))

        partials = list(await asyncio.gather(*(map_chunk(i) for i in selected)))
        map_s = time.perf_counter() - started
        kept = [p for p in partials if p.text and not self._is_not_found(prompt, p)]

        async def reduce_call(stage: ReduceStage, slot: list[int], group: Sequence[Partial], level: int) -> Partial:
            out = await self._call(plan, prompt, stage, slot, acct)
            sources = tuple(s for p in group for s in p.sources)
            dlog.debug("document.reduce_call", stage=stage, level=level, inputs=len(group))
            return self._partial(out, sources)

        not_found = None
        if prompt.file.not_found is not None:
            not_found = not kept
        if not kept:
            if prompt.file.not_found is None:
                why = (
                    f"no chunk was selected by retrieval (mode {self.spec.retrieval.mode}, min_similarity "
                    f"{self.spec.retrieval.min_similarity}); lower retrieval.min_similarity or use mode all"
                    if not selected
                    else f"the model returned empty outputs for all {len(partials)} chunks; check the prompt or "
                    "raise reserved_output_tokens"
                )
                raise DocumentError(f"{doc.source}: {why}", document_id=doc.id, code="empty_output")
            final, levels = Partial(prompt.file.not_found, (), ()), 0
        elif len(selected) < len(plan.chunks) and len(kept) == 1:
            final, levels = kept[0], 0
        else:
            final, levels = await reduce_tree(kept, plan, self.tokenizer, reduce_call, self.spec.reduce.max_levels)
        spans = sorted({(s.chunk, s.start, s.end) for s in final.sources})
        return _Answered(
            output=final.text,
            levels=levels,
            not_found=not_found,
            mean_logprob=final.mean_logprob,
            provenance=[Provenance(chunk_id=f"{doc.id}#{c}", start=s, end=e) for c, s, e in spans],
            map_s=map_s,
        )

    async def _answer(
        self, plan: DocumentPlan, prompt: PromptRef, selected: list[int], acct: _Accounting, dlog: Any
    ) -> _Answered:
        """``output: answer`` prompts: structured map records, checked, filtered and ordered by confidence,
        reduced to one answer with its evidence, and re-retrieved when the answer is unsure."""
        doc, pf = plan.document, prompt.file
        assert pf.not_found is not None  # the prompt file validator requires it
        schema = answer_schema(pf.answer.max_quote_chars, pf.answer.max_answer_chars)
        calibration = self._calibration(prompt)
        floor = calibration.map_min_confidence if calibration is not None else None
        started = time.perf_counter()

        async def map_chunk(index: int) -> tuple[int, Judged]:
            chunk = plan.chunks[index]
            out = await self._call(plan, prompt, "map", chunk.token_ids, acct, schema)
            return index, judge(out, doc.text[chunk.start : chunk.end], pf.not_found or "", pf.answer.min_quote_match)

        judged = await asyncio.gather(*(map_chunk(i) for i in selected))
        map_s = time.perf_counter() - started
        relevance = await self._evidence_similarity(plan, [j for _, j in judged])
        min_similarity = calibration.min_evidence_similarity if calibration is not None else None
        kept: list[Candidate] = []
        answers: list[MapAnswer] = []
        for (index, j), similarity in zip(judged, relevance, strict=True):
            chunk = plan.chunks[index]
            status, detail = classify(j, floor, similarity, min_similarity)
            answers.append(
                MapAnswer(
                    chunk_id=chunk.id,
                    status=status,
                    answer=j.record.answer if j.record else None,
                    confidence=None if j.confidence is None else round(j.confidence, 4),
                    evidence_similarity=similarity,
                    detail=detail,
                )
            )
            if status == "kept" and j.record is not None and j.quote is not None:
                start, end = chunk.start + j.quote.start, chunk.start + j.quote.end
                quoted = Provenance(chunk_id=chunk.id, start=start, end=end, quote=doc.text[start:end])
                kept.append(Candidate(index, j.record.answer, quoted, j.confidence))
        answers.sort(key=lambda a: -math.inf if a.confidence is None else -a.confidence)
        kept.sort(key=lambda c: -math.inf if c.confidence is None else -c.confidence)
        parse_failures = sum(a.status == "parse_failure" for a in answers)
        dlog.debug("document.answers", kept=len(kept), mapped=len(selected), parse_failures=parse_failures)

        levels = 0
        if not kept:
            answer, confidence, evidence = pf.not_found, None, []
        elif len(kept) == 1:
            answer, confidence, evidence = kept[0].answer, kept[0].confidence, [kept[0].evidence]
        else:
            answer, confidence, evidence, levels, failed = await self._reduce_answers(plan, prompt, kept, acct, schema)
            parse_failures += failed
        reretrieval = None
        if calibration is None:
            reason = f"{prompt.ref} has no calibration for model {self.engine.info.model!r}"
            reretrieval = ReretrievalInfo(triggered=False, reason=reason)
        elif not (self.spec.retrieval.reretrieve and self.spec.retrieval.similarity_for(pf.output)):
            reretrieval = ReretrievalInfo(triggered=False, reason="off (retrieval.reretrieve/similarity)")
        elif not kept and not self.spec.retrieval.reretrieve_not_found:
            reretrieval = ReretrievalInfo(triggered=False, reason="no chunk gave an answer (reretrieve_not_found off)")
        elif kept and confidence is not None and confidence >= calibration.reduce_min_confidence:
            reason = f"confidence {confidence:.3f} >= calibrated {calibration.reduce_min_confidence:.3f}"
            reretrieval = ReretrievalInfo(triggered=False, reason=reason)
        else:
            shown = "none" if confidence is None else f"{confidence:.3f}"
            reason = (
                f"confidence {shown} < calibrated {calibration.reduce_min_confidence:.3f}"
                if kept
                else "no chunk gave an answer that passed the checks"
            )
            reretrieval, answer, confidence, evidence = await self._reretrieve(
                plan, prompt, acct, schema, calibration, reason, (answer if kept else ""), confidence, evidence
            )
            answer = answer or pf.not_found
        return _Answered(
            output=answer,
            levels=levels,
            not_found=not evidence,
            mean_logprob=confidence,
            confidence=None if confidence is None else round(confidence, 4),
            provenance=evidence,
            answers=answers,
            parse_failures=parse_failures,
            reretrieval=reretrieval,
            map_s=map_s,
        )

    async def _reduce_answers(
        self,
        plan: DocumentPlan,
        prompt: PromptRef,
        kept: list[Candidate],
        acct: _Accounting,
        schema: dict[str, Any],
    ) -> tuple[str, float | None, list[Provenance], int, int]:
        """Reduce two or more kept answers (best first); returns answer, confidence, evidence, levels, parse
        failures. The reducer's answer must agree with at least one candidate; when it does not (an invented
        or unreadable answer), the most confident candidate is the answer."""
        partials = [
            Partial(
                line := candidate_line(c.answer, c.evidence.quote or ""),
                tuple(self.tokenizer.encode_data(line)),
                (SourceSpan(c.chunk, c.evidence.start, c.evidence.end),),
                c.confidence,
            )
            for c in kept
        ]
        final_record: list[AnswerRecord | str] = []
        failures = 0

        async def reduce_call(stage: ReduceStage, slot: list[int], group: Sequence[Partial], level: int) -> Partial:
            nonlocal failures
            out = await self._call(plan, prompt, stage, slot, acct, schema)
            record = parse_record(out.text)
            failures += isinstance(record, str)
            span = value_span(out.text, "answer")
            confidence = span_confidence(out, *span) if span else out.mean_logprob
            if stage == "reduce":
                final_record.append(record)
            # A collapse output that cannot be read is passed on as its best input, not as raw text.
            line = candidate_line(record.answer, record.quote) if isinstance(record, AnswerRecord) else group[0].text
            sources = tuple(s for p in group for s in p.sources)
            return Partial(line, tuple(self.tokenizer.encode_data(line)), sources, confidence)

        final, levels = await reduce_tree(partials, plan, self.tokenizer, reduce_call, self.spec.reduce.max_levels)
        record = final_record[0] if final_record else None
        pf = prompt.file
        if isinstance(record, AnswerRecord) and not says_not_found(record.answer, pf.not_found or ""):
            backing = [c for c in kept if agrees(c, record)]
            if backing:
                return record.answer, final.mean_logprob, [c.evidence for c in backing], levels, failures
        self.log.info(  # no answer text in logs: it may quote the document
            "document.reduce_unsupported",
            document_id=plan.document.id,
            readable=isinstance(record, AnswerRecord),
            candidates=len(kept),
        )
        best = kept[0]
        return best.answer, best.confidence, [best.evidence], levels, failures

    async def _reretrieve(
        self,
        plan: DocumentPlan,
        prompt: PromptRef,
        acct: _Accounting,
        schema: dict[str, Any],
        calibration: ModelCalibration,
        reason: str,
        answer: str,
        confidence: float | None,
        evidence: list[Provenance],
    ) -> tuple[ReretrievalInfo, str, float | None, list[Provenance]]:
        """FLARE: ask again from the passages most similar to the question plus the tentative answer (the
        question alone when there is none). A new answer must pass the same checks and calibrated thresholds
        as a map answer and be more confident than the one it replaces."""
        cfg, doc, pf = self.spec.retrieval, plan.document, prompt.file
        threshold = calibration.reduce_min_confidence
        info = ReretrievalInfo(triggered=True, reason=reason)
        passages = await asyncio.to_thread(passages_of, plan, self.tokenizer, cfg.passage_tokens)
        vectors = await asyncio.to_thread(self.embedder.embed, [doc.text[p.start : p.end] for p in passages])
        separator = "\n\n"
        separator_ids = self.tokenizer.encode_data(separator)
        asked: set[tuple[int, ...]] = set()
        for _ in range(cfg.max_rounds):
            query = f"{query_of(plan)[0]} {answer}".strip()
            scores = [float(s) for s in vectors @ (await asyncio.to_thread(self.embedder.embed, [query]))[0]]
            found = best_passages(scores, passages, doc.text, cfg.passages, plan.chunk_budget, separator, separator_ids)
            if found.token_ids in asked:
                break  # the same passages as an earlier round: the model would answer the same
            asked.add(found.token_ids)
            out = await self._call(plan, prompt, "reretrieve", found.token_ids, acct, schema)
            j = judge(out, found.text, pf.not_found or "", pf.answer.min_quote_match)
            similarity = (await self._evidence_similarity(plan, [j]))[0]
            floor = calibration.reretrieve_min_confidence
            min_similarity = calibration.reretrieve_min_similarity
            if floor is None:
                floor = calibration.map_min_confidence
            if min_similarity is None:
                min_similarity = calibration.min_evidence_similarity
            status, detail = classify(j, floor, similarity, min_similarity)
            located = found.to_document(j.quote.start, j.quote.end) if j.quote is not None else None
            better = j.confidence is not None and (confidence is None or j.confidence > confidence)
            accepted = status == "kept" and located is not None and better
            if status == "kept" and not better:
                detail = "no more confident than the answer it would replace"
            elif status == "kept" and located is None:
                detail = "its quote spans two passages"
            info.rounds.append(
                ReretrievalRound(
                    query=query,
                    passages=[
                        Provenance(chunk_id=chunk_at(plan, p.start), start=p.start, end=p.end) for p in found.passages
                    ],
                    answer=j.record.answer if j.record else None,
                    confidence=None if j.confidence is None else round(j.confidence, 4),
                    evidence_similarity=similarity,
                    accepted=accepted,
                    detail=detail,
                )
            )
            if not accepted or j.record is None or located is None:
                break
            _, start, end = located
            answer, confidence = j.record.answer, j.confidence
            evidence = [Provenance(chunk_id=chunk_at(plan, start), start=start, end=end, quote=doc.text[start:end])]
            if confidence is not None and confidence >= threshold:
                break
        return info, answer, confidence, evidence

    async def _evidence_similarity(self, plan: DocumentPlan, judged: Sequence[Judged]) -> list[float | None]:
        """Similarity of each supported answer's quote to the question (None where not checked)."""
        quotes = {i: j.evidence for i, j in enumerate(judged) if j.supported and j.evidence is not None}
        if not quotes or not self.spec.retrieval.similarity_for(plan.prompt.file.output):
            return [None] * len(judged)
        scores = await asyncio.to_thread(similarities, self.embedder, query_of(plan)[0], list(quotes.values()))
        by_index = dict(zip(quotes, scores, strict=True))
        return [by_index.get(i) for i in range(len(judged))]

    def _calibration(self, prompt: PromptRef) -> ModelCalibration | None:
        """The thresholds of ``prompt`` for the served model (read once per job)."""
        if prompt.ref not in self._calibrations:
            found = load_calibration(prompt, self.engine.info.model)
            if found is None:
                self.log.warning(
                    "prompt.uncalibrated",
                    prompt=prompt.ref,
                    model=self.engine.info.model,
                    hint="answers are not filtered by confidence and re-retrieval is off; run benchmarks/calibrate.py",
                )
            self._calibrations[prompt.ref] = found
        return self._calibrations[prompt.ref]

    # ---- the whole job --------------------------------------------------------------------------
    def settings_fingerprint(self, prompt: PromptRef) -> str:
        """Hash of every setting that shapes a result under ``prompt`` (see :mod:`mapreduce_llm.fingerprints`)."""
        if prompt.ref not in self._settings_fingerprints:
            calibration = self._calibration(prompt)
            spec = self.spec
            self._settings_fingerprints[prompt.ref] = digest(
                {
                    "prompt": prompt_hash(prompt.file),
                    "calibration": None if calibration is None else calibration.model_dump(mode="json"),
                    "sampling": asdict(self.params(prompt)),
                    "seed": spec.engine.seed,
                    "max_model_len": self.engine.info.max_model_len,
                    "chunking": spec.chunking.model_dump(mode="json"),
                    "retrieval": spec.retrieval.model_dump(mode="json"),
                    "reduce": spec.reduce.model_dump(mode="json"),
                    "model": self.model_identity or self.engine.info.model,
                }
            )
        return self._settings_fingerprints[prompt.ref]

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
        model = self.engine.info.model
        sink = ResultLog(self.spec.output, self.job_id)
        opened_cache = self.spec.cache.enabled and self.cache is None
        if opened_cache:
            self.cache = RequestCache(self.spec.cache.path or self.spec.output / "cache.sqlite")
        tally = _Tally()
        slots = asyncio.Semaphore(self.spec.limits.max_documents_in_flight)
        room = asyncio.Event()
        max_buffered = self.spec.limits.max_buffered_results
        tasks: set[asyncio.Task[None]] = set()
        self.log.info("job.start", input=str(self.spec.input), model=model, earlier_results=sink.previous.count)

        def record(index: int, result: DocumentResult, plan: DocumentPlan | None = None, *, fresh: bool = True) -> None:
            try:
                sink.add(index, result, fresh=fresh)
            except (ValueError, UnicodeError) as exc:  # a record that cannot be written as UTF-8 JSON
                result = self._internal_error(result.id, result.source, exc)
                sink.add(index, result, fresh=fresh)
            tally.add(result, resumed=not fresh)
            if sink.buffered < max_buffered:
                room.set()
            if fresh:
                self.observer.document_done(result, plan)
            self.on_result(result)
            self.log.info(
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

        async def guarded(index: int, doc: Document, prompt: PromptRef) -> None:
            try:
                record(index, *await self.process(doc))
            except DocumentError as err:
                fingerprints = Fingerprints(input=input_fingerprint(doc), settings=self.settings_fingerprint(prompt))
                record(index, error_result(err, prompt, model, doc.source, fingerprints))
            except (EngineError, BudgetError):
                raise  # job-level: stops the job
            except Exception as exc:  # noqa: BLE001 - one document's bug must not stop the others
                record(index, self._internal_error(doc.id, doc.source, exc, prompt))
            finally:
                slots.release()

        async def wait_for_room() -> None:
            """Backpressure: stop reading while the reorder buffer is full (an earlier document is slow)."""
            while sink.buffered >= max_buffered:
                room.clear()
                await room.wait()

        fatal: BaseException | None = None
        try:
            items = read_documents(self.spec.input, self.spec.limits.max_document_bytes, **self._reader_options())
            for index, item in enumerate(items):
                await wait_for_room()
                if isinstance(item, DocumentError):
                    record(index, error_result(item, None, model, item.source))
                    continue
                try:
                    chosen = self.prompts.choose(item.id)
                    input_fp, settings_fp = input_fingerprint(item), self.settings_fingerprint(chosen)
                    earlier = sink.previous.lookup(item.id, input_fp, settings_fp)
                except Exception as exc:  # noqa: BLE001 - as in guarded(): this document only
                    record(index, self._internal_error(item.id, item.source, exc))
                    continue
                if isinstance(earlier, DocumentResult):
                    record(index, earlier, fresh=False)
                    continue
                if earlier is not None:
                    tally.recomputed[earlier] += 1
                    self.log.info("document.recompute", document_id=item.id, reason=earlier)
                await slots.acquire()
                done = [t for t in tasks if t.done()]
                for t in done:
                    tasks.discard(t)
                    t.result()  # re-raise a fatal error early
                tasks.add(asyncio.create_task(guarded(index, item, chosen)))
            if tasks:
                await asyncio.gather(*tasks)
        except (EngineError, BudgetError) as exc:
            fatal = exc
        except BaseException as exc:  # noqa: BLE001 - interrupted (Ctrl-C): keep what is done, re-raised below
            fatal = exc
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        if opened_cache:
            self.client.close()
            self.cache = None
        summary = self._summary(tally, started_at, fatal)
        self.peak_buffered = sink.peak_buffered
        self.observer.job_done(summary)
        if fatal is None:
            sink.finish(summary)
        else:
            sink.abandon(summary)
            self.log.error("job.failed", error=str(fatal), finished=tally.documents)
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

    def _reader_options(self) -> dict[str, Any]:
        return {"follow_symlinks": self.spec.follow_symlinks}

    def _internal_error(
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

    def _summary(self, tally: _Tally, started_at: float, fatal: BaseException | None) -> JobSummary:
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
            requests_from_cache=self.requests_from_cache,
            requests_sent=self.requests_sent,
            max_levels=tally.max_levels,
            fatal_error=None if fatal is None else f"{type(fatal).__name__}: {fatal}",
        )


@dataclass(slots=True)
class _Tally:
    """Running totals of a job's results, for summary.json without keeping the results."""

    documents: int = 0
    ok: int = 0
    errors: int = 0
    resumed: int = 0
    chunks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    max_levels: int = 0
    errors_by_code: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    by_version: Counter[str] = field(default_factory=Counter)
    recomputed: Counter[str] = field(default_factory=Counter)

    def add(self, r: DocumentResult, *, resumed: bool) -> None:
        self.documents += 1
        self.ok += r.status == "ok"
        self.errors += r.status == "error"
        self.resumed += resumed
        if r.error is not None:
            self.errors_by_code[r.error.code] += 1
        if r.prompt is not None:
            self.by_version[f"{r.prompt.name}@{r.prompt.version}"] += 1
        self.chunks += r.chunks
        self.requests.update(r.usage.requests)
        self.prompt_tokens += r.usage.prompt_tokens
        self.completion_tokens += r.usage.completion_tokens
        self.cached_prompt_tokens += r.usage.cached_prompt_tokens
        self.max_levels = max(self.max_levels, r.levels)
