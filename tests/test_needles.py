"""The needle-in-a-haystack question set of benchmarks/needles.py: deterministic, disjoint splits, facts planted
where the records say, no-fact documents clean, every document long enough in the served model's tokens."""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mapreduce_llm.documents import Document, read_documents
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import CORPUS, benchmark_module

Records = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def needles() -> ModuleType:
    return benchmark_module("needles")


@pytest.fixture(scope="module")
def sets(needles: ModuleType, tokenizer: HFTokenizer) -> Records:
    return {split: needles.build_needle_set(split, tokenizer) for split in ("dev", "test")}


def _statements(needles: ModuleType) -> dict[str, str]:
    """Every fact's statement, by its question."""
    return {f.question: f.statement for split in ("dev", "test") for f in needles.FACTS[split]}


def _corpus(name: str) -> str:
    return (CORPUS / name).read_text(encoding="utf-8")


def test_builds_are_deterministic(needles: ModuleType, tokenizer: HFTokenizer, sets: Records) -> None:
    needles.WINDOWS.clear()  # recut the windows too
    assert {split: needles.build_needle_set(split, tokenizer) for split in sets} == sets


def test_split_sizes_and_record_format(sets: Records) -> None:
    for split, n_facts in (("dev", 8), ("test", 12)):
        records = sets[split]
        assert len(records) == n_facts + 4
        assert sum(r["answer"] is not None for r in records) == n_facts
        for r in records:
            assert r["split"] == split
            assert {"id", "text", "question", "answer", "position", "needle_start", "split"} <= r.keys()
            assert (r["answer"] is None) == (r["position"] is None) == (r["needle_start"] is None)
    ids = [r["id"] for records in sets.values() for r in records]
    assert len(set(ids)) == len(ids)


def test_records_are_valid_job_input(tmp_path: Path, sets: Records) -> None:
    """Written as JSONL, the job reads every record; the extra fields become metadata."""
    path = tmp_path / "needles.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sets["dev"]), encoding="utf-8")
    docs = list(read_documents(path, 10_000_000))
    assert all(isinstance(d, Document) for d in docs)
    first = docs[0]
    assert isinstance(first, Document)
    assert first.id == sets["dev"][0]["id"]
    assert first.question == sets["dev"][0]["question"]
    assert first.metadata["answer"] == sets["dev"][0]["answer"]


def test_splits_share_no_fact_and_no_text(needles: ModuleType, sets: Records) -> None:
    dev, test = needles.FACTS["dev"], needles.FACTS["test"]
    for field in ("statement", "question", "answer"):
        assert not {getattr(f, field) for f in dev} & {getattr(f, field) for f in test}
    assert {r["question"] for r in sets["dev"]} <= {f.question for f in dev}
    assert {r["question"] for r in sets["test"]} <= {f.question for f in test}
    spans = {
        split: {(r["source"], r["source_start"], r["source_end"]) for r in records} for split, records in sets.items()
    }
    for source, start, end in spans["dev"]:
        for other, other_start, other_end in spans["test"]:
            assert source != other or end <= other_start or other_end <= start
    # Both splits draw from every corpus file.
    assert {s for s, _, _ in spans["dev"]} == {s for s, _, _ in spans["test"]} == {p.name for p in CORPUS.glob("*.md")}


def test_needle_documents_hold_their_statement_where_recorded(needles: ModuleType, sets: Records) -> None:
    statements = _statements(needles)
    for records in sets.values():
        planted = [r for r in records if r["answer"] is not None]
        for r in planted:
            statement, at, text = statements[r["question"]], r["needle_start"], r["text"]
            assert r["answer"] in statement
            assert text[at : at + len(statement) + 2] == statement + "\n\n"
            assert text[at - 2 : at] == "\n\n"  # its own paragraph
            assert text.count(statement) == 1
            assert abs(at / len(text) - r["position"]) <= 0.02
            # The rest is the corpus text the record points at, unchanged.
            haystack = text[:at] + text[at + len(statement) + 2 :]
            assert haystack == _corpus(r["source"])[r["source_start"] : r["source_end"]]
        positions = [r["position"] for r in planted]
        assert positions[0] == 0.05 and positions[-1] == 0.95
        steps = [b - a for a, b in itertools.pairwise(positions)]
        assert max(steps) - min(steps) < 1e-3  # evenly spread


def test_no_fact_documents_contain_no_fact(needles: ModuleType, sets: Records) -> None:
    statements = _statements(needles)
    answers = [f.answer.lower() for split in ("dev", "test") for f in needles.FACTS[split]]
    for records in sets.values():
        absent = [r for r in records if r["answer"] is None]
        assert len(absent) == 4
        assert len({r["question"] for r in absent}) == 4
        for r in absent:
            assert r["text"] == _corpus(r["source"])[r["source_start"] : r["source_end"]]
            assert not any(s in r["text"] for s in statements.values())
            lowered = r["text"].lower()
            assert not any(a in lowered for a in answers)


def test_every_document_is_long(sets: Records, tokenizer: HFTokenizer) -> None:
    """At least 10,000 tokens of the served model: far more than one map call's context."""
    counts = [len(tokenizer.encode_data(r["text"])) for records in sets.values() for r in records]
    assert min(counts) >= 10_000
    assert max(counts) <= 12_000


def test_paragraphs_never_cut_a_code_block(needles: ModuleType) -> None:
    text = "intro\n\n```python\na = 1\n\nb = 2\n```\n\n  \n\nafter\n\n```\nx\n```"
    spans = needles.paragraph_spans(text)
    assert [text[a:b] for a, b in spans] == ["intro", "```python\na = 1\n\nb = 2\n```", "after", "```\nx\n```"]


def test_fact_check_rejects_an_answer_found_in_the_corpus(needles: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = needles.corpus_texts()
    needles.check_facts(corpus)
    bad = needles.Fact("code", "The Halvorsen vault opens with the word lambda.", "What opens the vault?", "lambda")
    monkeypatch.setitem(needles.FACTS, "dev", (*needles.FACTS["dev"][:-1], bad))
    with pytest.raises(AssertionError, match="occurs in the corpus"):
        needles.check_facts(corpus)


def test_is_correct(needles: ModuleType) -> None:
    is_correct = needles.is_correct
    assert is_correct("4417", "The access code is 4417.")
    assert is_correct("Tarrant", "maud tarrant")
    assert not is_correct("4417", "4471")
    assert not is_correct("4417", "NOT FOUND")
    assert is_correct(None, "NOT FOUND")
    assert is_correct(None, "not found.")
    assert is_correct(None, "NOT FOUND in the text")
    assert is_correct(None, "")
    assert is_correct(None, "  \n")
    assert not is_correct(None, "4417")
    assert not is_correct(None, "The answer is NOT FOUND")
    assert is_correct(None, "UNKNOWN", not_found="unknown")
    assert not is_correct(None, "NOT FOUND", not_found="UNKNOWN")


def test_unknown_split_is_refused(needles: ModuleType, tokenizer: HFTokenizer) -> None:
    with pytest.raises(ValueError, match="split"):
        needles.build_needle_set("train", tokenizer)


def test_cli_writes_jsonl_and_a_summary(
    needles: ModuleType,
    tokenizer: HFTokenizer,
    sets: Records,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "dev.jsonl"
    monkeypatch.setattr(needles, "default_tokenizer", lambda: tokenizer)
    monkeypatch.setattr(sys, "argv", ["needles.py", "--split", "dev", "--out", str(out)])
    needles.main()
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == sets["dev"]
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1
    assert re.fullmatch(r"dev: 12 documents \(8 with a planted fact, 4 without\), tokens \d+-\d+ -> .*\n", summary)
