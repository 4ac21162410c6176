"""What asking vLLM for each generated token's logprob costs: the same requests with and without ``logprobs=0``.

Every engine request of a job asks for the chosen token's logprob (``mean_logprob`` in results, the confidence
metric, drift profiles and the rollout guard's mean confidence; checked answers' calibrated confidence). This
script measures the price on this machine with the embedded model and vLLM's offline ``LLM`` (no Ray):

- one engine (``engine.dtype: auto``, prefix caching off so that repeats do no less work);
- a batch of ``--prompts`` summarize-like requests: ``--prompt-tokens`` tokens of the example corpus each,
  exactly ``--output-tokens`` generated tokens (``ignore_eos``), temperature 0, ``repetition_penalty`` 1.15 as the
  shipped summarize prompt; the two arms get identical work;
- a warm-up batch per arm (vLLM builds its logprobs path on first use), then ``--repeats`` rounds, each running
  both arms in alternating order; medians of the wall time per arm.

Prints both medians, decode tokens per second, and the ratio with / without (baseline: without, same run).

    python benchmarks/logprobs_ab.py [--prompts 8] [--prompt-tokens 512] [--output-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")  # as the job's engines (mapreduce_llm.engines.vllm_ray)

CORPUS = Path(__file__).resolve().parent / "corpus" / "docs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from vllm import LLM, SamplingParams, TokensPrompt

    from mapreduce_llm.engines.dtype import choose_dtype
    from mapreduce_llm.model_store import ensure_embedded_model
    from mapreduce_llm.tokenization import HFTokenizer

    folder = ensure_embedded_model()
    ids = HFTokenizer(folder).encode_data((CORPUS / "python-tutorial.md").read_text(encoding="utf-8"))
    n, size = args.prompts, args.prompt_tokens
    llm = LLM(
        model=str(folder),
        dtype=choose_dtype("auto")[0],
        max_model_len=size + args.output_tokens + 16,
        enable_prefix_caching=False,
        seed=0,
    )
    batch = [TokensPrompt(prompt_token_ids=ids[i * size : (i + 1) * size]) for i in range(n)]

    def run(logprobs: int | None) -> float:
        params = SamplingParams(
            max_tokens=args.output_tokens,
            temperature=0,
            repetition_penalty=1.15,
            ignore_eos=True,
            logprobs=logprobs,
        )
        started = time.perf_counter()
        outs = llm.generate(batch, params, use_tqdm=False)
        seconds = time.perf_counter() - started
        assert all(len(o.outputs[0].token_ids) == args.output_tokens for o in outs)
        assert all((o.outputs[0].logprobs is not None) == (logprobs is not None) for o in outs)
        return seconds

    arms: dict[str, int | None] = {"without": None, "with logprobs=0": 0}
    for value in arms.values():  # warm-up: vLLM's first-use work is not what is compared
        run(value)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(args.repeats):
        order = list(arms) if repeat % 2 == 0 else list(reversed(arms))
        for name in order:
            times[name].append(run(arms[name]))
    tokens = n * args.output_tokens
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:16} median {median:6.2f} s over {args.repeats} rounds "
            f"({', '.join(f'{v:.2f}' for v in values)}), {tokens / median:6.1f} generated tokens/s",
            flush=True,
        )
    ratio = statistics.median(times["with logprobs=0"]) / statistics.median(times["without"])
    print(f"with / without logprobs: {ratio:.3f} (baseline: without, same run; above 1: logprobs cost time)")


if __name__ == "__main__":
    main()
