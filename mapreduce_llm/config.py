"""Job configuration: what a job reads, which prompt it runs, on which engine, within which limits.

Everything a job does is decided by one :class:`JobSpec`, loaded from YAML (``mapreduce-llm run
SPEC.yaml``) or built from CLI flags, which are overrides by dotted path (:func:`apply_overrides`). Each field is
documented where it is declared; the JSON schema printed by ``mapreduce-llm schema`` is generated from these
models. The engine section (one model per backend) is declared in :mod:`mapreduce_llm.engines.config`.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from mapreduce_llm.common import StrictModel
from mapreduce_llm.engines.config import (
    BACKENDS,
    Backend,
    EngineConfig,
    OpenAIEngineConfig,
    VLLMEngineConfig,
)
from mapreduce_llm.errors import ConfigError

__all__ = [
    "BACKENDS",
    "Backend",
    "CacheConfig",
    "ChunkingConfig",
    "EngineConfig",
    "JobSpec",
    "LimitsConfig",
    "OpenAIEngineConfig",
    "ReduceConfig",
    "RetrievalConfig",
    "SamplingConfig",
    "VLLMEngineConfig",
    "apply_overrides",
    "build_spec",
    "job_spec_json_schema",
    "load_spec",
]


class SamplingConfig(StrictModel):
    """Sampling overrides; unset fields take the prompt file's defaults."""

    temperature: Annotated[float, Field(ge=0)] | None = None
    """0 is greedy decoding."""
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    """Nucleus sampling mass."""
    repetition_penalty: Annotated[float, Field(gt=0)] | None = None
    """>1 discourages repeating tokens, the prompt's included (small models loop without a penalty)."""
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    """>0 discourages repeating the output's own tokens, by how often each already occurs (OpenAI's field)."""
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    """>0 discourages reusing any token already in the output (OpenAI's field)."""
    reserved_output_tokens: Annotated[int, Field(ge=16)] | None = None
    """Tokens kept free for each output (its ``max_tokens``)."""


class ChunkingConfig(StrictModel):
    """How documents are cut into chunks, counted in the served model's tokens."""

    max_chunk_tokens: Annotated[int, Field(ge=32)] | None = None
    """Cap on chunk size below the budget (smaller chunks: more parallel calls, more map outputs).
    None: use the whole budget = max_model_len − rendered map prompt − reserved output tokens."""
    min_chunk_fraction: Annotated[float, Field(ge=0.1, le=1.0)] = 0.5
    """A chunk ends at the best boundary (paragraph > sentence/line > word) found in the last
    (1 − this) share of the budget; lower values favour cleaner boundaries over fuller chunks."""


class ReduceConfig(StrictModel):
    """How partial outputs are merged."""

    max_levels: Annotated[int, Field(ge=1, le=32)] = 8
    """Upper bound on reduce levels (collapse levels + the final reduce). Reaching it fails the document."""


class RetrievalConfig(StrictModel):
    """Chunk-to-query similarity (all-MiniLM-L6-v2), retrieval of the relevant chunks, and re-retrieval.

    The query is the prompt's ``query`` template (e.g. extract's ``{field}``), else the document's question,
    else the task's description.
    """

    similarity: bool | None = None
    """Embed the query and every chunk; each chunk's cosine similarity goes into the result and the metrics.
    Needed by ``mode: top_k``, the evidence relevance check and re-retrieval. None (default): on for
    ``output: answer`` prompts and ``mode: top_k``, off otherwise. Costs one embedding pass over the chunks'
    first 256 word pieces (the model loads once per process, in about 8 s)."""
    mode: Literal["all", "top_k"] = "all"
    """``all``: map every chunk. ``top_k``: map only the ``top_k`` chunks most similar to the query that
    reach ``min_similarity`` (RAG): fewer map calls, but an answer in a chunk ranked lower is missed."""
    top_k: Annotated[int, Field(ge=1)] = 4
    """Chunks mapped per document in ``top_k`` mode."""
    min_similarity: Annotated[float, Field(ge=-1, le=1)] | None = None
    """In ``top_k`` mode, also skip chunks less similar than this (a document with none maps nothing and is
    answered "not found")."""
    reretrieve: bool = True
    """For ``output: answer`` prompts calibrated for the served model: when the final answer's confidence is
    under the calibrated ``reduce_min_confidence``, use the question and the tentative answer as a new query,
    retrieve the most similar passages of the document and answer again from them (FLARE)."""
    reretrieve_not_found: bool = True
    """Also re-retrieve when no chunk gave an answer that passed the checks, with the question alone as the
    query: a small model often misses a fact in a long chunk that it finds in a few short passages. The new
    answer must pass the same evidence checks as a map answer and the calibrated re-retrieval thresholds."""
    max_rounds: Annotated[int, Field(ge=1, le=5)] = 2
    """Re-retrieval rounds at most per document."""
    passage_tokens: Annotated[int, Field(ge=16)] = 96
    """Size of the passages re-retrieval ranks (finer than chunks, so the new prompt holds only the best text)."""
    passages: Annotated[int, Field(ge=1, le=32)] = 3
    """Passages given to a re-retrieval call (fewer if they do not fit the map prompt's budget)."""

    def similarity_for(self, output: str) -> bool:
        """Whether a prompt version with this ``output`` kind gets chunk similarities."""
        if self.similarity is not None:
            return self.similarity
        return output == "answer" or self.mode == "top_k"

    @model_validator(mode="after")
    def _top_k_needs_similarity(self) -> RetrievalConfig:
        if self.mode == "top_k" and self.similarity is False:
            raise ValueError("retrieval.mode top_k ranks chunks by similarity; set retrieval.similarity: true")
        return self


class CacheConfig(StrictModel):
    """Content-addressed cache of engine outputs: a rerun reuses every finished request."""

    enabled: bool = True
    """Store every engine output and reuse it when the same request comes again."""
    path: Path | None = None
    """SQLite file of the cache. Default: ``OUTPUT/cache.sqlite``; a shared path on clusters."""


class LimitsConfig(StrictModel):
    """Limits on input documents; a document over a limit becomes an error record."""

    max_document_bytes: Annotated[int, Field(ge=1)] = 20_000_000
    """Largest accepted document, in UTF-8 bytes."""
    max_documents_in_flight: Annotated[int, Field(ge=1)] = 16
    """Documents processed at once; others wait. Bounds memory and lets finished documents reduce early."""
    max_buffered_results: Annotated[int, Field(ge=1)] = 256
    """Finished results held in memory while an earlier, slower document is still running (results.jsonl
    is written in input order); when full, reading pauses until the slow document finishes, so at most this
    many plus ``max_documents_in_flight`` and ``read_ahead`` are ever held."""
    read_ahead: Annotated[int, Field(ge=0, le=1024)] = 8
    """Documents read ahead of the ones in flight; when a place frees up, the longest document read so far
    starts first, so a long document's reduce tree overlaps the short ones' maps instead of running alone at
    the end. Results are still written in input order. 0: documents start in input order."""


DRIFT_MIN_DOCUMENTS = 40
"""Default ``monitoring.drift_min_documents`` (and of ``drift check --min-documents``)."""
DRIFT_MIN_CHUNKS = 40
"""Default ``monitoring.drift_min_chunks`` (and of ``drift check --min-chunks``)."""


class MonitoringConfig(StrictModel):
    """What a job exports for Prometheus and Grafana, and the drift it scores (see monitoring/README.md).

    It is part of the spec, so a job sent with ``submit`` or run as a RayJob is monitored like a local one.
    """

    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """Serve Prometheus ``/metrics`` on this port while the job runs (0: any free port); None: not served."""
    metrics_host: str = "127.0.0.1"
    """Address ``/metrics`` binds to (``0.0.0.0`` for a scrape from another host, e.g. a pod)."""
    metrics_linger_s: Annotated[float, Field(ge=0)] = 0.0
    """Keep serving ``/metrics`` this long after the job ends, so that a scrape sees its final figures (e.g. the
    scrape interval, when no Pushgateway keeps them). The job's command returns that much later."""
    pushgateway: str | None = None
    """Push the job's final figures to this Prometheus Pushgateway URL (grouped by job id and task)."""
    embed: bool | None = None
    """Embed chunks (all-MiniLM-L6-v2) for document profiles, topics and ``DIR/profile.jsonl``. None: on when
    a ``baseline`` is given."""
    baseline: str | None = None
    """Score drift against this baseline (``mapreduce-llm drift baseline``); scores go to the metrics and to
    ``summary.json``."""
    baselines_dir: Path | None = None
    """Folder of baselines. Default: ``$MAPREDUCE_LLM_BASELINES``, else ./baselines."""
    drift_min_documents: Annotated[int, Field(ge=1)] = DRIFT_MIN_DOCUMENTS
    """Drift of a task@version with fewer documents than this on either side (the job's or the baseline's) is
    not scored: it is reported as ``insufficient`` with the counts (summary.json, the
    ``mapreduce_llm_drift_insufficient`` gauge) and nothing is alerted on. In the drift scenario (README), PSI over
    20 documents of an unchanged kind crossed its alert threshold in up to 6 draws of 10; over 40, in 2."""
    drift_min_chunks: Annotated[int, Field(ge=1)] = DRIFT_MIN_CHUNKS
    """The same minimum for chunks on either side."""

    @property
    def enabled(self) -> bool:
        """True when the job exports or profiles anything."""
        return self.metrics_port is not None or bool(self.pushgateway) or bool(self.embed) or bool(self.baseline)


class JobSpec(StrictModel):
    """One batch job: read documents, map a prompt over their chunks, reduce, write results."""

    input: Path
    """A JSONL file (one ``{"id", "text", "question"?, ...}`` or OpenAI batch line ``{"custom_id", "method",
    "url", "body"}`` per line), a folder of .txt/.md files, or one file."""
    output: Path
    """Folder for ``results.jsonl`` and ``summary.json`` (created if missing)."""
    output_format: Literal["results", "batch"] = "results"
    """``results``: the output folder gets ``results.jsonl`` and ``summary.json``. ``batch``: also
    ``batch_output.jsonl`` and ``batch_errors.jsonl``, every result as an OpenAI batch output or error line
    (custom_id = the document id; the batch service's shape), written when the job completes."""
    job_id: str | None = None
    """Identifies the job in logs, metrics and the summary. Default: the output folder's name."""
    prompt: str = "summarize"
    """Prompt reference: ``TASK`` (latest version) or ``TASK@VERSION``, e.g. ``qa@1.0.0``."""
    follow_symlinks: bool = False
    """Read symbolic links in an input folder that point outside it. Off: such a link gets a ``symlink``
    error record and its target is never read (nor uploaded by ``submit``)."""
    prompts_dir: Path | None = None
    """Folder of prompt files. Default: ``$MAPREDUCE_LLM_PROMPTS``, else ./prompts, else the project's prompts/."""
    engine: EngineConfig = Field(default_factory=VLLMEngineConfig)
    """The inference engine: vLLM inside Ray actors (``backend: vllm``, the default), or an OpenAI-compatible
    server already running (``backend: openai``)."""
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    reduce: ReduceConfig = Field(default_factory=ReduceConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @property
    def resolved_job_id(self) -> str:
        """The job id, defaulting to the output folder's name."""
        return self.job_id or self.output.resolve().name


def _friendly(exc: ValidationError, source: str) -> ConfigError:
    """One ConfigError for every problem pydantic found, each line naming the field by its dotted path."""
    lines, fields = [], []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if len(loc) > 1 and loc[0] == "engine" and loc[1] in BACKENDS:
            del loc[1]  # the union's tag: the field is engine.X whatever the backend
        got = f", got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
        if err["type"] == "wrong_backend":
            fields.append(str((err.get("ctx") or {})["field"]))
            lines.append(f"  {err['msg']}")
            continue
        if err["type"] == "backend":
            loc, got = ["engine", "backend"], f", got {err['input'].get('backend')!r}"
        fields.append(".".join(loc))
        lines.append(f"  {'.'.join(loc) or '(top level)'}: {err['msg']}{got}")
    return ConfigError(
        f"invalid job spec {source}:\n" + "\n".join(lines) + "\nSee `mapreduce-llm schema` for every field.",
        parameter=fields[0] if fields else None,
    )


def build_spec(data: Mapping[str, Any], source: str = "(arguments)") -> JobSpec:
    """Validate a mapping into a :class:`JobSpec`, turning pydantic errors into one readable ConfigError."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise _friendly(exc, source) from None


def apply_overrides(
    spec: JobSpec | Mapping[str, Any], overrides: Mapping[str, Any], source: str = "(overrides)"
) -> JobSpec:
    """``spec`` (a JobSpec, or a mapping not validated yet) with ``overrides`` applied, validated.

    Keys are dotted paths of job spec fields: ``{"engine.max_model_len": 4096, "retrieval.top_k": "3"}``; a key
    below a mapping field sets one entry (``engine.engine_kwargs.enforce_eager``). A string value is read as a
    YAML scalar (``4096``, ``0.5``, ``true``, ``null``, ``[a, b]``, ``{k: v}``), except for fields that take
    text, which keep it as written (``job_id=2024`` is the text "2024"; ``null`` still unsets an optional one).
    Raises ConfigError naming the key when it is not a field (with the fields there are), or when its value is
    not valid for the field.
    """
    if isinstance(spec, JobSpec):
        data = spec.model_dump(exclude_unset=True)
        data.setdefault("engine", {})["backend"] = spec.engine.backend  # a default that decides the section
    else:
        data = copy.deepcopy(dict(spec))
    for key, value in overrides.items():
        parts, annotation = _setting(key)
        target = data
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = _parsed(value, annotation)
    return build_spec(data, source)


def _setting(key: str) -> tuple[list[str], Any]:
    """A dotted key's parts and the annotation of the field it names; ConfigError when there is no such field."""
    parts = key.split(".")
    models: list[type[BaseModel]] = [JobSpec]
    annotation: Any = JobSpec
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth])
        if not models:
            if _origin(annotation) is dict:
                return parts, Any  # a key inside a mapping field (engine.engine_kwargs.X): any value
            raise ConfigError(
                f"unknown setting {key!r}: {where} is a value, not a section; set {where}=VALUE", parameter=key
            )
        fields = {name: f for model in models for name, f in model.model_fields.items()}
        if part not in fields:
            close = difflib.get_close_matches(part, fields, n=1)
            hint = f"did you mean {'.'.join([*parts[:depth], close[0]])}? " if close else ""
            raise ConfigError(
                f"unknown setting {key!r}: {hint}{where or 'a job spec'} has {', '.join(sorted(fields))}",
                parameter=key,
            )
        annotation = fields[part].annotation
        models = _models_in(annotation)
    return parts, annotation


def _parsed(value: Any, annotation: Any) -> Any:
    """A setting's value: a string read as YAML, unless the field takes text (then only null/~ is read)."""
    if not isinstance(value, str):
        return value
    if _takes_text(annotation):
        return None if value.strip() in ("null", "~") else value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # validation then says what the field takes


def _origin(annotation: Any) -> Any:
    return typing.get_origin(annotation)


def _args(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union (or the type itself), with Annotated metadata removed."""
    if _origin(annotation) is Annotated:
        return _args(typing.get_args(annotation)[0])
    if _origin(annotation) in (Union, types.UnionType):
        return tuple(a for arg in typing.get_args(annotation) for a in _args(arg))
    return (annotation,)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The sections a field holds: its model, or each model of a union (the engine's backends)."""
    return [a for a in _args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def _takes_text(annotation: Any) -> bool:
    """Whether a field accepts free text or a path (a YAML reading of the value would change it)."""
    for arg in _args(annotation):
        if arg in (str, Path) or (_origin(arg) is Literal and any(isinstance(v, str) for v in typing.get_args(arg))):
            return True
    return False


def load_spec(path: Path, overrides: Mapping[str, Any] | None = None) -> JobSpec:
    """Load a YAML job spec; relative ``input``/``output``/``prompts_dir`` paths are taken from the spec file's
    folder.

    ``overrides`` (e.g. from CLI flags) are applied as by :func:`apply_overrides`, after the file's paths are
    resolved: a relative path given as an override is relative to the working folder.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"job spec {path} does not exist; check the path", parameter="spec") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"job spec {path} is not valid YAML: {exc}", parameter="spec") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"job spec {path} must be a YAML mapping, got {type(raw).__name__}", parameter="spec")
    for key in ("input", "output", "prompts_dir"):
        if isinstance(raw.get(key), str) and not Path(raw[key]).is_absolute():
            raw[key] = str(path.parent / raw[key])
    if overrides:
        return apply_overrides(raw, overrides, source=f"{path} with overrides")
    return build_spec(raw, source=str(path))


def job_spec_json_schema() -> dict[str, Any]:
    """The JSON schema of :class:`JobSpec`, generated from the model."""
    return JobSpec.model_json_schema()
