"""The engine's weight dtype on this machine: bfloat16 against float32, prefill and decode tokens per second.

On a CPU without native bfloat16 arithmetic (no avx512_bf16 / AMX) vLLM-CPU emulates bf16 matrix products, so
``engine.dtype: auto`` picks float32 there (``mapreduce_llm.engines.dtype``). This script measures what that
choice is worth, with the embedded model and vLLM's offline ``LLM`` (no Ray, nothing else running):

- each dtype's engine runs in its own process (engine start and compilation are timed but reported apart);
- **prefill**: ``--prompts`` different prompts of ``--prompt-tokens`` tokens from the example corpus, one
  output token each, prefix caching off (no reuse between repeats);
- **decode**: the same number of short prompts, ``--decode-tokens`` output tokens each (``ignore_eos``);
- every measure is repeated ``--repeats`` times inside the process and the median kept; the two processes run
  one after the other, the baseline (bfloat16) first unless ``--order float32,bfloat16``.

Prints tokens per second per dtype and the ratio float32 / bfloat16 (above 1: float32 is faster).

    python benchmarks/dtype_ab.py [--prompts 4] [--prompt-tokens 1024] [--decode-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

CORPUS = Path(__file__).resolve().parent / "corpus" / "docs"


def measure(dtype: str, prompts: int, prompt_tokens: int, decode_tokens: int, repeats: int) -> dict[str, float]:
    """Run inside a fresh process: start an engine in ``dtype`` and time prefill and decode."""
    from vllm import LLM, SamplingParams, TokensPrompt

    from mapreduce_llm.engines.dtype import native_bf16
    from mapreduce_llm.model_store import ensure_embedded_model
    from mapreduce_llm.tokenization import HFTokenizer

    folder = ensure_embedded_model()
    tokenizer = HFTokenizer(folder)
    ids = tokenizer.encode_data((CORPUS / "python-tutorial.md").read_text(encoding="utf-8"))
    started = time.perf_counter()
    llm = LLM(model=str(folder), dtype=dtype, max_model_len=2048, enable_prefix_caching=False, seed=0)
    start_s = time.perf_counter() - started

    def prefill(offset: int) -> float:
        batch = [
            TokensPrompt(prompt_token_ids=ids[offset + i * prompt_tokens : offset + (i + 1) * prompt_tokens])
            for i in range(prompts)
        ]
        t = time.perf_counter()
        llm.generate(batch, SamplingParams(max_tokens=1, temperature=0), use_tqdm=False)
        return prompts * prompt_tokens / (time.perf_counter() - t)

    def decode(offset: int) -> float:
        batch = [TokensPrompt(prompt_token_ids=ids[offset + i * 16 : offset + i * 16 + 16]) for i in range(prompts)]
        params = SamplingParams(max_tokens=decode_tokens, temperature=0, ignore_eos=True)
        t = time.perf_counter()
        outs = llm.generate(batch, params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - t)

    prefill(0)  # warm-up: first-call compilation is not what is compared
    decode(0)
    span = prompts * prompt_tokens
    return {
        "start_s": start_s,
        "prefill_tps": statistics.median(prefill(span * (r + 1)) for r in range(repeats)),
        "decode_tps": statistics.median(decode(span * (r + 1)) for r in range(repeats)),
        "native_bf16": float(native_bf16()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--order", default="bfloat16,float32")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = measure(args.child, args.prompts, args.prompt_tokens, args.decode_tokens, args.repeats)
        print("RESULT " + json.dumps(figures), flush=True)
        return
    results: dict[str, dict[str, float]] = {}
    for dtype in args.order.split(","):
        cmd = [sys.executable, __file__, "--child", dtype, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"{dtype} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        results[dtype] = json.loads(lines[-1].removeprefix("RESULT "))
        r = results[dtype]
        print(
            f"{dtype:9} engine start {r['start_s']:6.1f} s   prefill {r['prefill_tps']:7.1f} tok/s   "
            f"decode {r['decode_tps']:6.1f} tok/s",
            flush=True,
        )
    bf, fp = results["bfloat16"], results["float32"]
    print(f"CPU has native bf16: {bool(bf['native_bf16'])}")
    print(
        f"float32 / bfloat16: prefill {fp['prefill_tps'] / bf['prefill_tps']:.2f}x, "
        f"decode {fp['decode_tps'] / bf['decode_tps']:.2f}x (baseline: bfloat16, same run)"
    )


if __name__ == "__main__":
    main()
