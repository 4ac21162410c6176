"""Driver memory against corpus size: peak RSS over 1k and 100k documents, for planning and for whole runs.

The driver should keep a bounded amount of state per job, whatever the number of documents. Each case runs
in a fresh process whose resident memory is sampled every 20 ms; the figures of the large corpus are printed
as a ratio against the small one (baseline), so "flat in corpus size" reads as ratios near 1.

- ``plan``: ``mapreduce-llm plan --json`` (read lazily, one plan at a time).
- ``run``: a real :class:`mapreduce_llm.job.Job` with an engine double (no vLLM) over short documents
  whose first one is slow: its engine call is held until every other document is answered, or until the job
  has sent the engine nothing for ``--stall`` seconds (it waits for the slow document: backpressure), or for
  ``--max-hold`` seconds. Results are written in input order, so everything finished behind the slow
  document waits in the results' reorder buffer; its peak size is printed beside the RSS.
- ``resume``: the same output folder again, every document finished, with document 0's text changed: one
  document recomputed (slow again), all others reused from the first run.

``--with-profiles`` runs ``run`` and ``resume`` monitored with embeddings on (``monitoring.embed``, through
:func:`mapreduce_llm.monitoring.monitored` with an embedding double: metrics, profiles, profile.jsonl).

Printed per case: the process's peak RSS; the job's own growth (peak RSS during ``Job.run``, read from the
kernel after resetting it, minus RSS before — loading the tokenizer peaks higher than the job and would hide
it); the reorder buffer's peak. The request cache is off (``--cache`` turns it on: one SQLite commit per
request, on disk, and slow). Runtime on 2 busy cores: about 4 ms per document per run, so the default
(1k and 100k, plan + run + resume) takes about 10 minutes; ``--large`` picks a smaller corpus.

    python benchmarks/driver_memory.py [--small 1000] [--large 100000] [--cases plan,run] [--with-profiles]

Corpora are generated (nothing fetched); the embedded model's tokenizer is the only model file read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "prompts"
PROMPT = "summarize@1.0.0"
MARKER = "Zanzibar"
"""A word only the slow document has; the engine double holds the requests whose prompt contains it."""

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


def write_corpus(path: Path, count: int, *, slow_first: bool = False, revision: int = 0) -> None:
    """``count`` documents of 120 words; with ``slow_first`` the first one carries :data:`MARKER` (and, from
    ``revision`` 1 on, a changed text)."""
    rng = random.Random(count)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            text = " ".join(rng.choice(WORDS) for _ in range(120)) + "."
            if i == 0 and slow_first:
                text = f"{MARKER} {text}" + (f" Revision {revision}." if revision else "")
            fh.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")


# ---- the child process of the run and resume cases ------------------------------------------------------------
class SlowFirstEngine:
    """Engine double: answers every request at once with a short summary, except those holding :data:`MARKER`,
    which wait until ``others`` requests are answered, or nothing was asked for ``stall_s``, or ``max_hold_s``.

    ``progress`` always rises (the held request is "decoding"), so the job's stall detection leaves it alone.
    """

    ANSWER = "The document describes how an engine maps chunks and reduces partial outputs into one answer."

    def __init__(self, tokenizer: Any, others: int, stall_s: float, max_hold_s: float) -> None:
        from mapreduce_llm.engines.base import EngineInfo

        self.tokenizer = tokenizer
        self.others = others
        self.stall_s = stall_s
        self.max_hold_s = max_hold_s
        self.answered = 0
        self.last_answer = time.monotonic()
        self.started = time.monotonic()
        self.released = "not held"
        self.held_s = 0.0
        self._answer_ids = tokenizer.encode_data(self.ANSWER)
        self._info = EngineInfo(model="driver-memory-double", max_model_len=1024, replicas=1)

    @property
    def info(self) -> Any:
        return self._info

    async def progress(self, request_id: str) -> int:
        return int((time.monotonic() - self.started) * 1000) + self.answered

    async def generate(self, request: Any) -> Any:
        from mapreduce_llm.engines.base import EngineOutput

        if MARKER in self.tokenizer.decode(request.prompt_token_ids):
            await self._hold()
        else:
            await asyncio.sleep(0)
            self.answered += 1
            self.last_answer = time.monotonic()
        n = min(len(self._answer_ids), request.max_tokens)
        return EngineOutput(
            request_id=request.request_id,
            text=self.ANSWER,
            prompt_tokens=len(request.prompt_token_ids),
            completion_tokens=n,
            cumulative_logprob=-0.2 * n,
            finish_reason="stop",
            seconds=0.0,
        )

    async def _hold(self) -> None:
        held = time.monotonic()
        self.last_answer = max(self.last_answer, held)
        while True:
            now = time.monotonic()
            if self.answered >= self.others:
                self.released = "all others answered"
                break
            if now - self.last_answer > self.stall_s:
                self.released = f"nothing else asked for {self.stall_s:g} s ({self.answered:,} others answered)"
                break
            if now - held > self.max_hold_s:
                self.released = f"max hold, {self.answered:,} others answered"
                break
            await asyncio.sleep(0.05)
        self.held_s = round(time.monotonic() - held, 1)


class HashEmbedder:
    """Embedding double for the profiling path: hashed bag of words in 384 dimensions, unit vectors."""

    def embed(self, texts: list[str]) -> Any:
        import numpy as np

        rows = np.zeros((len(texts), 384), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                rows[i, zlib.crc32(word.encode()) % 384] += 1.0
            norm = float(np.linalg.norm(rows[i]))
            if norm:
                rows[i] /= norm
        return rows


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs``), so that the job's own peak can be read after it
    (loading the tokenizer peaks higher than where it settles and would otherwise hide the job's peak)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_since_reset() -> float:
    """``VmHWM`` of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_job(
    corpus: Path,
    output: Path,
    documents: int,
    *,
    with_profiles: bool = False,
    stall_s: float = 5.0,
    max_hold_s: float = 600.0,
    cache: bool = False,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Run a Job over ``corpus`` into ``output`` with :class:`SlowFirstEngine`; what the driver kept, as a dict."""
    from mapreduce_llm import job as job_module
    from mapreduce_llm.config import JobSpec
    from mapreduce_llm.monitoring import JobMonitor, monitored
    from mapreduce_llm.prompts import select_prompts

    if tokenizer is None:
        from mapreduce_llm.model_store import ensure_embedded_model
        from mapreduce_llm.tokenization import HFTokenizer

        tokenizer = HFTokenizer(ensure_embedded_model())
    sinks: list[Any] = []

    class TrackedResultLog(job_module.ResultLog):
        """The job's result log, noting the reorder buffer's peak after every result."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.peak = 0
            sinks.append(self)

        def add(self, *args: Any, **kwargs: Any) -> None:
            super().add(*args, **kwargs)
            self.peak = max(self.peak, self.buffered)

    spec = JobSpec.model_validate(
        {
            "input": corpus,
            "output": output,
            "prompt": PROMPT,
            "prompts_dir": PROMPTS,
            "engine": {"max_model_len": 1024},
            "cache": {"enabled": cache},
            "monitoring": {"embed": with_profiles},
        }
    )
    engine = SlowFirstEngine(tokenizer, documents - 1, stall_s, max_hold_s)
    embedder = HashEmbedder()
    original = job_module.ResultLog
    job_module.ResultLog = TrackedResultLog
    try:
        with monitored(spec, embedder=embedder) as monitoring:
            observer = monitoring.observer
            prompts = select_prompts(PROMPT, PROMPTS)
            job = job_module.Job(spec, prompts, tokenizer, engine, observer=observer, embedder=embedder)
            rss_before = psutil.Process().memory_info().rss / 2**20
            hwm_reset = reset_peak_rss()
            started = time.perf_counter()
            summary = asyncio.run(job.run())
            seconds = time.perf_counter() - started
            job_peak = peak_rss_since_reset() if hwm_reset else None
    finally:
        job_module.ResultLog = original
    (sink,) = sinks
    return {
        "documents": summary.documents,
        "ok": summary.ok,
        "resumed": summary.resumed,
        "chunks": summary.chunks,
        "job_seconds": round(seconds, 1),
        "rss_before_job": round(rss_before, 1),
        "job_peak_rss": None if job_peak is None else round(job_peak, 1),
        "max_rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_buffered": sink.peak,
        "lead_peak_buffered": getattr(sink, "peak_buffered", None),
        "released": engine.released,
        "held_s": engine.held_s,
        "profiled": observer.profiles.profiled if isinstance(observer, JobMonitor) else None,
    }


def child(argv: list[str]) -> None:
    """``--child CORPUS OUTPUT DOCUMENTS STALL MAX_HOLD [--with-profiles] [--cache]``: one run, figures as JSON."""
    from mapreduce_llm.logs import configure_logging

    configure_logging("error", json=True)
    corpus, output, documents, stall, max_hold = argv[:5]
    figures = run_job(
        Path(corpus),
        Path(output),
        int(documents),
        with_profiles="--with-profiles" in argv,
        stall_s=float(stall),
        max_hold_s=float(max_hold),
        cache="--cache" in argv,
    )
    print(json.dumps(figures))


# ---- the parent: fresh processes, sampled ---------------------------------------------------------------------
def peak_rss(command: list[str]) -> tuple[float, float, str]:
    """Peak resident memory (MiB) of a command, its wall time (s) and its standard output."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE)
        watched = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode:
            raise SystemExit(f"{' '.join(command)} failed with exit code {proc.returncode}:\n{err[-3000:]}")
        out.seek(0)
        return peak / 2**20, time.perf_counter() - started, out.read().decode()


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000, help="documents of the baseline corpus")
    parser.add_argument("--large", type=int, default=100_000, help="documents of the large corpus")
    parser.add_argument("--cases", default="plan,run", help="comma-separated: plan, run (run includes resume)")
    parser.add_argument("--with-profiles", action="store_true", help="run/resume with the profiling observer on")
    parser.add_argument("--stall", type=float, default=5.0, help="release the slow document after this idle time")
    parser.add_argument("--max-hold", type=float, default=600.0, help="release the slow document after this")
    parser.add_argument("--cache", action="store_true", help="run/resume with the request cache on")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for corpora and outputs (default: system temp)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for count in (args.small, args.large):
            corpus = Path(tmp) / f"corpus-{count}.jsonl"
            if "plan" in cases:
                write_corpus(corpus, count)
                cli = [sys.executable, "-m", "mapreduce_llm.cli", "--log-level", "error", "plan", "--json"]
                mib, seconds, _ = peak_rss([*cli, "--input", str(corpus)])
                rows.append({"case": "plan", "documents": count, "rss": mib, "seconds": seconds})
                print(f"  plan {count:,}: {mib:.0f} MiB, {seconds:.0f} s", file=sys.stderr)
            if "run" in cases:
                rows += run_and_resume(corpus, Path(tmp) / f"out-{count}", count, args)
    report(rows, with_profiles=args.with_profiles)


def run_and_resume(corpus: Path, output: Path, count: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The run case, then the resume case in the same output folder, each in a fresh process."""
    rows = []
    for case, revision in (("run", 0), ("resume", 1)):
        write_corpus(corpus, count, slow_first=True, revision=revision)
        command = [sys.executable, __file__, "--child", str(corpus), str(output), str(count)]
        command += [str(args.stall), str(args.max_hold)]
        command += ["--with-profiles"] if args.with_profiles else []
        command += ["--cache"] if args.cache else []
        sampled, seconds, out = peak_rss(command)
        figures = json.loads(out.strip().splitlines()[-1])
        rss = max(sampled, figures["max_rss"])  # the kernel's high-water mark catches peaks between samples
        row = {"case": case, "documents": count, "rss": rss, "seconds": seconds, **figures}
        if figures["job_peak_rss"] is not None:
            row["growth"] = figures["job_peak_rss"] - figures["rss_before_job"]
        if args.with_profiles:
            with (output / "profile.jsonl").open(encoding="utf-8") as fh:
                row["note"] = f"profile.jsonl {sum(1 for _ in fh):,} lines"
        rows.append(row)
        print(f"  {case} {count:,}: {rss:.0f} MiB, {seconds:.0f} s, {figures}", file=sys.stderr)
    for leftover in output.iterdir():
        leftover.unlink()  # the large case needs the disk more than this folder
    return rows


def report(rows: list[dict[str, Any]], *, with_profiles: bool) -> None:
    """One line per case and corpus; ratios against the same case on the smallest corpus."""
    smallest = min(r["documents"] for r in rows)
    base = {r["case"]: r for r in rows if r["documents"] == smallest}

    def ratio(r: dict[str, Any], key: str) -> str:
        value, reference = r.get(key), base[r["case"]].get(key)
        return f"{value / reference:.2f}" if value is not None and reference else "-"

    print(f"driver memory{' (profiling on)' if with_profiles else ''}; ratios against {smallest:,} documents")
    print(
        f"{'case':<7} {'documents':>10} {'peak RSS MiB':>13} {'ratio':>6} {'job growth MiB':>15} {'ratio':>6} "
        f"{'peak buffered':>14} {'ratio':>7} {'seconds':>8}  notes"
    )
    for r in rows:
        growth = f"{r['growth']:>15.1f}" if "growth" in r else f"{'-':>15}"
        buffered = f"{r['peak_buffered']:>14,}" if "peak_buffered" in r else f"{'-':>14}"
        notes = []
        if "released" in r:
            notes.append(f"slow document held {r['held_s']} s, released: {r['released']}")
        if r.get("resumed"):
            notes.append(f"{r['resumed']:,} resumed")
        if r.get("note"):
            notes.append(r["note"])
        print(
            f"{r['case']:<7} {r['documents']:>10,} {r['rss']:>13.1f} {ratio(r, 'rss'):>6} {growth} "
            f"{ratio(r, 'growth'):>6} {buffered} {ratio(r, 'peak_buffered'):>7} {r['seconds']:>8.1f}  "
            + "; ".join(notes)
        )


if __name__ == "__main__":
    main()
