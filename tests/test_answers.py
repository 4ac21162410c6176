"""Structured answer records: parsing, evidence lookup, answer-token confidence, and the keep/drop decision."""

from __future__ import annotations

import json

import pytest

from mapreduce_llm.answers import (
    AnswerRecord,
    Candidate,
    agrees,
    answer_schema,
    classify,
    judge,
    locate,
    parse_record,
    says_not_found,
    span_confidence,
    value_span,
)
from mapreduce_llm.engines.base import EngineOutput
from mapreduce_llm.results import Provenance

CHUNK = (
    "Logging is configured once per process.\n\n"
    "The access code for the Halvorsen archive is 4417.\n\n"
    "Handlers send log records to their destinations."
)


def output(text: str, logprobs: list[float] | None = None, tokens: list[str] | None = None) -> EngineOutput:
    """An engine output whose tokens are single characters (unless given) with the given logprobs."""
    tokens = tokens if tokens is not None else list(text)
    logprobs = logprobs if logprobs is not None else [-0.1] * len(tokens)
    return EngineOutput(
        request_id="r",
        text=text,
        prompt_tokens=10,
        completion_tokens=len(tokens),
        cumulative_logprob=sum(logprobs),
        finish_reason="stop",
        seconds=0.0,
        tokens=tuple(tokens),
        token_logprobs=tuple(logprobs),
    )


def test_parse_record_reads_plain_fenced_and_padded_json() -> None:
    record = parse_record('{"quote": "q", "answer": "a"}')
    assert record == AnswerRecord(quote="q", answer="a")
    assert parse_record('```json\n{"quote": "q", "answer": "a"}\n```') == record
    assert parse_record('Sure: {"answer": "a", "quote": "q", "extra": 1} done') == record


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"quote": "The access code for the Halv', "no JSON object"),
        ('{"quote": "q", "answer": }', "not valid JSON"),
        ('{"quote": "q"}', "record field answer"),
        ("NOT FOUND", "no JSON object"),
    ],
)
def test_parse_record_names_what_is_wrong(text: str, reason: str) -> None:
    parsed = parse_record(text)
    assert isinstance(parsed, str) and reason in parsed


def test_schema_puts_limits_on_both_fields() -> None:
    schema = answer_schema(200, 50)
    assert schema["required"] == ["quote", "answer"]
    assert schema["properties"]["quote"]["maxLength"] == 200
    assert schema["properties"]["answer"]["maxLength"] == 50
    assert schema["additionalProperties"] is False


def test_value_span_handles_escapes_and_cut_off_values() -> None:
    text = '{"quote": "say \\"hi\\"", "answer": "4417"}'
    start, end = value_span(text, "quote") or (0, 0)
    assert json.loads('"' + text[start:end] + '"') == 'say "hi"'
    start, end = value_span(text, "answer") or (0, 0)
    assert text[start:end] == "4417"
    cut = '{"answer": "unfinished'
    start, end = value_span(cut, "answer") or (0, 0)
    assert cut[start:end] == "unfinished" and end == len(cut)
    assert value_span('{"quote": "x"}', "answer") is None


def test_confidence_is_the_mean_over_the_answer_tokens_only() -> None:
    text = '{"quote": "abc", "answer": "4417"}'
    start, end = value_span(text, "answer") or (0, 0)
    logprobs = [-3.0 if start <= i < end else -0.01 for i in range(len(text))]
    confidence = span_confidence(output(text, logprobs), start, end)
    assert confidence == pytest.approx(-3.0)


def test_confidence_ignores_the_stop_token_after_the_text() -> None:
    text = '{"quote": "abc", "answer": "4417"}'
    start, end = value_span(text, "answer") or (0, 0)
    tokens = [*text, "<|im_end|>"]
    logprobs = [-3.0 if start <= i < end else -0.01 for i in range(len(text))] + [0.0]
    assert span_confidence(output(text, logprobs, tokens=tokens), start, end) == pytest.approx(-3.0)


def test_confidence_falls_back_to_the_whole_output_when_tokens_do_not_add_up() -> None:
    out = output('{"answer": "x"}', [-1.0, -2.0], tokens=["a", "b"])
    assert span_confidence(out, 0, 3) == pytest.approx(-1.5)


def test_locate_exact_case_insensitive_and_fuzzy() -> None:
    exact = locate("The access code for the Halvorsen archive is 4417.", CHUNK, 90)
    assert exact is not None and CHUNK[exact.start : exact.end].endswith("4417.") and exact.score == 100
    lower = locate("the ACCESS code", CHUNK, 90)
    assert lower is not None and CHUNK[lower.start : lower.end] == "The access code"
    fuzzy = locate("The access code of the Halvorsen archive is 4417", CHUNK, 90)
    assert fuzzy is not None and "Halvorsen archive is 4417" in CHUNK[fuzzy.start : fuzzy.end]
    assert locate("The lighthouse keeper of Port Elsby is Tobias Renwick.", CHUNK, 90) is None
    assert locate("   ", CHUNK, 90) is None


def test_says_not_found() -> None:
    assert says_not_found("NOT FOUND", "NOT FOUND")
    assert says_not_found(" not found. ", "NOT FOUND")
    assert says_not_found("", "NOT FOUND")
    assert not says_not_found("4417", "NOT FOUND")


def record(quote: str, answer: str) -> str:
    return json.dumps({"quote": quote, "answer": answer})


def test_judge_and_classify_each_outcome() -> None:
    fact = "The access code for the Halvorsen archive is 4417."
    kept = judge(output(record(fact, "4417")), CHUNK, "NOT FOUND", 90)
    assert kept.supported and classify(kept, -1.0) == ("kept", None)

    own_evidence = judge(output(record("The code is 4417.", fact)), CHUNK, "NOT FOUND", 90)
    assert own_evidence.supported and own_evidence.quote is not None  # a sentence-long answer from the text

    invented = judge(output(record("The access code is 9999.", "9999")), CHUNK, "NOT FOUND", 90)
    status, detail = classify(invented, None)
    assert status == "unsupported" and "quote" in (detail or "")

    wrong_answer = judge(output(record(fact, "1234")), CHUNK, "NOT FOUND", 90)
    status, detail = classify(wrong_answer, None)
    assert status == "unsupported" and "answer" in (detail or "")

    unsure = judge(output(record(fact, "4417"), [-2.0] * len(record(fact, "4417"))), CHUNK, "NOT FOUND", 90)
    assert classify(unsure, -1.0)[0] == "low_confidence"
    assert classify(unsure, None)[0] == "kept"

    assert classify(kept, None, similarity=0.05, min_similarity=0.3)[0] == "off_topic"
    assert classify(kept, None, similarity=0.5, min_similarity=0.3)[0] == "kept"

    absent = judge(output(record("NOT FOUND", "NOT FOUND")), CHUNK, "NOT FOUND", 90)
    assert absent.not_found and classify(absent, None)[0] == "not_found"

    broken = judge(output('{"quote": "The access'), CHUNK, "NOT FOUND", 90)
    assert classify(broken, None)[0] == "parse_failure"


def test_reducer_answer_agrees_with_a_candidate_by_answer_or_quote() -> None:
    evidence = Provenance(chunk_id="d#1", start=0, end=10, quote="The access code for the Halvorsen archive is 4417.")
    candidate = Candidate(1, "4417", evidence, -0.1)
    assert agrees(candidate, AnswerRecord(quote="", answer="The code is 4417."))
    assert agrees(candidate, AnswerRecord(quote="", answer="4417"))
    assert not agrees(
        candidate, AnswerRecord(quote="The access code for the Halvorsen archive is 5512.", answer="5512")
    )
    assert not agrees(candidate, AnswerRecord(quote="", answer=""))
    long_answer = Candidate(2, "The mascot of the rowing club is a grey heron.", evidence, -0.1)
    assert not agrees(long_answer, AnswerRecord(quote="", answer="The (evidence: "))
    assert agrees(long_answer, AnswerRecord(quote="", answer="a grey heron"))


def test_a_rambling_answer_is_cut_to_its_first_sentence_when_that_is_in_the_text() -> None:
    fact = "The access code for the Halvorsen archive is 4417."
    rambling = judge(output(record(fact, "4417. The access code is 4417. The access")), CHUNK, "NOT FOUND", 90)
    assert rambling.supported and rambling.record is not None and rambling.record.answer == "4417."
