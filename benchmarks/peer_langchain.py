"""mapreduce-llm against LangChain's map-reduce summarisation, on the same `vllm serve`, in one run.

One vLLM OpenAI-compatible server (``python -m vllm.entrypoints.openai.api_server``) serves the embedded
SmolLM2-135M-Instruct; both systems summarise the same documents through it, with the same chunks (the chunk
texts mapreduce-llm's planner cut, handed to LangChain as its documents), the same output cap per call
(``--reserve``) and greedy decoding:

(a) **mapreduce-llm**: ``run_job`` with ``engine.backend: openai`` — token-id prompts on ``/completions``, every
    document's map calls in flight together, each document reducing as soon as its own maps are back.
(b) **LangChain**: ``load_summarize_chain(chain_type="map_reduce")`` (langchain-classic) over ``ChatOpenAI``
    (langchain-openai), every document's chain started concurrently (``ainvoke``, so each map step is
    concurrent too), ``token_max`` set to the same reduce budget, tokens counted with the served model's
    tokenizer (tiktoken cannot download its files here).

Prompts differ (each system uses its own summarisation prompts), so the request and token counts are printed
next to the times. Server start-up is not timed; the server is warmed up before either side runs. Prints the
wall-time ratio (b)/(a): above 1 means mapreduce-llm is faster.

    pip install -e ".[bench]"   # langchain-openai, langchain-classic
    python benchmarks/peer_langchain.py [--docs 4] [--chars 12000] [--max-model-len 1024] [--reserve 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx

from mapreduce_llm.config import ChunkingConfig, JobSpec
from mapreduce_llm.documents import Document
from mapreduce_llm.model_store import EMBEDDED_MODEL_NAME, ensure_embedded_model
from mapreduce_llm.planning import plan_document
from mapreduce_llm.prompts import resolve_prompt
from mapreduce_llm.runner import run_job
from mapreduce_llm.tokenization import HFTokenizer

CORPUS = Path(__file__).resolve().parent / "corpus" / "docs"
PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


def start_server(max_model_len: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """vLLM's OpenAI API server on a free loopback port; returns the process and its API root."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(ensure_embedded_model()), "--served-model-name", EMBEDDED_MODEL_NAME,
        "--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_model_len),
        "--enforce-eager", "--block-size", "32",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "WARNING"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"vllm serve exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.terminate()
    raise SystemExit("vllm serve did not start within 300 s")


def run_ours(spec: JobSpec) -> tuple[float, int, int]:
    """(a): seconds, engine requests, completion tokens."""
    start = time.perf_counter()
    summary = run_job(spec)
    seconds = time.perf_counter() - start
    assert summary.ok == summary.documents, summary
    return seconds, sum(summary.requests.values()), summary.completion_tokens


def run_langchain(
    url: str, chunks: list[list[str]], reserve: int, token_max: int, tokenizer: HFTokenizer
) -> tuple[float, int, int]:
    """(b): seconds, LLM calls, completion tokens."""
    from langchain_classic.chains.summarize import load_summarize_chain
    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_core.documents import Document as LCDocument
    from langchain_openai import ChatOpenAI

    class Count(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.calls = 0
            self.tokens = 0

        async def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            for generations in response.generations:
                for generation in generations:
                    self.calls += 1
                    usage = getattr(generation.message, "usage_metadata", None) or {}
                    self.tokens += int(usage.get("output_tokens", 0))

    counter = Count()
    llm = ChatOpenAI(
        base_url=url,
        api_key="unused",
        model=EMBEDDED_MODEL_NAME,
        max_tokens=reserve,
        temperature=0,
        seed=0,
        max_retries=2,
        custom_get_token_ids=tokenizer.encode_data,
        callbacks=[counter],
    )
    chain = load_summarize_chain(llm, chain_type="map_reduce", token_max=token_max)

    async def go() -> list[Any]:
        return await asyncio.gather(
            *(chain.ainvoke({"input_documents": [LCDocument(page_content=c) for c in doc]}) for doc in chunks)
        )

    start = time.perf_counter()
    outputs = asyncio.run(go())
    seconds = time.perf_counter() - start
    assert all(out["output_text"].strip() for out in outputs)
    return seconds, counter.calls, counter.tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4, help="documents from the example corpus")
    parser.add_argument("--chars", type=int, default=12_000, help="characters taken from each document")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--reserve", type=int, default=64, help="output tokens per call (max_tokens)")
    args = parser.parse_args()

    tokenizer = HFTokenizer(ensure_embedded_model())
    with tempfile.TemporaryDirectory(prefix="peer-langchain-") as tmp:
        root = Path(tmp)
        (root / "docs").mkdir()
        texts = {}
        for path in sorted(CORPUS.glob("*.md"))[: args.docs]:
            texts[path.name] = path.read_text(encoding="utf-8")[: args.chars]
            (root / "docs" / path.name).write_text(texts[path.name], encoding="utf-8")
        # The chunks mapreduce-llm plans are the documents LangChain gets: same chunk sizes for both.
        prompt = resolve_prompt("summarize", PROMPTS)
        chunks = []
        for name, text in texts.items():
            plan = plan_document(
                Document(id=name, text=text, source=name),
                prompt,
                tokenizer,
                args.max_model_len,
                ChunkingConfig(),
                args.reserve,
            )
            chunks.append([text[c.start : c.end] for c in plan.chunks])
        process, url = start_server(args.max_model_len, root / "server.log")
        try:
            spec = JobSpec.model_validate(
                {
                    "input": root / "docs",
                    "output": root / "out",
                    "prompt": "summarize",
                    "prompts_dir": PROMPTS,
                    "engine": {"backend": "openai", "base_url": url, "max_model_len": args.max_model_len},
                    "sampling": {"reserved_output_tokens": args.reserve},
                    "cache": {"enabled": False},
                }
            )
            # The reduce budget LangChain may fill: the context less the output and its prompt's own tokens.
            token_max = args.max_model_len - args.reserve - 64
            # Warm the server up first (the first batches of a fresh engine are slower), so neither side pays it.
            for _ in range(3):
                body = {"model": EMBEDDED_MODEL_NAME, "prompt": "Summarize: Ray runs Python.", "max_tokens": 16}
                httpx.post(f"{url}/completions", json=body, timeout=120).raise_for_status()
            ours = run_ours(spec)
            theirs = run_langchain(url, chunks, args.reserve, token_max, tokenizer)
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"{len(chunks)} documents, {sum(map(len, chunks))} chunks, max_model_len {args.max_model_len}, "
          f"reserve {args.reserve}")  # fmt: skip
    print(f"(a) mapreduce-llm   {ours[0]:7.1f} s  {ours[1]:4d} requests  {ours[2]:6d} completion tokens")
    print(f"(b) LangChain       {theirs[0]:7.1f} s  {theirs[1]:4d} requests  {theirs[2]:6d} completion tokens")
    print(f"wall-time ratio LangChain / mapreduce-llm: {theirs[0] / ours[0]:.2f}x")


if __name__ == "__main__":
    main()
