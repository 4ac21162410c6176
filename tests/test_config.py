"""Job specs: validated at the boundary with messages that name the field, schema generated from the model,
overrides by dotted path, and an engine section per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mapreduce_llm.config import (
    JobSpec,
    OpenAIEngineConfig,
    VLLMEngineConfig,
    apply_overrides,
    build_spec,
    job_spec_json_schema,
    load_spec,
)
from mapreduce_llm.errors import ConfigError

BASE: dict[str, Any] = {"input": "docs", "output": "out"}
SERVER = {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1"}


def test_schema_is_generated_with_descriptions() -> None:
    """The JSON schema comes from the pydantic models and documents every field of both engine backends."""
    schema = job_spec_json_schema()
    assert set(schema["required"]) == {"input", "output"}
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in schema["properties"]["engine"]["oneOf"]} == {
        "VLLMEngineConfig",
        "OpenAIEngineConfig",
    }
    for model in (VLLMEngineConfig, OpenAIEngineConfig):
        engine = schema["$defs"][model.__name__]["properties"]
        assert set(engine) == set(model.model_fields)
        assert all(prop.get("description") for prop in engine.values())


def test_spec_paths_are_relative_to_the_spec_file(tmp_path: Path) -> None:
    """input/output in a spec file are read relative to the file, not the working directory."""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("input: docs\noutput: out\nprompt: qa@1.0.0\nengine: {max_model_len: 4096, replicas: 2}\n")
    spec = load_spec(spec_file)
    assert spec.input == tmp_path / "docs" and isinstance(spec.engine, VLLMEngineConfig) and spec.engine.replicas == 2
    assert spec.resolved_job_id == "out"


def test_overrides_of_a_spec_file_are_applied_after_its_paths(tmp_path: Path) -> None:
    """load_spec applies dotted overrides; a relative path given as an override stays relative to the caller."""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("input: docs\noutput: out\nengine: {max_model_len: 4096}\n")
    spec = load_spec(spec_file, {"output": "elsewhere", "engine.max_model_len": "1024"})
    assert spec.input == tmp_path / "docs" and spec.output == Path("elsewhere") and spec.engine.max_model_len == 1024


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("input: a\noutput: b\nengine: {max_model_len: 10}\n", "engine.max_model_len"),
        ("input: a\noutput: b\nengine: {repliclas: 2}\n", "engine.repliclas"),
        ("input: a\n", "output"),
        ("input: [a\n", "not valid YAML"),
        ("- a\n- b\n", "must be a YAML mapping"),
        (
            "input: a\noutput: b\nengine: {num_gpus_per_replica: 1, tensor_parallel_size: 2}\n",
            "tensor_parallel_size",
        ),
        ("input: a\noutput: b\nengine: {backend: tgi}\n", "engine.backend must be vllm or openai, got 'tgi'"),
        ("input: a\noutput: b\nengine: {backend: openai}\n", "needs base_url"),
    ],
)
def test_invalid_specs_name_the_field(tmp_path: Path, content: str, message: str) -> None:
    """Every invalid spec is one ConfigError naming the file and the field."""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_spec(spec_file)
    assert message in str(info.value) and str(spec_file) in str(info.value)


def test_defaults_are_the_embedded_cpu_engine() -> None:
    """With nothing configured a job serves the embedded model on one vLLM CPU engine."""
    spec = JobSpec.model_validate(BASE)
    assert isinstance(spec.engine, VLLMEngineConfig) and spec.engine.backend == "vllm"
    assert spec.engine.model is None and spec.engine.num_gpus_per_replica == 0 and spec.prompt == "summarize"


def test_backend_chooses_the_engine_section() -> None:
    """``backend`` picks the section's model (vllm when absent); each backend's retries are its own field."""
    vllm = build_spec({**BASE, "engine": {"request_retries": 4}}).engine
    server = build_spec({**BASE, "engine": {**SERVER, "http_retries": 9}}).engine
    assert isinstance(vllm, VLLMEngineConfig) and vllm.retries == 4
    assert isinstance(server, OpenAIEngineConfig) and server.retries == 9


@pytest.mark.parametrize(
    ("engine", "field", "owner"),
    [
        ({"http_retries": 3}, "engine.http_retries", "openai"),
        ({"base_url": "http://h/v1"}, "engine.base_url", "openai"),
        ({**SERVER, "replicas": 2}, "engine.replicas", "vllm"),
        ({**SERVER, "request_retries": 1}, "engine.request_retries", "vllm"),
        ({**SERVER, "startup_timeout_s": 60}, "engine.startup_timeout_s", "vllm"),
    ],
)
def test_a_field_of_the_other_backend_is_an_error_naming_it(engine: dict[str, Any], field: str, owner: str) -> None:
    """A backend's own field under the other backend is refused, naming the field and the backend it belongs to."""
    with pytest.raises(ConfigError) as info:
        build_spec({**BASE, "engine": engine})
    assert f"{field} belongs to backend {owner}" in str(info.value) and info.value.parameter == field


def test_the_backend_check_holds_for_the_models_too() -> None:
    """Built directly, an engine model refuses the other backend's fields as well (not only through a spec)."""
    with pytest.raises(ValidationError, match=r"engine\.http_retries belongs to backend openai"):
        VLLMEngineConfig.model_validate({"http_retries": 3})


@pytest.mark.parametrize(
    ("key", "value", "read"),
    [
        ("engine.max_model_len", "4096", lambda s: s.engine.max_model_len == 4096),
        ("engine.max_model_len", 4096, lambda s: s.engine.max_model_len == 4096),
        ("engine.dtype", "float32", lambda s: s.engine.dtype == "float32"),
        ("engine.block_size", "null", lambda s: s.engine.block_size is None),
        ("engine.enable_prefix_caching", "false", lambda s: s.engine.enable_prefix_caching is False),
        ("engine.num_cpus_per_replica", "0.5", lambda s: s.engine.num_cpus_per_replica == 0.5),
        ("engine.engine_kwargs", "{enforce_eager: true}", lambda s: s.engine.engine_kwargs == {"enforce_eager": True}),
        ("engine.engine_kwargs.max_num_seqs", "8", lambda s: s.engine.engine_kwargs == {"max_num_seqs": 8}),
        ("engine.model", "/models/llama", lambda s: s.engine.model == "/models/llama"),
        ("sampling.temperature", "0.7", lambda s: s.sampling.temperature == 0.7),
        ("retrieval.mode", "top_k", lambda s: s.retrieval.mode == "top_k"),
        ("retrieval.top_k", "3", lambda s: s.retrieval.top_k == 3),
        ("retrieval.similarity", "true", lambda s: s.retrieval.similarity is True),
        ("chunking.max_chunk_tokens", "null", lambda s: s.chunking.max_chunk_tokens is None),
        ("cache.path", "shared/cache.sqlite", lambda s: s.cache.path == Path("shared/cache.sqlite")),
        ("limits.max_document_bytes", "1_000", lambda s: s.limits.max_document_bytes == 1000),
        ("reduce.max_levels", "4", lambda s: s.reduce.max_levels == 4),
        ("job_id", "2024", lambda s: s.job_id == "2024"),
        ("job_id", "null", lambda s: s.job_id is None),
        ("prompt", "qa@1.0.0", lambda s: s.prompt == "qa@1.0.0"),
        ("follow_symlinks", "yes", lambda s: s.follow_symlinks is True),
        ("output", "out/2024-01-01", lambda s: s.output == Path("out/2024-01-01")),
    ],
)
def test_overrides_set_any_field_by_dotted_path(key: str, value: Any, read: Any) -> None:
    """Every kind of field takes an override; strings are read as YAML, except where the field takes text."""
    spec = apply_overrides({**BASE, "chunking": {"max_chunk_tokens": 512}}, {key: value})
    assert read(spec), spec.model_dump()


def test_overrides_apply_to_a_validated_spec_and_keep_its_settings() -> None:
    """A JobSpec with overrides keeps every field not overridden, its backend included."""
    spec = build_spec({**BASE, "engine": {**SERVER, "http_retries": 2}, "retrieval": {"top_k": 9}})
    changed = apply_overrides(spec, {"engine.request_timeout_s": "30", "retrieval.mode": "top_k"})
    assert isinstance(changed.engine, OpenAIEngineConfig)
    assert (changed.engine.http_retries, changed.engine.request_timeout_s) == (2, 30)
    assert (changed.retrieval.top_k, changed.retrieval.mode) == (9, "top_k")
    assert changed.engine.model_fields_set == spec.engine.model_fields_set | {"request_timeout_s"}


@pytest.mark.parametrize(
    ("overrides", "message", "parameter"),
    [
        ({"engine.max_modle_len": 1}, "did you mean engine.max_model_len", "engine.max_modle_len"),
        ({"retrieval.nope": 1}, "retrieval has max_rounds, min_similarity, mode", "retrieval.nope"),
        ({"retrieval.top_k.x": 1}, "retrieval.top_k is a value, not a section", "retrieval.top_k.x"),
        ({"engine.max_model_len": "lots"}, "engine.max_model_len: Input should be a valid integer", None),
        ({"retrieval.mode": "some"}, "retrieval.mode: Input should be 'all' or 'top_k', got 'some'", None),
        ({"engine.http_retries": "3"}, "engine.http_retries belongs to backend openai", None),
        ({"engine.backend": "openai"}, "needs base_url", "engine"),
    ],
)
def test_bad_overrides_name_the_key(overrides: dict[str, Any], message: str, parameter: str | None) -> None:
    """An unknown key lists what there is; a bad value says what the field takes; both name the key (the error's
    ``parameter``: the key, unless the section as a whole is wrong)."""
    with pytest.raises(ConfigError) as info:
        apply_overrides(BASE, overrides, source="(command line)")
    assert message in str(info.value)
    assert info.value.parameter == (parameter or next(iter(overrides)))
