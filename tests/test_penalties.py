"""frequency_penalty and presence_penalty (OpenAI's fields, applied by vLLM to the output's tokens only): from the
prompt file or the job spec to every engine request, into the request cache's key and the settings fingerprint
only when set (so that earlier caches and results stay valid), and through the batch line body."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from mapreduce_llm.batch_format import MapReduceBody
from mapreduce_llm.cache import request_key
from mapreduce_llm.config import JobSpec, SamplingConfig
from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.flows.base import Params
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.prompts.files import Sampling
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS, make_job
from tests.fakes import FakeEngine

KEY_BEFORE_PENALTIES = "b5f38117f0bc094cc65ec537f27e0d87f72ebe939508e39c2e44f3303b68ce80"
"""request_key(EngineRequest("r", [1, 2], 8, "map", repetition_penalty=1.15), "h", "m") as the release before the
penalties computed it: a cache written then must still answer the same requests."""


def _spec(tmp_path: Path, sampling: dict[str, float]) -> JobSpec:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "d", "text": "The bridge opened in 1932. " * 40}) + "\n")
    return JobSpec.model_validate(
        {
            "input": source,
            "output": tmp_path / "out",
            "prompt": "summarize@1.0.0",
            "prompts_dir": PROMPTS,
            "sampling": sampling,
        }
    )


def test_a_spec_override_reaches_every_engine_request(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    spec = _spec(tmp_path, {"frequency_penalty": 0.4, "presence_penalty": -0.2})
    engine = FakeEngine(tokenizer, max_model_len=1024)
    summary = asyncio.run(make_job(spec, select_prompts(spec.prompt, PROMPTS), tokenizer, engine).run())
    assert summary.ok == 1 and engine.requests
    assert {(r.frequency_penalty, r.presence_penalty) for r in engine.requests} == {(0.4, -0.2)}


def test_the_prompt_file_sets_them_and_an_explicit_zero_in_the_spec_wins() -> None:
    prompt = select_prompts("summarize@1.0.0", PROMPTS).base
    version = prompt.file.model_copy(update={"sampling": Sampling(frequency_penalty=0.5, presence_penalty=0.3)})
    prompt = dataclasses.replace(prompt, file=version)
    params = Params.of(prompt, SamplingConfig())
    assert (params.frequency_penalty, params.presence_penalty) == (0.5, 0.3)
    params = Params.of(prompt, SamplingConfig(frequency_penalty=0.0))
    assert (params.frequency_penalty, params.presence_penalty) == (0.0, 0.3)


def test_out_of_range_values_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="frequency_penalty"):
        SamplingConfig(frequency_penalty=2.5)
    with pytest.raises(ValidationError, match="presence_penalty"):
        Sampling(presence_penalty=-3)


def test_unset_penalties_leave_cache_keys_and_fingerprints_as_they_were() -> None:
    base = EngineRequest("r", [1, 2], 8, "map", repetition_penalty=1.15)
    assert request_key(base, "h", "m") == KEY_BEFORE_PENALTIES
    keys = {
        request_key(EngineRequest("r", [1, 2], 8, "map", repetition_penalty=1.15, **penalty), "h", "m")
        for penalty in ({"frequency_penalty": 0.5}, {"presence_penalty": 0.5}, {"frequency_penalty": 0.2})
    }
    assert len(keys) == 3 and KEY_BEFORE_PENALTIES not in keys
    plain = Params(reserve=200, temperature=0.0, top_p=1.0, repetition_penalty=1.15)
    assert plain.fingerprinted() == {"reserve": 200, "temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.15}
    penalised = Params(reserve=200, temperature=0.0, top_p=1.0, repetition_penalty=1.0, frequency_penalty=0.5)
    assert penalised.fingerprinted()["frequency_penalty"] == 0.5 and "presence_penalty" not in penalised.fingerprinted()


def test_a_batch_line_body_carries_them_as_job_settings() -> None:
    body = MapReduceBody(prompt="summarize", text="t", frequency_penalty=0.5, presence_penalty=0.1)
    assert body.settings() == {"sampling.frequency_penalty": 0.5, "sampling.presence_penalty": 0.1}
