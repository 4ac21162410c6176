"""mapreduce-llm against LangChain's map-reduce summarisation, on one `vllm serve`, in one run.

One vLLM OpenAI-compatible server (``python -m vllm.entrypoints.openai.api_server``, flags in
``SERVER_FLAGS``: the same for every arm, prefix caching off so that no arm reuses another's prompts) serves the
embedded SmolLM2-135M-Instruct for the whole run. Server start-up is not timed. Every count printed (requests,
prompt and completion tokens) is the server's own (its ``/metrics`` before and after each timed run), so both
sides are counted the same way.

Warm-up (not timed): plain ``/completions`` and ``/chat/completions`` requests, with and without ``logprobs``
(vLLM compiles a sampler function on the first logprobs request), then one untimed round of every arm below.

(a) **Parity control: identical requests.** The map prompts of the first ``--parity-requests`` chunks this
    project plans for the documents (its summarize prompt, rendered with the chat template), all sent at once,
    greedy, ``max_tokens`` = ``--reserve`` with ``ignore_eos`` (every request generates exactly that many tokens)
    and ``logprobs: 0`` on both sides:

    - *mapreduce-llm*: its engine client for the backend (``OpenAIEngine.generate``, what ``run_job`` uses):
      streamed ``/completions`` with the prompt as token ids.
    - *LangChain*: ``langchain_openai.OpenAI`` (its completions client) ``abatch`` over the same prompts as text
      (the token ids decoded; the server's prompt-token count shows the tokenization matches).

    Timed: from the prompts in memory to every answer in memory, the client created inside. ``--repeats``
    rounds, the order alternating (A B, B A, A B, ...); medians; ratio LangChain / mapreduce-llm (target ≥ 0.95:
    the project's client costs nothing beside the peer's).

(b) **Each system as its documentation shows it**, over ``--docs`` documents of uneven length (slices of the
    corpus in ``benchmarks/corpus/docs``, lengths spread geometrically from ``--min-chars`` to ``--max-chars``),
    long enough that the longest need collapsing at this ``--max-model-len``; every call capped at ``--reserve``
    output tokens; all documents started together on each side:

    - *mapreduce-llm*: ``run_job`` with ``engine.backend: openai`` and its default ``summarize`` prompt (its
      own chunking, repetition penalty and collapse), ``sampling.reserved_output_tokens`` = ``--reserve``.
      Timed: the whole ``run_job`` (reading the files, loading the tokenizer, planning, every call, writing
      results.jsonl and summary.json).
    - *LangChain*: ``RecursiveCharacterTextSplitter.from_huggingface_tokenizer`` (the served model's tokenizer,
      ``chunk_overlap=0`` as its summarisation guide does) then ``load_summarize_chain(chat, "map_reduce")``
      over ``ChatOpenAI(temperature=0, max_tokens=--reserve)``, each document's chain started concurrently
      (``ainvoke``). Its documented defaults do not fit a small context (``token_max=3000``; the guide's
      ``chunk_size=1000``), so both are set to the largest that fits: the context less the output cap and its
      prompt's tokens (chat template included). Timed: loading the tokenizer, splitting, every chain.

    ``--peer-repeats`` runs per side (default 1, for time on 2 cores), alternating with LangChain first
    (B A A B ...); medians. Beside the times: requests, prompt and completion tokens, mean completion tokens per
    request, and a quality sanity check of the final summaries (non-empty; length in words; share that mention
    one of their document's five most distinctive words, a word of six letters or more ranked by its count in
    the document over 1 + its count in the other documents). Ratio LangChain / mapreduce-llm (target ≥ 1.5).

    pip install -e ".[bench]"   # langchain-openai, langchain-classic
    python benchmarks/peers.py [--docs 8] [--min-chars 3000] [--max-chars 40000] [--max-model-len 1024]
                               [--reserve 128] [--parity-requests 8] [--repeats 3] [--peer-repeats 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx

from mapreduce_llm.config import ChunkingConfig, JobSpec
from mapreduce_llm.documents import Document
from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.engines.config import OpenAIEngineConfig
from mapreduce_llm.engines.openai_http import OpenAIEngine
from mapreduce_llm.model_store import EMBEDDED_MODEL_NAME, ensure_embedded_model
from mapreduce_llm.output import RESULTS_FILE
from mapreduce_llm.planning import DocumentPlan, plan_document
from mapreduce_llm.prompts import resolve_prompt
from mapreduce_llm.results import DocumentResult
from mapreduce_llm.runner import run_job
from mapreduce_llm.tokenization import HFTokenizer

CORPUS = Path(__file__).resolve().parent / "corpus" / "docs"
PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
SERVER_FLAGS = ["--enforce-eager", "--block-size", "32", "--no-enable-prefix-caching", "--seed", "0"]
MARGIN = 16
LANGCHAIN_LOOP = asyncio.new_event_loop()
"""LangChain's side runs on one event loop for the whole run, as an application would: langchain-openai caches
its async HTTP client per process, and a client left on a closed loop fails."""
"""Tokens kept free in LangChain's budgets: its splitter counts a chunk alone, the server counts it in context."""


# --- the server and its counters ---------------------------------------------------------------------------------


@contextmanager
def vllm_server(max_model_len: int, log: Path) -> Iterator[str]:
    """vLLM's OpenAI API server on a free loopback port, for the block; yields its API root."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(ensure_embedded_model()), "--served-model-name", EMBEDDED_MODEL_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_model_len), *SERVER_FLAGS,
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "WARNING"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"vllm serve exited:\n{log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit("vllm serve did not start within 300 s")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


@dataclass
class Counts:
    """What the server did in one timed run (deltas of its /metrics counters)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0

    @property
    def mean_completion(self) -> float:
        return self.completion_tokens / self.requests if self.requests else 0.0


COUNTERS = {
    "requests": "vllm:request_success_total",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "completion_tokens": "vllm:generation_tokens_total",
    "cached_prompt_tokens": "vllm:prompt_tokens_cached_total",
}


def read_counters(url: str) -> dict[str, float]:
    """The server's counters, summed over their labels."""
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=10).text
    totals = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        for key, metric in COUNTERS.items():
            if name == metric:
                totals[key] += float(line.rsplit(" ", 1)[1])
    return totals


def timed(url: str, work: Callable[[], Any]) -> tuple[float, Counts, Any]:
    """Seconds, server counts and result of ``work()``; only ``work`` is inside the timed region."""
    before = read_counters(url)
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    after = read_counters(url)
    counts = Counts(**{key: round(after[key] - before[key]) for key in COUNTERS})
    return seconds, counts, result


# --- documents and the quality check -----------------------------------------------------------------------------


def uneven_documents(count: int, min_chars: int, max_chars: int) -> dict[str, str]:
    """``count`` corpus slices, lengths spread geometrically from min_chars to max_chars, cut at paragraphs."""
    sources = sorted(CORPUS.glob("*.md"))
    texts = [path.read_text(encoding="utf-8") for path in sources]
    documents = {}
    for i in range(count):
        length = round(min_chars * (max_chars / min_chars) ** (i / max(count - 1, 1)))
        text = texts[i % len(texts)]
        start = text.find("\n\n", (i // len(texts)) * len(text) // 3) + 2
        end = text.rfind("\n\n", start, start + length)
        end = end if end > start + length // 2 else start + length
        documents[f"doc{i}-{sources[i % len(sources)].stem}.md"] = text[start:end].strip()
    return documents


WORD = re.compile(r"[a-z]{6,}")


def salient_terms(documents: dict[str, str], top: int = 5) -> dict[str, list[str]]:
    """Each document's ``top`` most distinctive words: count here / (1 + count in the other documents)."""
    counts = {name: Counter(WORD.findall(text.lower())) for name, text in documents.items()}
    total = sum(counts.values(), Counter())
    return {name: sorted(c, key=lambda w: (-c[w] / (1 + total[w] - c[w]), w))[:top] for name, c in counts.items()}


@dataclass
class Quality:
    """The final summaries of one run, against their documents' salient terms."""

    finals: dict[str, str]
    terms: dict[str, list[str]]

    @property
    def non_empty(self) -> int:
        return sum(1 for text in self.finals.values() if text.strip())

    @property
    def mean_words(self) -> float:
        return statistics.mean(len(text.split()) for text in self.finals.values())

    @property
    def mentions(self) -> int:
        return sum(1 for name, text in self.finals.items() if any(term in text.lower() for term in self.terms[name]))


# --- (a) parity: identical requests ------------------------------------------------------------------------------


def parity_prompts(plans: list[DocumentPlan], count: int) -> list[list[int]]:
    """The map prompts (token ids) of the first ``count`` chunks, taken round-robin over the documents."""
    queues = [list(plan.chunks) for plan in plans]
    prompts: list[list[int]] = []
    while len(prompts) < count and any(queues):
        for plan, queue in zip(plans, queues, strict=True):
            if queue and len(prompts) < count:
                prompts.append(plan.map_template.request_ids(queue.pop(0).token_ids))
    return prompts


def parity_ours(url: str, prompts: list[list[int]], reserve: int) -> list[str]:
    """mapreduce-llm's engine client: every prompt as token ids, streamed, all at once."""

    async def go() -> list[str]:
        config = OpenAIEngineConfig(backend="openai", base_url=url, max_concurrent_requests=len(prompts))
        async with OpenAIEngine(config) as engine:
            outputs = await asyncio.gather(
                *(
                    engine.generate(
                        EngineRequest(
                            request_id=f"parity-{i}",
                            prompt_token_ids=ids,
                            max_tokens=reserve,
                            stage="map",
                            seed=None,
                            ignore_eos=True,
                        )
                    )
                    for i, ids in enumerate(prompts)
                )
            )
        return [out.text for out in outputs]

    return asyncio.run(go())


def parity_langchain(url: str, prompts: list[str], reserve: int) -> list[str]:
    """LangChain's completions client: the same prompts as text, ``abatch``, all at once."""
    from langchain_openai import OpenAI

    async def go() -> list[str]:
        llm = OpenAI(
            base_url=url,
            api_key="unused",
            model=EMBEDDED_MODEL_NAME,
            max_tokens=reserve,
            temperature=0,
            logprobs=0,
            extra_body={"ignore_eos": True},
        )
        return await llm.abatch(prompts, config={"max_concurrency": len(prompts)})

    return LANGCHAIN_LOOP.run_until_complete(go())


# --- (b) each side as documented ---------------------------------------------------------------------------------


def job_spec(docs: Path, output: Path, url: str, max_model_len: int, reserve: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "input": docs,
            "output": output,
            "prompt": "summarize",
            "prompts_dir": PROMPTS,
            "engine": {"backend": "openai", "base_url": url, "max_model_len": max_model_len},
            "sampling": {"reserved_output_tokens": reserve},
            "cache": {"enabled": False},
        }
    )


def run_ours(spec: JobSpec) -> dict[str, Any]:
    """``run_job``; its final summaries (read back after the timed region) and its calls per stage."""
    summary = run_job(spec)
    assert summary.ok == summary.documents, summary
    return {"requests": dict(summary.requests)}


def our_finals(output: Path, names: list[str]) -> dict[str, str]:
    """The job's final summaries from results.jsonl, by document file name."""
    finals = {}
    with (output / RESULTS_FILE).open(encoding="utf-8") as lines:
        for line in lines:
            result = DocumentResult.model_validate_json(line)
            name = next(n for n in names if result.id in (n, Path(n).stem) or result.id.endswith("/" + n))
            finals[name] = result.output or ""
    return finals


@dataclass
class LangChainSetup:
    """What LangChain's documented pipeline needs sized for a small context."""

    chunk_size: int
    token_max: int
    model_folder: Path


def langchain_setup(max_model_len: int, reserve: int) -> LangChainSetup:
    """Chunk size and token_max: the context less the output cap, its prompt's tokens and a margin."""
    from langchain_classic.chains.summarize.map_reduce_prompt import PROMPT
    from transformers import AutoTokenizer

    folder = ensure_embedded_model()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "user", "content": PROMPT.format(text="")}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    overhead = len(tokenizer.encode(rendered, add_special_tokens=False))
    room = max_model_len - reserve - overhead - MARGIN
    return LangChainSetup(chunk_size=room, token_max=room, model_folder=folder)


def run_langchain(url: str, documents: dict[str, str], reserve: int, setup: LangChainSetup) -> dict[str, Any]:
    """Split, then one map-reduce summarisation chain per document, all concurrently; the final summaries."""
    from langchain_classic.chains.summarize import load_summarize_chain
    from langchain_openai import ChatOpenAI
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(setup.model_folder)
    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer, chunk_size=setup.chunk_size, chunk_overlap=0
    )
    llm = ChatOpenAI(
        base_url=url,
        api_key="unused",
        model=EMBEDDED_MODEL_NAME,
        temperature=0,
        max_tokens=reserve,
        custom_get_token_ids=lambda text: tokenizer.encode(text, add_special_tokens=False),
    )
    chain = load_summarize_chain(llm, chain_type="map_reduce", token_max=setup.token_max)
    split = {name: splitter.create_documents([text]) for name, text in documents.items()}

    async def go() -> list[dict[str, Any]]:
        return await asyncio.gather(*(chain.ainvoke({"input_documents": docs}) for docs in split.values()))

    outputs = LANGCHAIN_LOOP.run_until_complete(go())
    return {
        "finals": {name: out["output_text"] for name, out in zip(split, outputs, strict=True)},
        "chunks": sum(len(docs) for docs in split.values()),
    }


# --- the run -----------------------------------------------------------------------------------------------------


@dataclass
class Side:
    """Every timed run of one side in one arm."""

    name: str
    seconds: list[float] = field(default_factory=list)
    counts: list[Counts] = field(default_factory=list)
    extra: list[Any] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def line(self) -> str:
        c = self.counts[-1]
        runs = " ".join(f"{s:.1f}" for s in self.seconds)
        return (
            f"{self.name:16} median {self.median:7.1f} s  (runs {runs})  {c.requests:4d} requests  "
            f"{c.prompt_tokens:7d} prompt  {c.completion_tokens:6d} completion tokens  "
            f"{c.mean_completion:5.1f} per request  {c.cached_prompt_tokens} cached"
        )


def alternate(repeats: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """A B, B A, A B, ...: neither side always goes first."""
    for r in range(repeats):
        for run in (first, second) if r % 2 == 0 else (second, first):
            run()


def warm_up(url: str) -> None:
    """Plain requests on both endpoints, with and without logprobs."""
    bodies = [
        ("completions", {"prompt": "Summarize: Ray runs Python.", "max_tokens": 8}),
        ("completions", {"prompt": "Summarize: Ray runs Python.", "max_tokens": 8, "logprobs": 0}),
        ("chat/completions", {"messages": [{"role": "user", "content": "Summarize: Ray runs Python."}]}),
        ("chat/completions", {"messages": [{"role": "user", "content": "Hi."}], "logprobs": True}),
    ]
    for path, body in bodies:
        body = {"model": EMBEDDED_MODEL_NAME, "max_tokens": 8, "temperature": 0, **body}
        httpx.post(f"{url}/{path}", json=body, timeout=120).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=8, help="documents of uneven length")
    parser.add_argument("--min-chars", type=int, default=3_000, help="length of the shortest document")
    parser.add_argument("--max-chars", type=int, default=40_000, help="length of the longest document")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--reserve", type=int, default=128, help="output tokens per call (max_tokens)")
    parser.add_argument("--parity-requests", type=int, default=8, help="identical requests per side in (a)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side in (a)")
    parser.add_argument("--peer-repeats", type=int, default=1, help="timed runs per side in (b)")
    args = parser.parse_args()

    documents = uneven_documents(args.docs, args.min_chars, args.max_chars)
    terms = salient_terms(documents)
    tokenizer = HFTokenizer(ensure_embedded_model())
    prompt = resolve_prompt("summarize", PROMPTS)
    plans = [
        plan_document(Document(id=name, text=text, source=name), prompt, tokenizer, args.max_model_len,
                      ChunkingConfig(), args.reserve)
        for name, text in documents.items()
    ]  # fmt: skip
    setup = langchain_setup(args.max_model_len, args.reserve)
    ids = parity_prompts(plans, args.parity_requests)
    texts = [tokenizer.decode(p) for p in ids]
    print(f"server: vllm serve {EMBEDDED_MODEL_NAME} --max-model-len {args.max_model_len} {' '.join(SERVER_FLAGS)}")
    print(f"output cap per call: {args.reserve} tokens; (a) {len(ids)} identical requests x {args.repeats} runs "
          f"per side; (b) {args.peer_repeats} runs per side; LangChain chunk_size {setup.chunk_size} and token_max "
          f"{setup.token_max} tokens")  # fmt: skip
    print(f"(b) {len(documents)} documents, {sum(map(len, documents.values())):,} characters, "
          f"{sum(len(c.token_ids) for p in plans for c in p.chunks):,} tokens:")  # fmt: skip
    for plan in plans:
        doc = plan.document
        print(f"  {doc.id:32} {len(doc.text):7,} chars  {len(plan.chunks):3d} chunks here  "
              f"salient: {', '.join(terms[doc.id])}")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        root = Path(tmp)
        (root / "docs").mkdir()
        (root / "warm").mkdir()
        for name, text in documents.items():
            (root / "docs" / name).write_text(text, encoding="utf-8")
        shortest = min(documents, key=lambda n: len(documents[n]))
        (root / "warm" / shortest).write_text(documents[shortest], encoding="utf-8")

        with vllm_server(args.max_model_len, root / "server.log") as url:
            started = time.perf_counter()
            warm_up(url)
            parity_ours(url, ids[:4], args.reserve)
            parity_langchain(url, texts[:4], args.reserve)
            run_ours(job_spec(root / "warm", root / "out-warm", url, args.max_model_len, args.reserve))
            run_langchain(url, {shortest: documents[shortest]}, args.reserve, setup)
            print(f"warm-up: {time.perf_counter() - started:.1f} s", flush=True)

            # (a) parity
            ours_a, theirs_a = Side("mapreduce-llm"), Side("LangChain")
            outputs: dict[str, list[str]] = {}

            def measure(side: Side, work: Callable[[], list[str]]) -> None:
                seconds, counts, out = timed(url, work)
                side.seconds.append(seconds)
                side.counts.append(counts)
                outputs[side.name] = out
                print(f"(a) {side.name}: {seconds:.1f} s, {counts}", flush=True)

            alternate(
                args.repeats,
                lambda: measure(ours_a, lambda: parity_ours(url, ids, args.reserve)),
                lambda: measure(theirs_a, lambda: parity_langchain(url, texts, args.reserve)),
            )
            same = sum(a == b for a, b in zip(outputs["mapreduce-llm"], outputs["LangChain"], strict=True))

            # (b) each side as documented
            ours_b, theirs_b = Side("mapreduce-llm"), Side("LangChain")
            finals: dict[str, dict[str, str]] = {}
            run_number = iter(range(1000))

            def ours_once() -> None:
                output = root / f"out-{next(run_number)}"
                spec = job_spec(root / "docs", output, url, args.max_model_len, args.reserve)
                seconds, counts, extra = timed(url, lambda: run_ours(spec))
                ours_b.seconds.append(seconds)
                ours_b.counts.append(counts)
                ours_b.extra.append(extra)
                finals[ours_b.name] = our_finals(output, list(documents))
                print(f"(b) {ours_b.name}: {seconds:.1f} s, {counts}, {extra}", flush=True)

            def theirs_once() -> None:
                seconds, counts, extra = timed(url, lambda: run_langchain(url, documents, args.reserve, setup))
                theirs_b.seconds.append(seconds)
                theirs_b.counts.append(counts)
                theirs_b.extra.append(extra)
                finals[theirs_b.name] = extra["finals"]
                print(f"(b) {theirs_b.name}: {seconds:.1f} s, {counts}, {extra['chunks']} chunks", flush=True)

            alternate(args.peer_repeats, theirs_once, ours_once)

    print(f"\n(a) parity: {len(ids)} identical requests, {args.reserve} tokens each (ignore_eos), logprobs on both")
    for side in (ours_a, theirs_a):
        print("  " + side.line())
    print(f"  identical outputs: {same}/{len(ids)}")
    print(f"  ratio LangChain / mapreduce-llm (medians): {theirs_a.median / ours_a.median:.3f} (target >= 0.95)")

    print(f"\n(b) each as documented: {len(documents)} documents, cap {args.reserve} output tokens per call")
    for side in (ours_b, theirs_b):
        print("  " + side.line())
    stages = ours_b.extra[-1]["requests"]
    lc_calls = theirs_b.counts[-1].requests
    lc_chunks = theirs_b.extra[-1]["chunks"]
    print(f"  mapreduce-llm calls by stage: {stages}")
    print(f"  LangChain: {lc_chunks} map calls, {lc_calls - lc_chunks - len(documents)} collapse calls, "
          f"{len(documents)} combine calls")  # fmt: skip
    for name in (ours_b.name, theirs_b.name):
        q = Quality(finals[name], terms)
        print(f"  {name:16} final summaries (last run): {q.non_empty}/{len(documents)} non-empty, "
              f"{q.mean_words:.0f} words on average, {q.mentions}/{len(documents)} mention a salient term")  # fmt: skip
    ratio = theirs_b.median / ours_b.median
    verdict = "met" if ratio >= 1.5 else "not met"
    print(f"  ratio LangChain / mapreduce-llm (medians): {ratio:.2f} (target >= 1.5: {verdict})")


if __name__ == "__main__":
    main()
