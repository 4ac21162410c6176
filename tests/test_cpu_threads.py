"""engine.cpu_threads: which cores a CPU engine's model threads are bound to."""

from __future__ import annotations

import pytest

from mapreduce_llm.engines.cpu_threads import BIND_ENV, threads_bind, usable_cpus


def test_auto_binds_every_core_of_a_two_core_node() -> None:
    bind, why = threads_bind("auto", cpus=[0, 1], environ={})
    assert bind == "0,1"
    assert "half" in why


@pytest.mark.parametrize(("cpus", "ranks"), [(list(range(8)), 1), ([0, 1], 2)])
def test_auto_keeps_vllms_default_on_larger_nodes_and_tensor_parallel(cpus: list[int], ranks: int) -> None:
    bind, why = threads_bind("auto", cpus=cpus, ranks=ranks, environ={})
    assert bind is None
    assert "vLLM's default" in why


def test_all_gives_every_rank_its_own_cores() -> None:
    assert threads_bind("all", cpus=list(range(8)), environ={})[0] == "0,1,2,3,4,5,6,7"
    assert threads_bind("all", cpus=[2, 3, 6, 7], ranks=2, environ={})[0] == "2,3|6,7"


def test_vllm_and_the_environment_leave_the_binding_alone() -> None:
    assert threads_bind("vllm", cpus=[0, 1], environ={})[0] is None
    bind, why = threads_bind("all", cpus=[0, 1], environ={BIND_ENV: "1"})
    assert bind is None
    assert f"{BIND_ENV}=1" in why


def test_usable_cpus_are_this_process_cores() -> None:
    cpus = usable_cpus()
    assert cpus and all(isinstance(c, int) for c in cpus)
