"""The job's pipelined map-reduce against the level-by-level ideal, on the same requests, in one run.

(a) **job**: ``mapreduce_llm.job.Job`` with vLLM in a Ray actor — every document's map calls are
    streamed into the engine and each document reduces as soon as its own map calls are back (no barrier).
(b) **levels**: the same plans and the same reduce tree, run straight through ``vllm.LLM.generate`` one level
    at a time: all map requests of all documents in one call, then every document's level-1 collapse/reduce
    requests in one call, and so on — a barrier between levels, each level perfectly batched.

Both use the same engine settings, greedy decoding and the same prompts, so they do the same work (request
and token counts are printed to check). Engine start-up is not timed. Prints the ratio (a)/(b); below 1
means the pipeline is faster.

    python benchmarks/pipeline_vs_levels.py [--docs 4] [--chars 40000] [--max-model-len 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mapreduce_llm.config import JobSpec, VLLMEngineConfig
from mapreduce_llm.documents import Document
from mapreduce_llm.engines.dtype import choose_dtype
from mapreduce_llm.model_store import ensure_embedded_model
from mapreduce_llm.planning import DocumentPlan, plan_document
from mapreduce_llm.prompts import resolve_prompt
from mapreduce_llm.reduce import Partial, joined_ids, joined_size, pack, resplit
from mapreduce_llm.tokenization import HFTokenizer

CORPUS = Path(__file__).resolve().parent / "corpus" / "docs"
PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


def run_job(spec: JobSpec, config: VLLMEngineConfig, tokenizer: HFTokenizer) -> tuple[float, Counter[str], int]:
    """(a): the real job on a vLLM-in-Ray engine; returns seconds, requests per stage, completion tokens."""
    from mapreduce_llm.engines import open_engine
    from mapreduce_llm.job import Job

    async def timed() -> tuple[float, Counter[str], int]:
        async with open_engine(config) as engine:  # a local Ray session, started before the clock starts
            job = Job(spec, resolve_prompt(spec.prompt, PROMPTS), tokenizer, engine)
            start = time.perf_counter()
            summary = await job.run()
            return time.perf_counter() - start, Counter(summary.requests), summary.completion_tokens

    return asyncio.run(timed())


def run_levels(
    docs: list[Document], config: VLLMEngineConfig, tokenizer: HFTokenizer, spec: JobSpec
) -> tuple[float, Counter[str], int]:
    """(b): the same plans and reduce tree through vllm.LLM.generate, one level at a time."""
    from vllm import LLM, SamplingParams, TokensPrompt

    prompt = resolve_prompt(spec.prompt, PROMPTS)
    pf = prompt.file
    llm = LLM(
        model=str(ensure_embedded_model()),
        max_model_len=config.max_model_len,
        dtype=choose_dtype(config.dtype)[0],  # the same choice the engine actor makes
        seed=config.seed,
        enable_prefix_caching=config.enable_prefix_caching,
        block_size=config.block_size,
        **config.engine_kwargs,
    )
    params = SamplingParams(
        max_tokens=pf.reserved_output_tokens,
        temperature=pf.sampling.temperature,
        top_p=pf.sampling.top_p,
        repetition_penalty=pf.sampling.repetition_penalty,
        seed=config.seed,
        logprobs=0,
    )
    requests: Counter[str] = Counter()
    completion = 0

    def generate(batch: list[tuple[str, list[int]]]) -> list[Partial]:
        nonlocal completion
        outs = llm.generate([TokensPrompt(prompt_token_ids=ids) for _, ids in batch], params, use_tqdm=False)
        requests.update(stage for stage, _ in batch)
        partials = []
        for out in outs:
            text = out.outputs[0].text.strip()
            completion += len(out.outputs[0].token_ids)
            partials.append(Partial(text, tuple(tokenizer.encode_data(text)), ()))
        return partials

    start = time.perf_counter()
    plans: list[DocumentPlan] = [plan_document(d, prompt, tokenizer, config.max_model_len, spec.chunking) for d in docs]
    flat = [(p_i, "map", p.map_template.request_ids(c.token_ids)) for p_i, p in enumerate(plans) for c in p.chunks]
    outs = generate([(stage, ids) for _, stage, ids in flat])
    items: dict[int, list[Partial]] = {i: [] for i in range(len(plans))}
    for (p_i, _, _), out in zip(flat, outs, strict=True):
        items[p_i].append(out)
    open_docs = {i for i, p in enumerate(plans) if len(p.chunks) > 1}
    while open_docs:
        batch: list[tuple[int, str, list[int]]] = []
        for i in sorted(open_docs):
            plan, sep = plans[i], list(plans[i].separator_ids)
            if joined_size(items[i], len(sep)) <= plan.capacity("reduce"):
                batch.append((i, "reduce", plan.reduce_template.request_ids(joined_ids(items[i], sep))))
                continue
            fitted = [q for p in items[i] for q in resplit(p, plan.capacity("collapse"), tokenizer)]
            for group in pack(fitted, plan.capacity("collapse"), len(sep)):
                batch.append((i, "collapse", plan.collapse_template.request_ids(joined_ids(group, sep))))
        outs = generate([(stage, ids) for _, stage, ids in batch])
        nxt: dict[int, list[Partial]] = {i: [] for i in open_docs}
        for (i, stage, _), out in zip(batch, outs, strict=True):
            if stage == "reduce":
                open_docs.discard(i)
            else:
                nxt[i].append(out)
        items.update({i: v for i, v in nxt.items() if i in open_docs})
    return time.perf_counter() - start, requests, completion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=4, help="documents from the example corpus")
    parser.add_argument("--chars", type=int, default=40_000, help="characters taken from each document")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--eager", action="store_true", help="skip torch.compile in both engines")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from mapreduce_llm.logs import configure_logging

    configure_logging("warning")

    texts = [p.read_text(encoding="utf-8")[: args.chars] for p in sorted(CORPUS.glob("*.md"))[: args.docs]]
    docs = [Document(id=f"doc{i}", text=t, source=f"doc{i}.md") for i, t in enumerate(texts)]
    config = VLLMEngineConfig(
        max_model_len=args.max_model_len, engine_kwargs={"enforce_eager": True} if args.eager else {}
    )
    tokenizer = HFTokenizer(ensure_embedded_model())
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs"
        src.mkdir()
        for d, t in zip(docs, texts, strict=True):
            (src / d.source).write_text(t, encoding="utf-8")
        spec = JobSpec.model_validate(
            {
                "input": src,
                "output": Path(tmp) / "out",
                "prompt": "summarize",
                "prompts_dir": PROMPTS,
                "engine": config.model_dump(),
            }
        )
        job_s, job_requests, job_tokens = run_job(spec, config, tokenizer)
        lvl_s, lvl_requests, lvl_tokens = run_levels(docs, config, tokenizer, spec)
    print(
        f"{len(docs)} documents x {args.chars:,} characters, max_model_len {args.max_model_len}, "
        f"{'eager' if args.eager else 'compiled'} engine, 1 replica"
    )
    print(f"{'':10} {'seconds':>8}  requests (map/collapse/reduce)   completion tokens")
    for name, s, r, t in (
        ("(a) job", job_s, job_requests, job_tokens),
        ("(b) levels", lvl_s, lvl_requests, lvl_tokens),
    ):
        print(f"{name:10} {s:8.1f}  {r['map']:>4} / {r['collapse']:>4} / {r['reduce']:>4}{'':16} {t:>8}")
    print(f"ratio (a)/(b): {job_s / lvl_s:.2f} (target <= 0.95)")


if __name__ == "__main__":
    main()
