"""Structured answers: what a question-answering map call returns, parsed, checked and scored.

Prompt versions with ``output: answer`` make every map call return one JSON record,
``{"quote": "<the sentence of the chunk that answers>", "answer": "<short answer, or NOT FOUND>"}``,
decoded under vLLM's structured outputs (a JSON schema), so the record is well-formed whenever generation
finishes; a record that still does not parse (cut off at ``max_tokens``, or a backend without structured
outputs) becomes a recorded parse failure, not an exception.

Each record is then judged on three things the model cannot talk its way through:

* **Evidence.** The quote is looked up in the chunk — exactly, else by fuzzy alignment (rapidfuzz
  ``partial_ratio_alignment``, at least ``answer.min_quote_match`` of 100) — and so is the answer. An answer
  whose quote or words are not in the chunk is *unsupported*: a small model asked about a fact that is not
  there tends to invent a sentence that looks like one.
* **Relevance.** The quote's embedding similarity to the question (all-MiniLM-L6-v2): with nothing to
  find, a small model copies some real sentence of the chunk, which then passes the evidence check.
* **Confidence.** The mean logprob the model gave to the tokens of the answer value, not to the whole
  record: vLLM computes logprobs after applying the schema's token mask, so forced JSON punctuation scores
  near 0, while inside a string value almost every token is allowed and the logprob is the model's own.

Which confidence and relevance are high enough is measured per model on a dev set
(``benchmarks/calibrate.py``) and stored beside the prompt version (see :mod:`mapreduce_llm.prompts.calibration`),
never fixed in code.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from rapidfuzz import fuzz

from mapreduce_llm.common import MapStatus
from mapreduce_llm.engines.base import EngineOutput
from mapreduce_llm.results import Provenance


def answer_schema(max_quote_chars: int, max_answer_chars: int) -> dict[str, Any]:
    """The JSON schema every stage of an ``output: answer`` prompt is decoded under (quote first)."""
    return {
        "type": "object",
        "properties": {
            "quote": {"type": "string", "maxLength": max_quote_chars},
            "answer": {"type": "string", "maxLength": max_answer_chars},
        },
        "required": ["quote", "answer"],
        "additionalProperties": False,
    }


class AnswerRecord(BaseModel):
    """One parsed record."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    quote: str
    answer: str


MIN_EVIDENCE_WORDS = 5
"""An answer of at least this many words, found in the text, serves as its own evidence quote."""

_FENCE_RE = re.compile(r"^```(?:json)?\s*|\s*```$")


def parse_record(text: str) -> AnswerRecord | str:
    """The record in a model output, or a one-line reason why there is none."""
    body = _FENCE_RE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        return f"no JSON object in the output ({_preview(text)})"
    try:
        data = json.loads(body[start : end + 1])
    except json.JSONDecodeError as exc:
        return f"output is not valid JSON: {exc.msg} at character {exc.pos} ({_preview(text)})"
    try:
        return AnswerRecord.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        return f"record field {'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']} ({_preview(text)})"


def _preview(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "…")


def value_span(text: str, key: str) -> tuple[int, int] | None:
    """Character span of the string value of ``"key"`` in raw JSON text (inside the quotes), or None."""
    match = re.search(r'"' + re.escape(key) + r'"\s*:\s*"', text)
    if match is None:
        return None
    pos = match.end()
    while pos < len(text):
        if text[pos] == "\\":
            pos += 2
            continue
        if text[pos] == '"':
            return match.end(), pos
        pos += 1
    return match.end(), len(text)  # cut off: the value runs to the end


def span_confidence(output: EngineOutput, start: int, end: int) -> float | None:
    """Mean logprob of the generated tokens that overlap ``output.text[start:end]``.

    The token texts must spell the output text (vLLM also reports the stop token, e.g. ``<|im_end|>``, which
    is not part of the text: tokens past the text's end are ignored). Falls back to the whole output's mean
    logprob when the backend reported no per-token logprobs or its token texts do not spell the output.
    """
    tokens, logprobs = output.tokens, output.token_logprobs
    if not tokens or not logprobs or not "".join(tokens).startswith(output.text):
        return output.mean_logprob
    chosen: list[float] = []
    pos = 0
    for token, logprob in zip(tokens, logprobs, strict=True):
        token_end = pos + len(token)
        if token_end > start and pos < end and not math.isnan(logprob):
            chosen.append(logprob)
        pos = token_end
    if not chosen:
        return output.mean_logprob
    return sum(chosen) / len(chosen)


@dataclass(frozen=True, slots=True)
class Match:
    """Where a piece of text was found: character span and alignment score (100 = exact)."""

    start: int
    end: int
    score: float


def locate(needle: str, haystack: str, min_score: float) -> Match | None:
    """Find ``needle`` in ``haystack``: exactly, case-insensitively, or by fuzzy alignment ≥ ``min_score``."""
    needle = needle.strip()
    if not needle:
        return None
    at = haystack.find(needle)
    if at >= 0:
        return Match(at, at + len(needle), 100.0)
    at = haystack.lower().find(needle.lower())
    if at >= 0:
        return Match(at, at + len(needle), 99.0)
    aligned = fuzz.partial_ratio_alignment(needle, haystack, processor=str.lower, score_cutoff=min_score)
    if aligned is None:
        return None
    start, end = aligned.dest_start, aligned.dest_end
    # The alignment window is as long as the needle; widen it to whole words of the haystack.
    while start > 0 and haystack[start - 1].isalnum() and haystack[start].isalnum():
        start -= 1
    while end < len(haystack) and haystack[end].isalnum() and haystack[end - 1].isalnum():
        end += 1
    return Match(start, end, round(aligned.score, 1))


def says_not_found(text: str, not_found: str) -> bool:
    """True when an answer is the prompt's "not found" reply (or empty)."""
    cleaned = text.strip().strip(".\"' ").upper()
    return not cleaned or cleaned.startswith(not_found.upper())


@dataclass(frozen=True, slots=True)
class Judged:
    """A record judged against the text it was answered from."""

    record: AnswerRecord | None
    parse_error: str | None
    not_found: bool
    confidence: float | None
    """Mean logprob of the answer value's tokens."""
    quote: Match | None
    """Where the quote is in the text (None: not found there)."""
    answer_in_text: bool
    evidence: str | None = None
    """The text at ``quote``: the evidence as it stands in the text."""

    @property
    def supported(self) -> bool:
        """The quote and the answer both occur in the text."""
        return self.quote is not None and self.answer_in_text


def judge(output: EngineOutput, text: str, not_found: str, min_match: float) -> Judged:
    """Parse one output and check it against ``text`` (the chunk, or the passages it was given)."""
    parsed = parse_record(output.text)
    if isinstance(parsed, str):
        return Judged(None, parsed, False, output.mean_logprob, None, False)
    span = value_span(output.text, "answer")
    confidence = span_confidence(output, *span) if span else output.mean_logprob
    if says_not_found(parsed.answer, not_found):
        return Judged(parsed, None, True, confidence, None, False)
    quote = None if says_not_found(parsed.quote, not_found) else locate(parsed.quote, text, min_match)
    answer = locate(parsed.answer, text, min_match)
    first = _first_sentence(parsed.answer)
    if answer is None and first != parsed.answer.strip():
        # A small model often repeats itself after a correct short answer ("4417. The code is 4417. The…"):
        # the first sentence is the answer, the rest is dropped.
        answer = locate(first, text, min_match)
        if answer is not None:
            parsed = AnswerRecord(quote=parsed.quote, answer=first)
    if quote is None and answer is not None and len(parsed.answer.split()) >= MIN_EVIDENCE_WORDS:
        quote = answer  # a sentence-long answer copied from the text is its own evidence
    evidence = text[quote.start : quote.end] if quote is not None else None
    return Judged(parsed, None, False, confidence, quote, answer is not None, evidence)


def _first_sentence(text: str) -> str:
    """Up to and including the first full stop that ends a sentence (or the whole text)."""
    match = re.search(r"[.!?](\s|$)", text.strip())
    return text.strip()[: match.start() + 1] if match else text.strip()


def classify(
    judged: Judged,
    min_confidence: float | None,
    similarity: float | None = None,
    min_similarity: float | None = None,
) -> tuple[MapStatus, str | None]:
    """What becomes of a judged answer: kept for the reducer, or why not.

    ``similarity``: of the evidence quote to the question; below ``min_similarity`` the quote is a real
    sentence of the chunk that does not address the question (what a small model copies when it has nothing).
    """
    if judged.parse_error is not None:
        return "parse_failure", judged.parse_error
    if judged.not_found:
        return "not_found", None
    if judged.quote is None:
        return "unsupported", "the evidence quote does not occur in the text"
    if not judged.answer_in_text:
        return "unsupported", "the answer does not occur in the text"
    if min_confidence is not None and (judged.confidence is None or judged.confidence < min_confidence):
        shown = "unknown" if judged.confidence is None else f"{judged.confidence:.3f}"
        return "low_confidence", f"confidence {shown} < calibrated {min_confidence:.3f}"
    if min_similarity is not None and similarity is not None and similarity < min_similarity:
        return "off_topic", f"evidence similarity to the question {similarity:.3f} < calibrated {min_similarity:.3f}"
    return "kept", None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A kept map answer on its way to the reducer."""

    chunk: int
    answer: str
    evidence: Provenance
    confidence: float | None


def candidate_line(answer: str, quote: str) -> str:
    """How a candidate answer is shown to the reducer: the answer and its evidence."""
    return f'{answer.strip()} (evidence: "{quote.strip()}")'


def agrees(candidate: Candidate, record: AnswerRecord, min_score: float = 80) -> bool:
    """True when the reducer's answer is this candidate's answer (one contains the other, or they share
    nearly all their words). Quotes are not compared: rival answers often sit in near-identical sentences."""
    ours, theirs = _words(candidate.answer), _words(record.answer)
    if not ours or not theirs:
        return False
    shorter, longer = sorted((ours, theirs), key=len)
    contained = len(shorter) >= 4 and re.search(r"\b" + re.escape(shorter) + r"\b", longer) is not None
    return contained or fuzz.token_sort_ratio(ours, theirs) >= min_score


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))
