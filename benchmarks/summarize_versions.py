"""Two summarize versions on the same documents: output length, calls cut off at the output cap, wall time.

``summarize@1.0.0`` samples with ``repetition_penalty: 1.15``. vLLM applies the penalty to every token already
in the sequence, the prompt's included, so the model is pushed away from the document's own words and most
calls run on until ``reserved_output_tokens``. This script runs the baseline (1.0.0) and a candidate version
as real jobs (``mapreduce_llm.runner.run_job``, the path of ``mapreduce-llm run``) on one vLLM engine in Ray:

- input: ``benchmarks/corpus/example`` (the default ``make run`` input: four ~4,500-token documents, three
  chunks and one reduce each at the default 2,048-token context);
- each job into a fresh output folder, without the request cache; ``--rounds`` (default 2) alternate the
  versions' order, so neither always runs first (the engine's first jobs run cold: on this machine the first
  round took twice the second's time) or always meets vLLM's prefix cache warm;
- every engine call is heard through the job's observer: its stage, ``max_tokens`` (the version's reserve)
  and the engine output's completion tokens and ``finish_reason`` (``length``: cut off at the cap).

Prints per version (means over rounds): job seconds, engine requests, completion tokens, mean output tokens per
call by stage (map / collapse / reduce) and their 90th percentile over all calls, the share of calls that hit
the cap, the final summaries' length, and two quality checks: the share of each document's salient terms (its
ten highest tf-idf words among the input's documents) found in its final summary, and the repeated 4-gram rate
of the final summaries (share of word 4-grams that occur earlier in the same summary: looping text). Then each
version's ratios against the baseline, measured in the same run.

    python benchmarks/summarize_versions.py [1.0.0 1.2.0] [--rounds 2]   # about 4 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "benchmarks" / "corpus" / "example"
STAGES = ("map", "collapse", "reduce")
SALIENT_TERMS = 10
"""Terms per document in the quality check; words of at least four letters, not in ``STOPWORDS``."""
# fmt: off
STOPWORDS = frozenset({
    "also", "been", "being", "could", "does", "each", "from", "have", "into", "more", "most", "must", "only",
    "other", "should", "some", "such", "than", "that", "their", "them", "then", "there", "these", "they", "this",
    "those", "used", "using", "were", "what", "when", "where", "which", "will", "with", "would", "your",
})
# fmt: on


@dataclass
class Calls:
    """Every engine call of one job, as its observer heard it."""

    tokens: dict[str, list[int]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    """Completion tokens of each call, by stage."""
    capped: int = 0
    """Calls that stopped at their ``max_tokens`` (finish reason ``length``)."""
    failed: int = 0
    """Calls that ended without an output."""

    def request_done(self, prompt: Any, request: Any, output: Any) -> None:
        if output is None:
            self.failed += 1
            return
        self.tokens.setdefault(request.stage, []).append(output.completion_tokens)
        if output.finish_reason == "length" or output.completion_tokens >= request.max_tokens:
            self.capped += 1

    def document_done(self, result: Any, plan: Any) -> None:
        pass

    def job_done(self, summary: Any) -> None:
        pass

    @property
    def count(self) -> int:
        return sum(len(tokens) for tokens in self.tokens.values())


@dataclass
class Run:
    """What one job of one version measured."""

    seconds: float
    requests: int
    completion_tokens: int
    calls: Calls
    summaries: dict[str, str]
    """Final output per document id."""


def words(text: str) -> list[str]:
    """Lower-case words of a text (identifiers included)."""
    return re.findall(r"[a-z][a-z0-9_]+", text.lower())


def salient_terms(texts: dict[str, str]) -> dict[str, set[str]]:
    """Each document's ``SALIENT_TERMS`` highest tf-idf words (idf over the input's documents)."""
    counts = {doc: Counter(w for w in words(text) if len(w) >= 4 and w not in STOPWORDS) for doc, text in texts.items()}
    df = Counter(w for c in counts.values() for w in c)
    n = len(counts)
    terms = {}
    for doc, c in counts.items():
        scored = sorted(c, key=lambda w: (-c[w] * math.log((1 + n) / df[w]), w))
        terms[doc] = set(scored[:SALIENT_TERMS])
    return terms


def repeated_ngram_rate(text: str, n: int = 4) -> float:
    """Share of the text's word n-grams that already occurred earlier in it (0: no repeats)."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def read_texts(input_path: Path) -> dict[str, str]:
    from mapreduce_llm.documents import Document, read_documents

    return {d.id: d.text for d in read_documents(input_path, max_bytes=10**9) if isinstance(d, Document)}


def run_version(engine: Any, input_path: Path, output: Path, version: str, overrides: dict[str, Any]) -> Run:
    """One job of ``summarize@version`` into a fresh ``output`` folder, no request cache."""
    from mapreduce_llm.config import apply_overrides, build_spec
    from mapreduce_llm.results import DocumentResult
    from mapreduce_llm.runner import run_job

    shutil.rmtree(output, ignore_errors=True)
    spec = build_spec(
        {
            "input": str(input_path),
            "output": str(output),
            "prompt": f"summarize@{version}",
            "prompts_dir": str(ROOT / "prompts"),
            "cache": {"enabled": False},
        }
    )
    spec = apply_overrides(spec, overrides)
    calls = Calls()
    summary = run_job(spec, engine=engine, observer=calls)
    results = [
        DocumentResult.model_validate_json(line)
        for line in (output / "results.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return Run(
        seconds=summary.seconds,
        requests=sum(summary.requests.values()),
        completion_tokens=summary.completion_tokens,
        calls=calls,
        summaries={r.id: r.output or "" for r in results},
    )


def figures(runs: list[Run], terms: dict[str, set[str]]) -> dict[str, float]:
    """Means over a version's rounds."""

    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else float("nan")

    out = {
        "job seconds": mean([r.seconds for r in runs]),
        "requests": mean([r.requests for r in runs]),
        "completion tokens": mean([r.completion_tokens for r in runs]),
    }
    for stage in STAGES:
        out[f"{stage} tokens/call"] = mean([t for r in runs for t in r.calls.tokens.get(stage, [])])
    every_call = [t for r in runs for tokens in r.calls.tokens.values() for t in tokens]
    out["p90 tokens/call"] = (
        statistics.quantiles(every_call, n=10, method="inclusive")[-1] if len(every_call) > 1 else float("nan")
    )
    out["calls at cap"] = mean([r.calls.capped / r.calls.count for r in runs if r.calls.count])
    summaries = [(doc, text) for r in runs for doc, text in r.summaries.items()]
    out["summary words"] = mean([len(words(text)) for _, text in summaries])
    out["salient terms kept"] = mean(
        [len(terms[doc] & set(words(text))) / len(terms[doc]) for doc, text in summaries if terms.get(doc)]
    )
    out["repeated 4-grams"] = mean([repeated_ngram_rate(text) for _, text in summaries])
    return out


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME:KEY=VALUE`` options: job spec overrides for one arm's jobs."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        name, _, setting = item.partition(":")
        key, _, value = setting.partition("=")
        overrides.setdefault(name, {})[key] = value
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "arms",
        nargs="*",
        default=["1.0.0", "1.2.0"],
        metavar="[NAME=]VERSION",
        help="summarize versions, baseline first; a NAME tells two arms of one version apart (with --set)",
    )
    parser.add_argument("--input", type=Path, default=EXAMPLE)
    parser.add_argument("--output", type=Path, default=ROOT / "out" / "summarize-versions")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="job spec override for one arm, e.g. rp1=1.0.0 --set rp1:sampling.repetition_penalty=1.0",
    )
    args = parser.parse_args()
    overrides = parse_overrides(args.overrides)
    versions = dict(arm.split("=", 1) if "=" in arm else (arm, arm) for arm in args.arms)

    from mapreduce_llm.config import VLLMEngineConfig
    from mapreduce_llm.logs import configure_logging
    from mapreduce_llm.runner import shared_engine

    configure_logging(level="warning")
    terms = salient_terms(read_texts(args.input))
    runs: dict[str, list[Run]] = {name: [] for name in versions}
    with shared_engine(VLLMEngineConfig()) as engine:
        for round_ in range(args.rounds):
            order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
            for name in order:
                output = args.output / f"{round_ + 1}-{name}"
                run = run_version(engine, args.input, output, versions[name], overrides.get(name, {}))
                runs[name].append(run)
                print(
                    f"round {round_ + 1} {name}: {run.seconds:.1f} s, {run.requests} requests, "
                    f"{run.completion_tokens} completion tokens, {run.calls.capped} of {run.calls.count} calls "
                    f"at the cap",
                    flush=True,
                )

    table = {name: figures(name_runs, terms) for name, name_runs in runs.items()}
    baseline, *others = versions
    rows = list(table[baseline])
    print(f"\n{'summarize@':22}" + "".join(f"{name:>12}" for name in versions))
    for row in rows:
        print(f"{row:22}" + "".join(f"{table[name][row]:12.3f}" for name in versions))
    print(f"\nratios against {baseline} (same run):")
    for name in others:
        ratios = ", ".join(
            f"{row} {table[name][row] / table[baseline][row]:.2f}"
            for row in rows
            if table[baseline][row] and not math.isnan(table[baseline][row])
        )
        print(f"{name}: {ratios}")


if __name__ == "__main__":
    main()
