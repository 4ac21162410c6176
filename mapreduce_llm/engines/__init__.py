"""Inference backends behind one protocol (:mod:`.base`); vLLM hosted in Ray actors (:mod:`.vllm_ray`)."""

from mapreduce_llm.engines.base import Engine, EngineInfo, EngineOutput, EngineRequest

__all__ = ["Engine", "EngineInfo", "EngineOutput", "EngineRequest"]
