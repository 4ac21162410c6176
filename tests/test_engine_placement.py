"""Where engine replicas are placed: plain actors, or a placement group per tensor-parallel group."""

from __future__ import annotations

from mapreduce_llm.config import VLLMEngineConfig
from mapreduce_llm.engines.vllm_actor import tensor_parallel_bundles


def test_single_gpu_and_cpu_replicas_are_plain_actors() -> None:
    """Without tensor parallelism (or without GPUs) a replica needs no placement group."""
    assert tensor_parallel_bundles(VLLMEngineConfig()) is None
    assert tensor_parallel_bundles(VLLMEngineConfig(num_gpus_per_replica=1)) is None
    assert tensor_parallel_bundles(VLLMEngineConfig(tensor_parallel_size=2)) is None


def test_tensor_parallel_replica_reserves_one_gpu_bundle_per_rank() -> None:
    """A 4-way tensor-parallel replica: the actor's CPU bundle, then four single-GPU bundles."""
    config = VLLMEngineConfig(tensor_parallel_size=4, num_gpus_per_replica=4, num_cpus_per_replica=2)
    assert tensor_parallel_bundles(config) == [{"CPU": 2}, {"GPU": 1.0}, {"GPU": 1.0}, {"GPU": 1.0}, {"GPU": 1.0}]
