"""Driver memory against corpus size: peak RSS of `mapreduce-llm plan` over 1k and 100k documents.

The driver reads documents lazily and keeps one document's plan at a time, so its peak memory should not
grow with the number of documents. This script writes two JSONL corpora of short documents (generated,
nothing fetched), runs `mapreduce-llm plan --json` on each in a fresh process, samples that process's RSS
every 20 ms, and prints the peaks and their ratio (baseline: the 1k-document run).

    python benchmarks/driver_memory.py [--small 1000] [--large 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

WORDS = [
    "the",
    "engine",
    "reads",
    "every",
    "chunk",
    "of",
    "each",
    "document",
    "and",
    "writes",
    "one",
    "summary",
    "per",
    "part",
    "before",
    "the",
    "reducer",
    "merges",
    "partial",
    "outputs",
    "into",
    "a",
    "final",
    "answer",
    "with",
    "provenance",
    "and",
    "token",
    "usage",
    "for",
    "every",
    "request",
]


def write_corpus(path: Path, count: int) -> None:
    rng = random.Random(count)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            text = " ".join(rng.choice(WORDS) for _ in range(120)) + "."
            fh.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")


def peak_rss(command: list[str]) -> tuple[float, float]:
    """Peak resident memory (MiB) of a command and its wall time (s)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {proc.returncode}")
    return peak / 2**20, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cli = [sys.executable, "-m", "mapreduce_llm.cli", "--log-level", "error", "plan", "--json", "--input"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (args.small, args.large):
            corpus = Path(tmp) / f"corpus-{count}.jsonl"
            write_corpus(corpus, count)
            mib, seconds = peak_rss([*cli, str(corpus)])
            rows.append((count, corpus.stat().st_size / 2**20, mib, seconds))
    print(f"{'documents':>10} {'input MiB':>10} {'peak RSS MiB':>13} {'seconds':>8}")
    for count, size, mib, seconds in rows:
        print(f"{count:>10,} {size:>10.1f} {mib:>13.1f} {seconds:>8.1f}")
    print(f"peak RSS ratio large/small: {rows[1][2] / rows[0][2]:.2f} for {rows[1][0] // rows[0][0]}x the documents")


if __name__ == "__main__":
    main()
