"""Job specs: validated at the boundary with messages that name the field, schema generated from the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapreduce_llm.config import EngineConfig, JobSpec, job_spec_json_schema, load_spec
from mapreduce_llm.errors import ConfigError


def test_schema_is_generated_with_descriptions() -> None:
    """The JSON schema comes from the pydantic model and documents every engine field."""
    schema = job_spec_json_schema()
    assert set(schema["required"]) == {"input", "output"}
    engine = schema["$defs"]["EngineConfig"]["properties"]
    assert set(engine) == set(EngineConfig.model_fields)
    assert all(prop.get("description") for prop in engine.values())


def test_spec_paths_are_relative_to_the_spec_file(tmp_path: Path) -> None:
    """input/output in a spec file are read relative to the file, not the working directory."""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("input: docs\noutput: out\nprompt: qa@1.0.0\nengine: {max_model_len: 4096, replicas: 2}\n")
    spec = load_spec(spec_file)
    assert spec.input == tmp_path / "docs" and spec.engine.replicas == 2
    assert spec.resolved_job_id == "out"


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
    """With nothing configured a job serves the embedded model on one CPU engine."""
    spec = JobSpec.model_validate({"input": "a", "output": "b"})
    assert spec.engine.model is None and spec.engine.num_gpus_per_replica == 0 and spec.prompt == "summarize"
