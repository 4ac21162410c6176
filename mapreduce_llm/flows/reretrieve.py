"""Re-retrieval (FLARE, "active retrieval") for answer prompts: decide whether to ask again, then ask.

When the final answer is unsure, or no chunk gave one, the question plus the tentative answer is a better query
than the question alone: it holds the words the evidence likely uses. :func:`decide` says whether to re-retrieve
and why (a pure function of the answer so far, the calibration and the settings; the reason goes into the result).
:func:`reretrieve` then runs at most ``retrieval.max_rounds`` rounds: rank the document's passages
(:func:`~mapreduce_llm.retrieval.passages_of`) by similarity to the query, ask the map prompt again over the best
ones, and accept the new answer only when it passes the same checks as a map answer, under the calibrated
re-retrieval thresholds, and is more confident than the one it replaces. A round stops the loop when its answer
is not accepted, when it reaches the calibrated confidence, or when the passages are those of an earlier round.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mapreduce_llm.answers import classify, judge
from mapreduce_llm.flows.base import DocumentRun, Tentative
from mapreduce_llm.results import Provenance, ReretrievalInfo, ReretrievalRound
from mapreduce_llm.retrieval import best_passages, chunk_at, passages_of, query_of

if TYPE_CHECKING:
    from mapreduce_llm.config import RetrievalConfig
    from mapreduce_llm.prompts import ModelCalibration

PASSAGE_SEPARATOR = "\n\n"
"""Between the passages given to a re-retrieval call."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to re-retrieve, and why (the reason is recorded either way)."""

    triggered: bool
    reason: str

    def info(self) -> ReretrievalInfo:
        """The result's record of this decision, before any round."""
        return ReretrievalInfo(triggered=self.triggered, reason=self.reason)


def decide(
    tentative: Tentative | None,
    calibration: ModelCalibration | None,
    retrieval: RetrievalConfig,
    *,
    prompt: str,
    model: str,
) -> Decision:
    """Whether an answer prompt's document is re-retrieved, and why.

    ``tentative``: the answer so far (None: no chunk gave an answer that passed the checks). ``prompt`` and
    ``model`` name the prompt version and the served model in the reason.
    """
    if calibration is None:
        return Decision(False, f"{prompt} has no calibration for model {model!r}")
    if not (retrieval.reretrieve and retrieval.similarity_for("answer")):
        return Decision(False, "off (retrieval.reretrieve/similarity)")
    if tentative is None and not retrieval.reretrieve_not_found:
        return Decision(False, "no chunk gave an answer (reretrieve_not_found off)")
    bar = calibration.reduce_min_confidence
    if tentative is None:
        return Decision(True, "no chunk gave an answer that passed the checks")
    confidence = tentative.confidence
    if confidence is not None and confidence >= bar:
        return Decision(False, f"confidence {confidence:.3f} >= calibrated {bar:.3f}")
    shown = "none" if confidence is None else f"{confidence:.3f}"
    return Decision(True, f"confidence {shown} < calibrated {bar:.3f}")


def round_thresholds(calibration: ModelCalibration) -> tuple[float | None, float | None]:
    """(min confidence, min evidence similarity) of a re-retrieved answer: the calibrated re-retrieval bars,
    else the map answers' ones."""
    floor = calibration.reretrieve_min_confidence
    min_similarity = calibration.reretrieve_min_similarity
    if floor is None:
        floor = calibration.map_min_confidence
    if min_similarity is None:
        min_similarity = calibration.min_evidence_similarity
    return floor, min_similarity


@dataclass(frozen=True, slots=True)
class Reretrieved:
    """What re-retrieval did (the result's record) and the answer it leaves (the tentative one if none was
    accepted)."""

    info: ReretrievalInfo
    answer: Tentative


async def reretrieve(
    run: DocumentRun,
    calibration: ModelCalibration,
    schema: dict[str, Any],
    decision: Decision,
    tentative: Tentative | None,
) -> Reretrieved:
    """FLARE: ask again from the passages most similar to the question plus the tentative answer (the question
    alone when there is none), for at most ``retrieval.max_rounds`` rounds."""
    cfg, doc, pf, plan = run.spec.retrieval, run.document, run.prompt.file, run.plan
    current = tentative or Tentative("", None, [])
    info = decision.info()
    floor, min_similarity = round_thresholds(calibration)
    passages = await asyncio.to_thread(passages_of, plan, run.tokenizer, cfg.passage_tokens)
    vectors = await asyncio.to_thread(run.embedder.embed, [doc.text[p.start : p.end] for p in passages])
    separator_ids = run.tokenizer.encode_data(PASSAGE_SEPARATOR)
    asked: set[tuple[int, ...]] = set()
    for _ in range(cfg.max_rounds):
        query = f"{query_of(plan)[0]} {current.answer}".strip()
        scores = [float(s) for s in vectors @ (await asyncio.to_thread(run.embedder.embed, [query]))[0]]
        found = best_passages(
            scores, passages, doc.text, cfg.passages, plan.chunk_budget, PASSAGE_SEPARATOR, separator_ids
        )
        if found.token_ids in asked:
            break  # the same passages as an earlier round: the model would answer the same
        asked.add(found.token_ids)
        out = await run.call("reretrieve", found.token_ids, schema)
        j = judge(out, found.text, pf.not_found or "", pf.answer.min_quote_match)
        similarity = (await run.evidence_similarity([j]))[0]
        status, detail = classify(j, floor, similarity, min_similarity)
        located = found.to_document(j.quote.start, j.quote.end) if j.quote is not None else None
        better = j.confidence is not None and (current.confidence is None or j.confidence > current.confidence)
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
        evidence = [Provenance(chunk_id=chunk_at(plan, start), start=start, end=end, quote=doc.text[start:end])]
        current = Tentative(j.record.answer, j.confidence, evidence)
        if current.confidence is not None and current.confidence >= calibration.reduce_min_confidence:
            break
    return Reretrieved(info, current)
