"""benchmarks/driver_memory.py's run and resume cases, on a tiny corpus, in this process."""

from __future__ import annotations

from pathlib import Path

from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import benchmark_module


def test_run_case_holds_the_first_document_and_reports_the_reorder_buffer(
    tokenizer: HFTokenizer, tmp_path: Path
) -> None:
    """The slow first document is held until the others are answered; what finished behind it was buffered."""
    bench = benchmark_module("driver_memory")
    corpus = tmp_path / "corpus.jsonl"
    bench.write_corpus(corpus, 12, slow_first=True)
    figures = bench.run_job(corpus, tmp_path / "out", 12, tokenizer=tokenizer, with_profiles=True)
    assert (figures["documents"], figures["ok"], figures["chunks"], figures["profiled"]) == (12, 12, 12, 12)
    assert figures["released"] == "all others answered"
    assert 1 <= figures["peak_buffered"] <= 11
    # max_rss is the kernel's high-water mark since the benchmark reset it, so it may sit below the RSS before the job
    assert figures["max_rss"] > 0 and figures["rss_before_job"] > 0


def test_resume_case_reuses_every_unchanged_document(tokenizer: HFTokenizer, tmp_path: Path) -> None:
    """A second run into the same folder with document 0 changed reuses the other documents' results."""
    bench = benchmark_module("driver_memory")
    corpus = tmp_path / "corpus.jsonl"
    bench.write_corpus(corpus, 6, slow_first=True)
    bench.run_job(corpus, tmp_path / "out", 6, tokenizer=tokenizer)
    bench.write_corpus(corpus, 6, slow_first=True, revision=1)
    figures = bench.run_job(corpus, tmp_path / "out", 6, tokenizer=tokenizer, stall_s=0.5)
    assert figures["documents"] == 6 and figures["resumed"] >= 5
