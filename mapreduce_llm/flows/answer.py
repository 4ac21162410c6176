"""The flow of answer prompts (``output: answer``): checked map answers, reduced best first, re-retrieved if unsure.

The life of a map answer, from engine output to the result:

1. **Engine output.** Every selected chunk is mapped under the answer schema
   (:func:`~mapreduce_llm.answers.answer_schema`): one JSON record ``{"quote": ..., "answer": ...}``.
2. **Judged** (:func:`~mapreduce_llm.answers.judge`). The record is parsed and checked against the chunk it was
   answered from: is the quote in the chunk (its span), is the answer, how confident were the answer's tokens.
   A record that does not parse is judged too, as a parse failure.
3. **Classified** (:func:`~mapreduce_llm.answers.classify`). With the evidence's similarity to the question and
   the prompt version's calibrated thresholds, each judged answer is ``kept`` or gets the reason it is not
   (``not_found``, ``unsupported``, ``low_confidence``, ``off_topic``, ``parse_failure``).
4. **MapAnswer** (:class:`~mapreduce_llm.results.MapAnswer`). Every judged answer, kept or not, becomes one in
   the result's ``answers``, most confident first: the record of what each chunk said and what became of it.
5. **Candidate** (:class:`~mapreduce_llm.answers.Candidate`). A kept answer also becomes a candidate for the
   reducer, its quote's span moved from the chunk into the document (its provenance).
6. **Reduced.** No candidate: the answer is the prompt's ``not_found`` reply. One: it is the answer. More: they
   go to the reduce tree most confident first, each as an answer-and-evidence line
   (:func:`~mapreduce_llm.answers.candidate_line`); the reducer's answer stands only if it agrees with at least
   one candidate (:func:`~mapreduce_llm.answers.agrees`), whose evidence it then carries; otherwise the most
   confident candidate is the answer. That answer is :class:`~mapreduce_llm.flows.base.Tentative`.
7. **Re-retrieved** (:mod:`mapreduce_llm.flows.reretrieve`). When the tentative answer is under the calibrated
   confidence, or there is none, the question is asked again of the best passages; a new answer goes through
   steps 2 and 3 again and replaces the tentative one only when it is kept and more confident.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
from mapreduce_llm.common import ReduceStage
from mapreduce_llm.flows.base import AnswerDetails, DocumentRun, Outcome, Tentative
from mapreduce_llm.flows.reretrieve import decide, reretrieve
from mapreduce_llm.reduce import Partial, SourceSpan, reduce_tree
from mapreduce_llm.results import MapAnswer, Provenance


async def answer_flow(run: DocumentRun) -> Outcome:
    """Map the selected chunks into checked answers, reduce the kept ones best first, re-retrieve if unsure."""
    pf = run.prompt.file
    assert pf.not_found is not None  # the prompt file validator requires it
    schema = answer_schema(pf.answer.max_quote_chars, pf.answer.max_answer_chars)
    started = time.perf_counter()
    judged = await asyncio.gather(*(_map_chunk(run, i, schema) for i in run.selected))
    map_s = time.perf_counter() - started
    answers, kept = await _sort_out(run, judged)
    parse_failures = sum(a.status == "parse_failure" for a in answers)
    run.log.debug("document.answers", kept=len(kept), mapped=len(run.selected), parse_failures=parse_failures)

    levels = 0
    tentative: Tentative | None = None
    if len(kept) == 1:
        tentative = Tentative(kept[0].answer, kept[0].confidence, [kept[0].evidence])
    elif kept:
        reduced = await reduce_answers(run, kept, schema)
        tentative, levels = reduced.answer, reduced.levels
        parse_failures += reduced.parse_failures
    decision = decide(tentative, run.calibration, run.spec.retrieval, prompt=run.prompt.ref, model=run.model)
    final = tentative or Tentative(pf.not_found, None, [])
    reretrieval = decision.info()
    if decision.triggered:
        assert run.calibration is not None  # decide() never triggers without one
        retried = await reretrieve(run, run.calibration, schema, decision, tentative)
        reretrieval, final = retried.info, retried.answer
        final = Tentative(final.answer or pf.not_found, final.confidence, final.evidence)
    confidence = final.confidence
    return Outcome(
        output=final.answer,
        levels=levels,
        not_found=not final.evidence,
        mean_logprob=confidence,
        provenance=final.evidence,
        map_s=map_s,
        answer=AnswerDetails(
            confidence=None if confidence is None else round(confidence, 4),
            answers=answers,
            parse_failures=parse_failures,
            reretrieval=reretrieval,
        ),
    )


async def _map_chunk(run: DocumentRun, index: int, schema: dict[str, Any]) -> tuple[int, Judged]:
    """Map chunk ``index`` and judge its record against the chunk's text."""
    pf, chunk = run.prompt.file, run.plan.chunks[index]
    out = await run.call("map", chunk.token_ids, schema)
    text = run.document.text[chunk.start : chunk.end]
    return index, judge(out, text, pf.not_found or "", pf.answer.min_quote_match)


async def _sort_out(run: DocumentRun, judged: Sequence[tuple[int, Judged]]) -> tuple[list[MapAnswer], list[Candidate]]:
    """Classify every judged map answer: the result's records of all of them, and the kept ones as candidates
    (both most confident first)."""
    calibration, doc = run.calibration, run.document
    floor = calibration.map_min_confidence if calibration is not None else None
    min_similarity = calibration.min_evidence_similarity if calibration is not None else None
    relevance = await run.evidence_similarity([j for _, j in judged])
    kept: list[Candidate] = []
    answers: list[MapAnswer] = []
    for (index, j), similarity in zip(judged, relevance, strict=True):
        chunk = run.plan.chunks[index]
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
    return answers, kept


@dataclass(frozen=True, slots=True)
class ReducedAnswers:
    """What the reduce tree made of two or more candidates."""

    answer: Tentative
    levels: int
    parse_failures: int
    """Reduce and collapse outputs that held no valid record."""


async def reduce_answers(run: DocumentRun, kept: list[Candidate], schema: dict[str, Any]) -> ReducedAnswers:
    """Reduce two or more kept answers (best first). The reducer's answer must agree with at least one
    candidate; when it does not (an invented or unreadable answer), the most confident candidate is the answer."""
    tokenizer = run.tokenizer
    partials = [
        Partial(
            line := candidate_line(c.answer, c.evidence.quote or ""),
            tuple(tokenizer.encode_data(line)),
            (SourceSpan(c.chunk, c.evidence.start, c.evidence.end),),
            c.confidence,
        )
        for c in kept
    ]
    final_record: list[AnswerRecord | str] = []
    failures = 0

    async def reduce_call(stage: ReduceStage, slot: list[int], group: Sequence[Partial], level: int) -> Partial:
        nonlocal failures
        out = await run.call(stage, slot, schema)
        record = parse_record(out.text)
        failures += isinstance(record, str)
        span = value_span(out.text, "answer")
        confidence = span_confidence(out, *span) if span else out.mean_logprob
        if stage == "reduce":
            final_record.append(record)
        # A collapse output that cannot be read is passed on as its best input, not as raw text.
        line = candidate_line(record.answer, record.quote) if isinstance(record, AnswerRecord) else group[0].text
        sources = tuple(s for p in group for s in p.sources)
        return Partial(line, tuple(tokenizer.encode_data(line)), sources, confidence)

    final, levels = await reduce_tree(partials, run.plan, tokenizer, reduce_call, run.spec.reduce.max_levels)
    record = final_record[0] if final_record else None
    if isinstance(record, AnswerRecord) and not says_not_found(record.answer, run.prompt.file.not_found or ""):
        backing = [c for c in kept if agrees(c, record)]
        if backing:
            answer = Tentative(record.answer, final.mean_logprob, [c.evidence for c in backing])
            return ReducedAnswers(answer, levels, failures)
    run.log.info(  # no answer text in logs: it may quote the document
        "document.reduce_unsupported", readable=isinstance(record, AnswerRecord), candidates=len(kept)
    )
    best = kept[0]
    return ReducedAnswers(Tentative(best.answer, best.confidence, [best.evidence]), levels, failures)
