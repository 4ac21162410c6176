"""The answer flow (flows/answer.py, flows/reretrieve.py), end to end through the job with an engine double.

The double answers like the embedded model does: it copies the planted fact when the chunk has it and
invents a plausible sentence when it does not. Retrieval uses the bag-of-words embedding double.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mapreduce_llm.config import JobSpec
from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.monitoring import JobMetrics, MetricsObserver
from mapreduce_llm.prompts import ModelCalibration, select_prompts, write_calibration
from mapreduce_llm.results import DocumentResult
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS, make_job
from tests.fakes import FakeEngine

QUESTION = "What is the access code for the Halvorsen archive?"
FACT = "The access code for the Halvorsen archive is 4417."
RIVAL = "A later note says the access code for the Halvorsen archive is 5512."
INVENTED = "The access code for the Halvorsen archive is 9999."


def record(quote: str, answer: str) -> str:
    return json.dumps({"quote": quote, "answer": answer})


def map_like(prompt: str) -> str:
    """What the model double answers to a map (or re-retrieval) prompt."""
    text = prompt.split("Text:", 1)[-1]
    if "Halvorsen archive is 4417" in text:
        return record(FACT, "4417")
    if "Halvorsen archive is 5512" in text:
        return record(RIVAL, "5512")
    return record(INVENTED, "9999")  # a sentence that is not in the chunk


def make_engine(
    tokenizer: HFTokenizer,
    reduce_answer: Callable[[str], str] | None = None,
    logprob: Callable[[EngineRequest, str], float] | None = None,
) -> FakeEngine:
    def respond(request: EngineRequest) -> str:
        prompt = tokenizer.decode(request.prompt_token_ids)
        if request.stage in ("map", "reretrieve"):
            return map_like(prompt)
        return reduce_answer(prompt) if reduce_answer else record(FACT, "4417")

    def default_logprob(request: EngineRequest, text: str) -> float:
        return -0.1 if "4417" in text else -0.4

    return FakeEngine(tokenizer, max_model_len=1024, respond=respond, logprob=logprob or default_logprob)


def document(corpus_text: str, planted: dict[float, str], length: int = 12_000) -> str:
    """``length`` characters of the corpus with sentences planted as paragraphs at relative positions."""
    text = corpus_text[:length]
    for position in sorted(planted, reverse=True):
        at = text.find("\n\n", int(len(text) * position))
        text = text[:at] + "\n\n" + planted[position] + text[at:]
    return text


def run(
    tmp_path: Path,
    engine: FakeEngine,
    tokenizer: HFTokenizer,
    docs: list[dict[str, object]],
    prompts_dir: Path = PROMPTS,
    observer: MetricsObserver | None = None,
    prompt: str = "qa@2.0.0",
    **extra: object,
) -> list[DocumentResult]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in docs))
    spec = JobSpec.model_validate(
        {
            "input": source,
            "output": tmp_path / "out",
            "prompt": prompt,
            "prompts_dir": prompts_dir,
            "engine": {"max_model_len": 1024},
            **extra,
        }
    )
    asyncio.run(make_job(spec, select_prompts(spec.prompt, prompts_dir), tokenizer, engine, observer=observer).run())
    lines = (spec.output / "results.jsonl").read_text().splitlines()
    return [DocumentResult.model_validate_json(line) for line in lines]


@pytest.fixture
def calibrated(tmp_path: Path) -> Callable[..., Path]:
    """A copy of the prompts with a calibration of qa@2.0.0 for the double's model."""

    def make(**thresholds: float | None) -> Path:
        folder = tmp_path / "prompts"
        shutil.copytree(PROMPTS, folder, ignore=shutil.ignore_patterns("*.calibration.yaml"))
        prompt = select_prompts("qa@2.0.0", folder).base
        values = {"map_min_confidence": -1.0, "reduce_min_confidence": -1.0, **thresholds}
        write_calibration(prompt, "fake-model", ModelCalibration.model_validate(values))
        return folder

    return make


def test_answer_carries_its_evidence_span_and_invented_answers_are_dropped(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """A kept answer carries its quote's span in the document; answers whose quote is not in the chunk are dropped."""
    text = document(corpus_text, {0.6: FACT})
    engine = make_engine(tokenizer)
    [found, absent] = run(
        tmp_path,
        engine,
        tokenizer,
        [
            {"id": "with", "text": text, "question": QUESTION},
            {"id": "without", "text": corpus_text[:12_000], "question": QUESTION},
        ],
    )
    assert found.status == "ok" and found.output == "4417" and found.not_found is False
    [evidence] = found.provenance
    assert text[evidence.start : evidence.end] == FACT == evidence.quote
    statuses = [a.status for a in found.answers]
    assert statuses.count("kept") == 1 and statuses.count("unsupported") == found.chunks - 1
    assert found.answers[0].status == "kept"  # most confident first
    assert absent.output == "NOT FOUND" and absent.not_found is True and absent.provenance == []
    assert {a.status for a in absent.answers} == {"unsupported"}
    # Every map request was decoded under the answer schema.
    assert all(r.json_schema is not None and r.json_schema["required"] == ["quote", "answer"] for r in engine.requests)
    assert found.retrieval is not None and len(found.retrieval.similarities) == found.chunks


def test_reducer_sees_answers_best_first_and_must_agree_with_one(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """The reducer gets candidates most confident first, and its answer stands only when a candidate backs it."""
    text = document(corpus_text, {0.2: RIVAL, 0.8: FACT})
    doc = {"id": "two", "text": text, "question": QUESTION}
    engine = make_engine(tokenizer)
    [result] = run(tmp_path / "a", engine, tokenizer, [doc])
    assert result.output == "4417" and result.levels == 1
    [reduce] = [r for r in engine.requests if r.stage == "reduce"]
    prompt = tokenizer.decode(reduce.prompt_token_ids)
    assert prompt.index("4417") < prompt.index("5512")  # more confident candidate first, not document order
    assert [p.quote for p in result.provenance] == [FACT]

    # A reducer answer that no candidate backs is not trusted: the most confident candidate is the answer.
    inventing = make_engine(tokenizer, reduce_answer=lambda _p: record("The code is 1234.", "1234"))
    [fallback] = run(tmp_path / "b", inventing, tokenizer, [doc])
    assert fallback.output == "4417" and [p.quote for p in fallback.provenance] == [FACT]


def test_calibrated_threshold_drops_unsure_answers(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str, calibrated: Callable[..., Path]
) -> None:
    """A map answer under the calibrated map_min_confidence is recorded as low_confidence and not kept."""
    folder = calibrated(map_min_confidence=-0.2)
    doc = {"id": "rival", "text": document(corpus_text, {0.5: RIVAL}), "question": QUESTION}
    [result] = run(tmp_path, make_engine(tokenizer), tokenizer, [doc], prompts_dir=folder)
    assert result.output == "NOT FOUND" and result.not_found is True
    assert [a.status for a in result.answers if a.answer == "5512"] == ["low_confidence"]


def test_off_topic_evidence_is_dropped(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str, calibrated: Callable[..., Path]
) -> None:
    """Evidence less similar to the question than calibrated makes the answer off_topic, with its similarity."""
    folder = calibrated(min_evidence_similarity=0.99)
    doc = {"id": "x", "text": document(corpus_text, {0.5: FACT}), "question": QUESTION}
    [result] = run(tmp_path, make_engine(tokenizer), tokenizer, [doc], prompts_dir=folder)
    kept = [a for a in result.answers if a.answer == "4417"]
    assert kept[0].status == "off_topic" and kept[0].evidence_similarity is not None
    assert result.output == "NOT FOUND"


def test_reretrieval_replaces_an_unsure_answer_and_records_why(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str, calibrated: Callable[..., Path]
) -> None:
    """An answer under reduce_min_confidence is re-retrieved; a surer answer from the passages replaces it."""
    folder = calibrated(reduce_min_confidence=-0.2)
    text = document(corpus_text, {0.5: RIVAL})
    doc = {"id": "unsure", "text": text, "question": QUESTION}

    def surer_on_passages(request: EngineRequest, answer: str) -> float:
        return -0.05 if request.stage == "reretrieve" else -0.4

    engine = make_engine(tokenizer, logprob=surer_on_passages)
    [result] = run(tmp_path, engine, tokenizer, [doc], prompts_dir=folder)
    info = result.reretrieval
    assert info is not None and info.triggered and "< calibrated -0.200" in info.reason
    [first] = info.rounds
    assert first.accepted and first.answer == "5512" and QUESTION in first.query and "5512" in first.query
    assert result.confidence == pytest.approx(-0.05)
    [evidence] = result.provenance
    assert text[evidence.start : evidence.end] == RIVAL
    # Evidence is named by the chunk that holds it (passages are cut independently of chunks).
    [holding] = [a.chunk_id for a in result.answers if a.answer == "5512"]
    assert evidence.chunk_id == holding
    # The passages given to the model hold the evidence and fit the map prompt's budget.
    assert any(p.start <= evidence.start and evidence.end <= p.end for p in first.passages)
    [request] = [r for r in engine.requests if r.stage == "reretrieve"]
    assert len(request.prompt_token_ids) + request.max_tokens <= 1024


def test_reretrieval_rounds_are_bounded(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str, calibrated: Callable[..., Path]
) -> None:
    """Re-retrieval stops when a round would see the same passages again, whatever max_rounds allows."""
    folder = calibrated(reduce_min_confidence=-0.01)
    doc = {"id": "unsure", "text": document(corpus_text, {0.5: RIVAL}), "question": QUESTION}

    def surer_but_not_sure(request: EngineRequest, _text: str) -> float:
        return -0.3 if request.stage == "reretrieve" else -0.4

    for rounds in (1, 3):  # a second round would get the same passages, so it stops after one either way
        engine = make_engine(tokenizer, logprob=surer_but_not_sure)
        [result] = run(
            tmp_path / str(rounds), engine, tokenizer, [doc], prompts_dir=folder, retrieval={"max_rounds": rounds}
        )
        assert result.reretrieval is not None and len(result.reretrieval.rounds) == 1
        assert result.reretrieval.rounds[0].accepted and result.confidence == pytest.approx(-0.3)
        assert sum(r.stage == "reretrieve" for r in engine.requests) == 1


def test_malformed_output_is_a_recorded_parse_failure(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str) -> None:
    """A map output that is not a valid record is a counted parse failure with its reason, not an error."""

    def respond(request: EngineRequest) -> str:
        prompt = tokenizer.decode(request.prompt_token_ids)
        return record(FACT, "4417") if "is 4417" in prompt.split("Text:", 1)[-1] else '{"quote": "The acc'

    engine = FakeEngine(tokenizer, max_model_len=1024, respond=respond)
    doc = {"id": "x", "text": document(corpus_text, {0.3: FACT}), "question": QUESTION}
    [result] = run(tmp_path, engine, tokenizer, [doc])
    assert result.status == "ok" and result.output == "4417"
    assert result.parse_failures == result.chunks - 1
    assert all(a.detail for a in result.answers if a.status == "parse_failure")


def test_top_k_maps_only_the_most_similar_chunks_and_exports_similarity(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """top_k maps only the chunks most similar to the question, and their similarities reach the metrics."""
    doc = {"id": "rag", "text": document(corpus_text, {0.7: FACT}), "question": QUESTION}
    engine = make_engine(tokenizer)
    metrics = JobMetrics()
    [result] = run(
        tmp_path,
        engine,
        tokenizer,
        [doc],
        observer=MetricsObserver(metrics),
        retrieval={"mode": "top_k", "top_k": 2},
    )
    assert result.retrieval is not None and result.retrieval.mode == "top_k"
    assert len(result.retrieval.mapped) == 2 < result.chunks
    assert sum(r.stage == "map" for r in engine.requests) == 2
    assert result.output == "4417"  # the chunk with the fact shares the question's words: ranked first
    labels = {"task": "qa", "version": "2.0.0"}
    count = metrics.registry.get_sample_value
    assert count("mapreduce_llm_chunk_similarity_count", {**labels, "mapped": "yes"}) == 2
    assert count("mapreduce_llm_chunk_similarity_count", {**labels, "mapped": "no"}) == result.chunks - 2
    assert count("mapreduce_llm_map_answers_total", {**labels, "status": "kept"}) == 1


def test_extract_finds_the_named_field_with_its_evidence(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str
) -> None:
    """extract@2.0.0 asks for the document's `field`; retrieval compares chunks with the field's name."""
    text = document(corpus_text, {0.4: FACT})
    doc = {"id": "e", "text": text, "field": "the access code for the Halvorsen archive"}
    engine = make_engine(tokenizer)
    [result] = run(tmp_path, engine, tokenizer, [doc], prompt="extract@2.0.0")
    assert result.output == "4417" and [p.quote for p in result.provenance] == [FACT]
    assert result.retrieval is not None and result.retrieval.query == "prompt"
    assert "Find in the text: the access code for the Halvorsen archive" in tokenizer.decode(
        engine.requests[0].prompt_token_ids
    )


def test_reretrieved_answers_have_their_own_calibrated_bar(
    tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str, calibrated: Callable[..., Path]
) -> None:
    """With no chunk answering, re-retrieval asks the question alone; its answer must reach the re-retrieval
    thresholds, which can be stricter than the map ones."""
    doc = {"id": "x", "text": document(corpus_text, {0.5: RIVAL}), "question": QUESTION}

    def chunks_unsure(request: EngineRequest, _text: str) -> float:
        return -0.3 if request.stage == "reretrieve" else -0.9

    for bar, accepted in ((-0.5, True), (-0.2, False)):
        folder = calibrated(map_min_confidence=-0.5, reretrieve_min_confidence=bar)
        engine = make_engine(tokenizer, logprob=chunks_unsure)
        [result] = run(tmp_path / str(bar), engine, tokenizer, [doc], prompts_dir=folder)
        info = result.reretrieval
        assert info is not None and info.triggered and "no chunk gave an answer" in info.reason
        assert info.rounds[0].accepted is accepted and info.rounds[0].query == QUESTION
        assert result.output == ("5512" if accepted else "NOT FOUND")
        assert result.not_found is (not accepted)
        shutil.rmtree(folder)
