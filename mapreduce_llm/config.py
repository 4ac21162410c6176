"""Job configuration: what a job reads, which prompt it runs, on which engine, within which limits.

Everything a job does is decided by one :class:`JobSpec`, loaded from YAML (``mapreduce-llm run
SPEC.yaml``) or built from CLI flags. Each field is documented where it is declared; the JSON schema
printed by ``mapreduce-llm schema`` is generated from these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mapreduce_llm.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class EngineConfig(_Strict):
    """The inference engine: vLLM inside Ray actors, or an OpenAI-compatible server already running."""

    backend: Literal["vllm", "openai"] = "vllm"
    """Engine backend. ``vllm``: vLLM engines hosted in Ray actors. ``openai``: an OpenAI-compatible server
    (e.g. ``vllm serve``) at ``base_url``, sent token-id prompts on its completions endpoint."""
    model: str | None = None
    """``vllm``: model folder (must already be on disk); None: the embedded SmolLM2-135M-Instruct.
    ``openai``: the served model's name on the server; None: the only model it serves."""
    base_url: str | None = None
    """``openai`` only: the server's API root, e.g. ``http://vllm.internal:8000/v1``."""
    api_key_env: str = "OPENAI_API_KEY"
    """``openai`` only: environment variable holding the API key (keys never go into job specs)."""
    tokenizer: str | None = None
    """``openai`` only: local folder with the served model's tokenizer files, for exact token counts, or
    ``tiktoken`` (cl100k_base) for OpenAI-family models. None: the embedded model's tokenizer."""
    http_retries: Annotated[int, Field(ge=0, le=20)] = 6
    """``openai`` only: retries of one request that failed transiently — answered 429 or 5xx, connection lost,
    or no token for ``request_timeout_s`` — and of the model listing at start; then the document gets an
    ``engine_request`` error record. Delays as for ``request_retries``."""
    http_timeout_s: Annotated[float, Field(gt=0)] = 600
    """``openai`` only: seconds to wait for the model listing at start, and for the server to take a request
    (connect, send). Completions are streamed: a long answer is never cut by this, ``request_timeout_s``
    abandons one that stops producing tokens."""
    served_model_name: str | None = None
    """Name recorded in results. Default: the model folder's name."""
    max_model_len: Annotated[int, Field(ge=256)] = 2048
    """Context window in tokens: every request (prompt + reserved output) fits inside it."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weights dtype. ``auto``: decided where the engine runs — the model's own dtype on a GPU, bfloat16 on a
    CPU with native bf16 (avx512_bf16/AMX), float32 on other CPUs, where bf16 is emulated several times slower
    (see ``mapreduce_llm.engines.dtype``). The choice is logged as ``engine.dtype`` when the engine starts."""
    kv_cache_space_gib: Annotated[int, Field(ge=1)] = 2
    """CPU engines only: KV cache size in GiB (``VLLM_CPU_KVCACHE_SPACE``)."""
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    """GPU engines only: share of GPU memory vLLM may use."""
    replicas: Annotated[int, Field(ge=1)] = 1
    """Number of engine actors (each holds one full copy of the model)."""
    num_gpus_per_replica: Annotated[float, Field(ge=0)] = 0
    """GPUs per engine actor. 0 on CPU machines; ``tensor_parallel_size`` or more on GPU clusters."""
    num_cpus_per_replica: Annotated[float, Field(ge=0)] = 1
    """CPUs Ray reserves for each engine actor."""
    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1
    """GPUs one engine shards the model over."""
    max_concurrent_requests: Annotated[int, Field(ge=1)] = 64
    """Requests in flight per engine actor; vLLM batches them continuously."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt prefixes (instructions come first in every prompt)."""
    block_size: Annotated[int, Field(ge=1)] | None = 32
    """KV cache block size in tokens. The prefix cache reuses whole blocks only, so instructions shorter
    than one block are never reused: vLLM-CPU's own default (128) is longer than the shipped prompts'
    instructions; 32 is the smallest size its kernels are tuned for. None: vLLM's default."""
    seed: int = 0
    """Sampling seed, for reproducible outputs."""
    startup_timeout_s: Annotated[float, Field(gt=0)] = 600
    """How long to wait for an engine to load its model before failing the job."""
    request_timeout_s: Annotated[float, Field(gt=0)] = 900
    """A request is abandoned (cancelled in the engine) and retried when the engine serving it — its vLLM
    replica, or the OpenAI-compatible server's streams to this job — has produced no token for this long.
    It measures a stopped engine, not a slow request: time queued or batched behind other requests while the
    engine produces theirs does not count, however long the request takes. Checked every
    min(request_timeout_s / 4, 5 s)."""
    request_retries: Annotated[int, Field(ge=0, le=10)] = 2
    """``vllm`` only: retries of one request that failed transiently (an engine error, or no token for
    ``request_timeout_s``); then the document gets an ``engine_request`` error record, while the others go on.
    Rejected requests are not retried."""
    retry_backoff_s: Annotated[float, Field(ge=0)] = 1.0
    """Delay before the first retry of a request; it doubles at each further retry, plus a random jitter of up
    to this much, so that requests that failed together do not come back together."""
    retry_backoff_max_s: Annotated[float, Field(ge=0)] = 30
    """Longest delay between two attempts of one request (before jitter). So a request whose engine has stopped
    ends within (retries + 1) × request_timeout_s + retries × (this + retry_backoff_s), or sooner when the
    circuit breaker trips."""
    circuit_breaker_failures: Annotated[int, Field(ge=1)] = 8
    """Failed engine attempts in a row — engine errors, HTTP 5xx, lost connections, no token for
    ``request_timeout_s``; no request succeeded in between — after which the job stops sending and fails with
    an EngineError, keeping the documents already finished (a rerun resumes). Rejected requests and HTTP 429
    (the server asks to be called later) neither count nor reset the count."""
    circuit_breaker_after_s: Annotated[float, Field(ge=0)] = 60
    """The circuit breaker opens only when, besides ``circuit_breaker_failures`` failures in a row, no request
    has succeeded for this long: a server restart that fails the 64 requests in flight at once is survived
    (their retries succeed), a stopped engine is not."""
    max_restarts: Annotated[int, Field(ge=0)] = 3
    """Times Ray restarts a crashed engine actor; requests in flight on it are retried after the restart."""
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments forwarded to vLLM's ``AsyncEngineArgs`` as they are."""

    @property
    def retries(self) -> int:
        """Retries of one request on this backend: ``http_retries`` (openai) or ``request_retries`` (vllm)."""
        return self.http_retries if self.backend == "openai" else self.request_retries

    @model_validator(mode="after")
    def _gpus_cover_tensor_parallel(self) -> EngineConfig:
        if self.num_gpus_per_replica and self.num_gpus_per_replica < self.tensor_parallel_size:
            raise ValueError(
                f"num_gpus_per_replica must be at least tensor_parallel_size ({self.tensor_parallel_size}), "
                f"got {self.num_gpus_per_replica}; raise num_gpus_per_replica or lower tensor_parallel_size"
            )
        return self

    @model_validator(mode="after")
    def _openai_needs_base_url(self) -> EngineConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(
                "backend openai needs base_url, got none; set engine.base_url to the server's API root, "
                "e.g. http://127.0.0.1:8000/v1"
            )
        return self


class SamplingConfig(_Strict):
    """Sampling overrides; unset fields take the prompt file's defaults."""

    temperature: Annotated[float, Field(ge=0)] | None = None
    """0 is greedy decoding."""
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    """Nucleus sampling mass."""
    repetition_penalty: Annotated[float, Field(gt=0)] | None = None
    """>1 discourages repeating tokens (small models loop without it)."""
    reserved_output_tokens: Annotated[int, Field(ge=16)] | None = None
    """Tokens kept free for each output (its ``max_tokens``)."""


class ChunkingConfig(_Strict):
    """How documents are cut into chunks, counted in the served model's tokens."""

    max_chunk_tokens: Annotated[int, Field(ge=32)] | None = None
    """Cap on chunk size below the budget (smaller chunks: more parallel calls, more map outputs).
    None: use the whole budget = max_model_len − rendered map prompt − reserved output tokens."""
    min_chunk_fraction: Annotated[float, Field(ge=0.1, le=1.0)] = 0.5
    """A chunk ends at the best boundary (paragraph > sentence/line > word) found in the last
    (1 − this) share of the budget; lower values favour cleaner boundaries over fuller chunks."""


class ReduceConfig(_Strict):
    """How partial outputs are merged."""

    max_levels: Annotated[int, Field(ge=1, le=32)] = 8
    """Upper bound on reduce levels (collapse levels + the final reduce). Reaching it fails the document."""


class RetrievalConfig(_Strict):
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


class CacheConfig(_Strict):
    """Content-addressed cache of engine outputs: a rerun reuses every finished request."""

    enabled: bool = True
    """Store every engine output and reuse it when the same request comes again."""
    path: Path | None = None
    """SQLite file of the cache. Default: ``OUTPUT/cache.sqlite``; a shared path on clusters."""


class LimitsConfig(_Strict):
    """Limits on input documents; a document over a limit becomes an error record."""

    max_document_bytes: Annotated[int, Field(ge=1)] = 20_000_000
    """Largest accepted document, in UTF-8 bytes."""
    max_documents_in_flight: Annotated[int, Field(ge=1)] = 16
    """Documents processed at once; others wait. Bounds memory and lets finished documents reduce early."""
    max_buffered_results: Annotated[int, Field(ge=1)] = 256
    """Finished results held in memory while an earlier, slower document is still running (results.jsonl
    is written in input order); when full, reading pauses until the slow document finishes, so at most this
    many plus ``max_documents_in_flight`` are ever held."""


class JobSpec(_Strict):
    """One batch job: read documents, map a prompt over their chunks, reduce, write results."""

    input: Path
    """A JSONL file (one ``{"id", "text", "question"?, ...}`` per line), a folder of .txt/.md files, or one file."""
    output: Path
    """Folder for ``results.jsonl`` and ``summary.json`` (created if missing)."""
    job_id: str | None = None
    """Identifies the job in logs, metrics and the summary. Default: the output folder's name."""
    prompt: str = "summarize"
    """Prompt reference: ``TASK`` (latest version) or ``TASK@VERSION``, e.g. ``qa@1.0.0``."""
    follow_symlinks: bool = False
    """Read symbolic links in an input folder that point outside it. Off: such a link gets a ``symlink``
    error record and its target is never read (nor uploaded by ``submit``)."""
    prompts_dir: Path | None = None
    """Folder of prompt files. Default: ``$MAPREDUCE_LLM_PROMPTS``, else ./prompts, else the project's prompts/."""
    engine: EngineConfig = Field(default_factory=EngineConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    reduce: ReduceConfig = Field(default_factory=ReduceConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)

    @property
    def resolved_job_id(self) -> str:
        """The job id, defaulting to the output folder's name."""
        return self.job_id or self.output.resolve().name


def _friendly(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = f", got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"  {where}: {err['msg']}{got}")
    return ConfigError(
        f"invalid job spec {source}:\n" + "\n".join(lines) + "\nSee `mapreduce-llm schema` for every field.",
        parameter=".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else None,
    )


def build_spec(data: dict[str, Any], source: str = "(arguments)") -> JobSpec:
    """Validate a mapping into a :class:`JobSpec`, turning pydantic errors into one readable ConfigError."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise _friendly(exc, source) from None


def load_spec(path: Path, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Load a YAML job spec; relative ``input``/``output`` paths are taken from the spec file's folder.

    ``overrides`` (e.g. from CLI flags) replace top-level keys of the file.
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
    raw.update(overrides or {})
    for key in ("input", "output", "prompts_dir"):
        if isinstance(raw.get(key), str) and not Path(raw[key]).is_absolute():
            raw[key] = str(path.parent / raw[key])
    return build_spec(raw, source=str(path))


def job_spec_json_schema() -> dict[str, Any]:
    """The JSON schema of :class:`JobSpec`, generated from the model."""
    return JobSpec.model_json_schema()
