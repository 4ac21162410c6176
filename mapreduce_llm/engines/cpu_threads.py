"""Which CPU cores a CPU engine's model threads run on (vLLM-CPU's ``VLLM_CPU_OMP_THREADS_BIND``).

vLLM-CPU binds the model's OpenMP threads to cores and, by default (``auto``), keeps one core per rank for its
frontend process. On a node with many cores that is a small share; on a 2-core node it is half the machine, and
the model runs on one core. ``engine.cpu_threads`` chooses:

- ``vllm``: vLLM's own default, one core kept for the frontend;
- ``all``: every core the engine's process may run on (its CPU affinity) goes to the model;
- ``auto`` (the default): ``all`` on nodes with at most :data:`SMALL_NODE_CPUS` cores and one rank, where the kept
  core is half the node; ``vllm`` elsewhere. On this project's 2-core test machine the example job took 0.85 of
  vLLM's default's time with both cores bound (``python benchmarks/cpu_runtime_ab.py --job``); larger nodes were
  not measured, so they keep vLLM's choice.

``VLLM_CPU_OMP_THREADS_BIND`` set in the job's environment (it is forwarded to the engine actors) wins over all of
these. Several replicas on one small node should not each take ``all``: give each its own cores through the
variable, or use ``vllm``. The choice is made inside the engine actor (on the node where it runs) and logged.
"""

from __future__ import annotations

import os
from typing import Literal

CpuThreads = Literal["auto", "all", "vllm"]

SMALL_NODE_CPUS = 2
"""Nodes with at most this many cores bind every core to the model under ``auto`` (measured: 2 cores)."""

BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def usable_cpus() -> list[int]:
    """The cores this process may run on (its CPU affinity; every core when the platform does not say)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def threads_bind(
    setting: CpuThreads,
    *,
    cpus: list[int],
    ranks: int = 1,
    environ: dict[str, str] | None = None,
) -> tuple[str | None, str]:
    """The ``VLLM_CPU_OMP_THREADS_BIND`` value to set for ``setting`` (None: leave vLLM's own), and why.

    ``cpus``: the cores the engine may use; ``ranks``: the engine's tensor-parallel ranks on this node;
    ``environ``: the environment (default ``os.environ``), whose ``VLLM_CPU_OMP_THREADS_BIND`` wins when set.
    """
    env = os.environ if environ is None else environ
    if env.get(BIND_ENV):
        return None, f"{BIND_ENV}={env[BIND_ENV]} set in the environment"
    if setting == "vllm":
        return None, "engine.cpu_threads: vllm (one core per rank kept for vLLM's frontend)"
    if setting == "auto" and (len(cpus) > SMALL_NODE_CPUS or ranks > 1):
        return None, f"{len(cpus)} cores, {ranks} rank(s): vLLM's default (one core per rank kept for its frontend)"
    why = "engine.cpu_threads: all" if setting == "all" else f"{len(cpus)} cores: vLLM would keep half for its frontend"
    size = max(1, len(cpus) // ranks)  # one group of cores per rank, as vLLM reads it: "0,1|2,3"
    groups = [cpus[r * size : (r + 1) * size] or cpus[-1:] for r in range(ranks)]
    return "|".join(",".join(str(c) for c in group) for group in groups), why
