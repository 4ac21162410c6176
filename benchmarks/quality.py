#!/usr/bin/env python3
"""Answer quality on long documents: truncation vs map-reduce vs calibrated map-reduce vs re-retrieval.

The set (benchmarks/needles.py, test split): 12 documents of ~11k tokens built from the example corpus
(Python documentation), each with one fictional fact planted at a position from 5% to 95%, and 4 documents
without any fact, asked a question they cannot answer. The facts are invented, so the model cannot answer
from memory; the thresholds were calibrated on the dev split (benchmarks/calibrate.py), whose facts and text
are disjoint from these.

Methods, all with the embedded SmolLM2-135M-Instruct on one vLLM engine (2048-token context, chunks of at
most 1200 tokens):

* truncation      — the document cut to its first chunk (one context window), free-text qa@1.0.0, and
                    the same with calibrated qa@2.0.0;
* map-reduce      — every chunk mapped with free-text qa@1.0.0, the non-"NOT FOUND" answers reduced;
* structured      — qa@2.0.0 records with evidence checks, but without the calibrated thresholds;
* calibrated      — qa@2.0.0 with the thresholds of prompts/qa/2.0.0.calibration.yaml, no re-retrieval;
* + re-retrieval  — the same, re-retrieving when the final answer is under the calibrated confidence;
* extract@2.0.0   — the same two with the facts asked as a named ``field`` (calibrated on the dev split too).

The three qa@2.0.0 jobs share one request cache, so their map calls run once.

Scoring: a needle question is right when the planted answer occurs in the output (case-insensitive); a
document without the fact is right when the output is "NOT FOUND".

Run
    python benchmarks/quality.py        # ~15 min on 2 CPU cores; writes out/quality/quality.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_jobs import ROOT, needles, run, started_engine, write_jsonl

from mapreduce_llm.config import ChunkingConfig
from mapreduce_llm.documents import Document
from mapreduce_llm.engines.vllm_ray import model_folder
from mapreduce_llm.planning import plan_document
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.results import DocumentResult
from mapreduce_llm.tokenization import HFTokenizer


def truncated(records: list[dict[str, object]], max_model_len: int, max_chunk_tokens: int) -> list[dict[str, object]]:
    """Each document cut to the text of its first chunk: what fits one map call of qa@1.0.0."""
    from answer_jobs import engine_config

    tokenizer = HFTokenizer(model_folder(engine_config()))
    prompt = select_prompts("qa@1.0.0", ROOT / "prompts").base
    out = []
    for r in records:
        doc = Document(id=str(r["id"]), text=str(r["text"]), question=str(r["question"]), source="needles")
        plan = plan_document(doc, prompt, tokenizer, max_model_len, ChunkingConfig(max_chunk_tokens=max_chunk_tokens))
        first = plan.chunks[0]
        out.append({**r, "text": doc.text[first.start : first.end]})
    return out


def score(results: list[DocumentResult]) -> dict[str, object]:
    """Accuracy on needle questions and on documents without the fact."""
    is_correct = needles().is_correct
    needle = [r for r in results if r.metadata.get("answer") is not None]
    absent = [r for r in results if r.metadata.get("answer") is None]
    right_needle = sum(is_correct(r.metadata["answer"], r.output or "") for r in needle)
    right_absent = sum(is_correct(None, r.output or "") for r in absent)
    return {
        "needle_correct": right_needle,
        "needle_total": len(needle),
        "accuracy": round(right_needle / len(needle), 3) if needle else None,
        "not_found_correct": right_absent,
        "not_found_total": len(absent),
        "reretrieved": sum(bool(r.reretrieval and r.reretrieval.triggered) for r in results),
        "errors": sum(r.status == "error" for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "quality")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument(
        "--only", type=int, nargs="*", help="run only these methods (0-based indices in the order above)"
    )
    args = parser.parse_args()
    from answer_jobs import MAX_CHUNK_TOKENS, MAX_MODEL_LEN

    records = needles().build_needle_set(args.split)
    full = write_jsonl(records, args.out / f"{args.split}.jsonl")
    short = write_jsonl(truncated(records, MAX_MODEL_LEN, MAX_CHUNK_TOKENS), args.out / f"{args.split}-truncated.jsonl")
    bare = args.out / "prompts-uncalibrated"
    shutil.rmtree(bare, ignore_errors=True)
    shutil.copytree(ROOT / "prompts", bare, ignore=shutil.ignore_patterns("*.calibration.yaml"))
    # Engine outputs are cached across runs (outside the job folders); results are always recomputed.
    qa1_cache, shared_cache = args.out / "qa1-cache.sqlite", args.out / "qa2-cache.sqlite"
    extract_cache = args.out / "extract2-cache.sqlite"
    methods: list[tuple[str, Path, str, dict[str, object]]] = [
        ("truncation (qa@1.0.0)", short, "qa@1.0.0", {"retrieval": {"similarity": False}, "cache": qa1_cache}),
        (
            "truncation (qa@2.0.0, calibrated)",
            short,
            "qa@2.0.0",
            {"retrieval": {"reretrieve": False}, "cache": shared_cache},
        ),
        ("map-reduce (qa@1.0.0)", full, "qa@1.0.0", {"retrieval": {"similarity": False}, "cache": qa1_cache}),
        (
            "structured, uncalibrated (qa@2.0.0)",
            full,
            "qa@2.0.0",
            {"prompts_dir": bare, "retrieval": {"reretrieve": False}, "cache": shared_cache},
        ),
        (
            "calibrated map-reduce (qa@2.0.0)",
            full,
            "qa@2.0.0",
            {"retrieval": {"reretrieve": False}, "cache": shared_cache},
        ),
        ("+ re-retrieval (qa@2.0.0)", full, "qa@2.0.0", {"retrieval": {"reretrieve": True}, "cache": shared_cache}),
        # The same facts asked as extract's named `field` instead of a question.
        (
            "calibrated map-reduce (extract@2.0.0)",
            full,
            "extract@2.0.0",
            {"retrieval": {"reretrieve": False}, "cache": extract_cache},
        ),
        (
            "+ re-retrieval (extract@2.0.0)",
            full,
            "extract@2.0.0",
            {"retrieval": {"reretrieve": True}, "cache": extract_cache},
        ),
    ]
    rows = []
    with started_engine() as engine:
        for i, (name, data, prompt, options) in enumerate(methods):
            if args.only is not None and i not in args.only:
                continue
            shutil.rmtree(args.out / f"method-{i}", ignore_errors=True)
            started = time.perf_counter()
            summary, results = run(engine, data, args.out / f"method-{i}", prompt, **options)  # type: ignore[arg-type]
            row = {
                "method": name,
                **score(results),
                "seconds": round(time.perf_counter() - started, 1),
                "requests_sent": summary.requests_sent,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    name = "quality.json" if args.only is None else f"quality-{'-'.join(map(str, args.only))}.json"
    (args.out / name).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print()
    print('| method | needle accuracy | "not found" right | re-retrieved | engine requests | seconds |')
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['method']} | {row['needle_correct']}/{row['needle_total']} ({row['accuracy']:.0%}) | "
            f"{row['not_found_correct']}/{row['not_found_total']} | {row['reretrieved']} | {row['requests_sent']} | "
            f"{row['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
