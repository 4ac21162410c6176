"""P1: what pipelining and scheduling buy — the job against a level-by-level baseline, on one engine, same work.

One vLLM engine in a Ray actor (``open_engine``, the job's own engine type) is started and warmed once; every arm
sends its requests through it, with the same limits (``engine.max_concurrent_requests`` slots) and the same
request shaping: every request generates exactly ``--tokens`` tokens (``ignore_eos``), so all arms do identical
work whatever the model writes. The arms:

(a)  **job**: ``mapreduce_llm.job.Job`` as users run it, with its scheduling: the longest of the documents read
     ahead starts first (``limits.read_ahead``), collapse/reduce calls go ahead of map calls (request priority,
     ``engine.scheduling_policy: priority``), each document reduces as soon as its own maps are back.
(a0) **job, no scheduling**: the same job with ``read_ahead: 0`` (input order) and one priority for every
     request (first come, first served) — what pipelining alone buys.
(b)  **levels**: the same plans and reduce tree, one level at a time with a barrier: every document's map calls,
     then every document's level-1 collapse/reduce calls, and so on (``asyncio.gather`` per level).

Workloads (``limits.max_documents_in_flight`` and the engine slots are the same for every arm):

- **W1** even documents (the control);
- **W2** uneven: one long document (two collapse levels) last in the input, many short ones; fewer engine slots
  than map calls;
- **W3** documents arriving over time: the input yields one document every ``--arrival-s`` seconds; (b), a
  batch, starts when the last has arrived; every arm's clock starts with the first read.

Each workload: ``--runs`` rounds, the arms in alternating order (forward, backward, ...), medians. Besides the
times: requests per stage, generated tokens, and the engine's steps and mean running batch over the run (vLLM's
scheduler stats, from the replica's :meth:`step_stats`). Prints (a)/(b), (a0)/(b) and (a)/(a0) per workload.
The response cache is off in every arm (each job writes a new output folder anyway).

    python benchmarks/pipeline_vs_levels.py [--tokens 16] [--runs 3] [--max-model-len 512] [--eager]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

from mapreduce_llm import job as job_module
from mapreduce_llm.config import ChunkingConfig, JobSpec, VLLMEngineConfig
from mapreduce_llm.documents import Document
from mapreduce_llm.engines.base import MAP_PRIORITY, EngineRequest, StageName
from mapreduce_llm.engines.client import EngineClient
from mapreduce_llm.model_store import ensure_embedded_model
from mapreduce_llm.planning import DocumentPlan, plan_document
from mapreduce_llm.prompts import PromptRef, resolve_prompt
from mapreduce_llm.reduce import Partial, joined_ids, joined_size, pack, resplit
from mapreduce_llm.tokenization import HFTokenizer

CORPUS = Path(__file__).resolve().parent / "corpus" / "docs"
PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
ARMS = ("(a) job", "(a0) job, no scheduling", "(b) levels")


@dataclasses.dataclass
class Workload:
    """Documents, the limits every arm runs them with, and the delay between two documents' arrivals."""

    name: str
    docs: list[Document]
    max_documents_in_flight: int
    max_concurrent_requests: int
    max_chunk_tokens: int
    arrival_s: float = 0.0


@dataclasses.dataclass
class Run:
    """One arm's run of a workload."""

    seconds: float
    requests: Counter[str]
    completion_tokens: int
    steps: int
    running: int
    """Sum over the engine steps of the requests running in them."""


class FixedLengthClient(EngineClient):
    """Every request generates exactly ``tokens`` tokens (vLLM's ``ignore_eos``); ``priorities`` False gives every
    request the map calls' priority, i.e. first come, first served."""

    def __init__(self, *args: Any, tokens: int, priorities: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tokens = tokens
        self.priorities = priorities

    def request(self, stage: StageName, prompt_token_ids: list[int], **kwargs: Any) -> EngineRequest:
        request = super().request(stage, prompt_token_ids, **kwargs)
        priority = request.priority if self.priorities else MAP_PRIORITY
        return dataclasses.replace(request, max_tokens=self.tokens, ignore_eos=True, priority=priority)


def arriving(docs: list[Document], every_s: float) -> Callable[..., Iterator[Document]]:
    """A stand-in for ``read_documents`` that yields ``docs``, one every ``every_s`` seconds (the first at once)."""

    def read(*_args: Any, **_kwargs: Any) -> Iterator[Document]:
        for i, doc in enumerate(docs):
            if i:
                time.sleep(every_s)
            yield doc

    return read


def corpus_docs(sizes: list[int], prefix: str) -> list[Document]:
    """Documents of the given character sizes, cut from the example corpus (each from its own place)."""
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(CORPUS.glob("*.md")))
    docs, at = [], 0
    for i, size in enumerate(sizes):
        if at + size > len(text):
            at = 0
        docs.append(Document(id=f"{prefix}{i}", text=text[at : at + size], source=f"{prefix}{i}"))
        at += size
    return docs


def workloads(args: argparse.Namespace) -> list[Workload]:
    short, long = args.short_chars, args.long_chars
    w2 = corpus_docs([short] * args.w2_short + [long], "w2-")  # the long one last: input order is its worst case
    w3 = corpus_docs([args.arriving_chars] * 6, "w3-")
    return [
        Workload("W1", corpus_docs([args.even_chars] * 4, "w1-"), 4, args.slots, args.max_chunk_tokens),
        Workload("W2", w2, 4, args.slots, args.max_chunk_tokens),
        Workload("W3", w3, 4, args.slots, args.max_chunk_tokens, arrival_s=args.arrival_s),
    ]


async def run_job(
    engine: Any, work: Workload, spec: JobSpec, prompt: PromptRef, tokenizer: HFTokenizer, tokens: int, scheduled: bool
) -> tuple[float, Counter[str], int]:
    """(a) or (a0): the job over ``work``'s input; seconds from the first read, requests per stage, tokens."""
    limits = spec.limits.model_copy(update={"read_ahead": spec.limits.read_ahead if scheduled else 0})
    spec = spec.model_copy(update={"limits": limits})
    client = FixedLengthClient(engine, spec.engine, job_id=spec.resolved_job_id, tokens=tokens, priorities=scheduled)
    job = job_module.Job(spec, prompt, tokenizer, engine, client=client)
    arrivals = arriving(work.docs, work.arrival_s) if work.arrival_s else None
    reading = mock.patch.object(job_module, "read_documents", arrivals) if arrivals else contextlib.nullcontext()
    with reading:
        started = time.perf_counter()
        summary = await job.run()
        seconds = time.perf_counter() - started
    assert summary.ok == len(work.docs), summary
    return seconds, Counter(summary.requests), summary.completion_tokens


async def run_levels(
    engine: Any, work: Workload, spec: JobSpec, prompt: PromptRef, tokenizer: HFTokenizer, tokens: int
) -> tuple[float, Counter[str], int]:
    """(b): the same plans and reduce tree, one level at a time with a barrier between levels."""
    client = FixedLengthClient(engine, spec.engine, job_id=f"levels-{time.time_ns()}", tokens=tokens)
    requests: Counter[str] = Counter()
    completion = 0

    async def call(stage: StageName, ids: list[int]) -> Partial:
        nonlocal completion
        reply = await client.generate(
            client.request(stage, ids, max_tokens=tokens, temperature=0.0, top_p=1.0, repetition_penalty=rp), prompt
        )
        requests[stage] += 1
        completion += reply.output.completion_tokens
        text = reply.output.text.strip()
        return Partial(text, tuple(tokenizer.encode_data(text)), ())

    sampling = prompt.file.sampling
    rp = sampling.repetition_penalty
    started = time.perf_counter()
    reader = arriving(work.docs, work.arrival_s) if work.arrival_s else None
    docs = work.docs if reader is None else await asyncio.to_thread(lambda: list(reader()))
    plans: list[DocumentPlan] = [
        await asyncio.to_thread(
            plan_document,
            d,
            prompt,
            tokenizer,
            spec.engine.max_model_len,
            spec.chunking,
            prompt.file.reserved_output_tokens,
        )
        for d in docs
    ]
    maps = [(i, c.token_ids) for i, p in enumerate(plans) for c in p.chunks]
    outs = await asyncio.gather(*(call("map", plans[i].map_template.request_ids(ids)) for i, ids in maps))
    items: dict[int, list[Partial]] = {i: [] for i in range(len(plans))}
    for (i, _), out in zip(maps, outs, strict=True):
        items[i].append(out)
    open_docs = {i for i, p in enumerate(plans) if len(p.chunks) > 1}
    while open_docs:
        batch: list[tuple[int, StageName, list[int]]] = []
        for i in sorted(open_docs):
            plan, sep = plans[i], list(plans[i].separator_ids)
            if joined_size(items[i], len(sep)) <= plan.capacity("reduce"):
                batch.append((i, "reduce", plan.reduce_template.request_ids(joined_ids(items[i], sep))))
                continue
            fitted = [q for p in items[i] for q in resplit(p, plan.capacity("collapse"), tokenizer)]
            for group in pack(fitted, plan.capacity("collapse"), len(sep)):
                batch.append((i, "collapse", plan.collapse_template.request_ids(joined_ids(group, sep))))
        outs = await asyncio.gather(*(call(stage, ids) for _, stage, ids in batch))
        nxt: dict[int, list[Partial]] = {i: [] for i in open_docs}
        for (i, stage, _), out in zip(batch, outs, strict=True):
            if stage == "reduce":
                open_docs.discard(i)
            else:
                nxt[i].append(out)
        items.update({i: v for i, v in nxt.items() if i in open_docs})
    return time.perf_counter() - started, requests, completion


async def measure(engine: Any, arm: str, work: Workload, folder: Path, tokenizer: HFTokenizer, tokens: int) -> Run:
    """One run of ``arm`` on ``work``, with the engine's steps over it."""
    spec = JobSpec.model_validate(
        {
            "input": folder / f"{work.name}.jsonl",
            "output": folder / f"out-{time.time_ns()}",
            "prompt": "summarize",
            "prompts_dir": PROMPTS,
            "engine": engine.config.model_dump(),
            "cache": {"enabled": False},
            "limits": {"max_documents_in_flight": work.max_documents_in_flight},
            "chunking": {"max_chunk_tokens": work.max_chunk_tokens},
        }
    )
    prompt = resolve_prompt(spec.prompt, PROMPTS)
    actor = engine.actors[0]
    steps0, running0 = await actor.step_stats.remote()
    if arm == ARMS[2]:
        seconds, requests, completion = await run_levels(engine, work, spec, prompt, tokenizer, tokens)
    else:
        scheduled = arm == ARMS[0]
        seconds, requests, completion = await run_job(engine, work, spec, prompt, tokenizer, tokens, scheduled)
    steps1, running1 = await actor.step_stats.remote()
    return Run(seconds, requests, completion, steps1 - steps0, running1 - running0)


def report(work: Workload, runs: dict[str, list[Run]], tokenizer: HFTokenizer, spec_len: int) -> dict[str, float]:
    """Print one workload's table; returns the median seconds per arm."""
    chunks = [len(tokenizer.encode_data(d.text)) for d in work.docs]
    print(
        f"\n{work.name}: {len(work.docs)} documents ({min(chunks):,}-{max(chunks):,} tokens), "
        f"max_documents_in_flight {work.max_documents_in_flight}, max_concurrent_requests "
        f"{work.max_concurrent_requests}" + (f", one document every {work.arrival_s:g} s" if work.arrival_s else "")
    )
    columns = f"{'map/collapse/reduce':>19} {'tokens':>6} {'steps':>5} {'batch':>5}"
    print(f"  {'arm':26} {'median s':>8}  {'runs s':24} {columns}")
    medians = {}
    for arm, rs in runs.items():
        medians[arm] = statistics.median(r.seconds for r in rs)
        last = rs[-1]
        req = last.requests
        steps = statistics.median(r.steps for r in rs)
        batch = statistics.median(r.running / r.steps if r.steps else 0.0 for r in rs)
        times = ", ".join(f"{r.seconds:.1f}" for r in rs)
        print(
            f"  {arm:26} {medians[arm]:8.1f}  {times:24} {req['map']:>7} / {req['collapse']:>2} / {req['reduce']:>2}"
            f"   {last.completion_tokens:>6} {steps:>5.0f} {batch:>5.2f}"
        )
    a, a0, b = (medians[arm] for arm in ARMS)
    print(f"  ratio (a)/(b) {a / b:.2f}   (a0)/(b) {a0 / b:.2f}   (a)/(a0) {a / a0:.2f}")
    return medians


async def main_async(args: argparse.Namespace) -> None:
    from mapreduce_llm.engines import open_engine

    tokenizer = HFTokenizer(ensure_embedded_model())
    works = workloads(args)
    config = VLLMEngineConfig(
        max_model_len=args.max_model_len,
        max_concurrent_requests=args.slots,
        engine_kwargs={"enforce_eager": True} if args.eager else {},
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for work in works:
            rows = [{"id": d.id, "text": d.text} for d in work.docs]
            (folder / f"{work.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        started = time.perf_counter()
        async with open_engine(config) as engine:
            print(f"engine started and warmed in {time.perf_counter() - started:.0f} s; config: {args}")
            for arm in ARMS:  # warm-up: one unmeasured run of each arm on the control workload
                await measure(engine, arm, works[0], folder, tokenizer, args.tokens)
            results: dict[str, dict[str, float]] = {}
            for work in works:
                runs: dict[str, list[Run]] = {arm: [] for arm in ARMS}
                for r in range(args.runs):
                    for arm in ARMS if r % 2 == 0 else tuple(reversed(ARMS)):
                        runs[arm].append(await measure(engine, arm, work, folder, tokenizer, args.tokens))
                results[work.name] = report(work, runs, tokenizer, args.max_model_len)
    print("\nworkload  (a)/(b)  (a0)/(b)  (a)/(a0)   targets: W2 (a)/(b) <= 0.90, W1 (a)/(b) <= 1.00")
    for name, m in results.items():
        a, a0, b = (m[arm] for arm in ARMS)
        print(f"{name:8}  {a / b:7.2f}  {a0 / b:8.2f}  {a / a0:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=32, help="tokens every request generates")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--max-chunk-tokens", type=int, default=128, help="chunking.max_chunk_tokens")
    parser.add_argument("--slots", type=int, default=8, help="engine.max_concurrent_requests")
    parser.add_argument("--even-chars", type=int, default=1_400, help="W1 document size")
    parser.add_argument("--short-chars", type=int, default=600, help="W2 short document size")
    parser.add_argument("--long-chars", type=int, default=12_000, help="W2 long document size")
    parser.add_argument("--w2-short", type=int, default=6, help="W2 short documents")
    parser.add_argument("--arriving-chars", type=int, default=1_000, help="W3 document size")
    parser.add_argument("--arrival-s", type=float, default=2.0, help="W3: seconds between two documents")
    parser.add_argument("--eager", action="store_true", help="skip torch.compile")
    parser.add_argument("--plan-only", action="store_true", help="print the workloads' plans and stop")
    args = parser.parse_args()
    from mapreduce_llm.logs import configure_logging

    configure_logging("warning")
    if args.plan_only:
        tokenizer = HFTokenizer(ensure_embedded_model())
        prompt = resolve_prompt("summarize", PROMPTS)
        for work in workloads(args):
            spec_chunking = ChunkingConfig(max_chunk_tokens=work.max_chunk_tokens)
            plans = [
                plan_document(
                    d, prompt, tokenizer, args.max_model_len, spec_chunking, prompt.file.reserved_output_tokens
                )
                for d in work.docs
            ]
            room = plans[0].capacity("reduce") // (args.tokens + len(plans[0].separator_ids))
            print(work.name, "chunks", [len(p.chunks) for p in plans], f"~{room} outputs per reduce call")
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
