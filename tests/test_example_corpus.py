"""`make run`'s default input (benchmarks/corpus/example): what build_example.py makes, and a job with parts."""

from __future__ import annotations

import json

from click.testing import CliRunner

from mapreduce_llm.cli import cli
from tests.conftest import CORPUS, ROOT, benchmark_module

EXAMPLE = ROOT / "benchmarks" / "corpus" / "example"


def test_the_example_is_what_the_builder_makes_of_the_corpus() -> None:
    """Each example file is its corpus document's excerpt: whole paragraphs, no open code fence, under the limit."""
    build = benchmark_module("corpus/build_example")
    names = sorted(p.name for p in EXAMPLE.glob("*.md"))
    assert names == sorted(p.name for p in CORPUS.glob("*.md"))
    for name in names:
        text = (EXAMPLE / name).read_text(encoding="utf-8")
        assert text == build.excerpt((CORPUS / name).read_text(encoding="utf-8")), name
        assert len(text) <= build.LIMIT and text.count("```") % 2 == 0
        assert (CORPUS / name).read_text(encoding="utf-8").startswith(text.rstrip("\n"))


def test_the_default_example_has_several_chunks_and_a_reduce_per_document() -> None:
    """At the default context each example document needs more than one map call, so the job shows a reduce."""
    result = CliRunner().invoke(cli, ["plan", "--input", str(EXAMPLE), "--prompt", "summarize", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 4 and all(row["status"] == "ok" for row in rows)
    assert all(2 <= len(row["chunks"]) <= 4 for row in rows), [len(row["chunks"]) for row in rows]
