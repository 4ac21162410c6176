"""Result records: what a job writes about each document and about itself.

``DIR/results.jsonl`` holds one :class:`DocumentResult` per input document, in input order; ``DIR/summary.json``
holds the :class:`JobSummary`. Where and how they are written (atomically, resumably) is :mod:`mapreduce_llm.output`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from mapreduce_llm.common import DocumentStatus, JobStatus, MapStatus, RecordModel

if TYPE_CHECKING:
    from mapreduce_llm.errors import DocumentError
    from mapreduce_llm.prompts import PromptRef


class PromptInfo(RecordModel):
    """Which prompt produced a result."""

    name: str
    version: str


class Provenance(RecordModel):
    """A chunk whose text fed the output: id and character span in the document.

    For ``output: answer`` prompts the span is the evidence quote's, found in the document, and ``quote``
    is that text.
    """

    chunk_id: str
    start: int
    end: int
    quote: str | None = None


class MapAnswer(RecordModel):
    """What one chunk's map call answered (``output: answer`` prompts), and what became of it."""

    chunk_id: str
    status: MapStatus
    """``kept``: passed to the reducer. ``unsupported``: its quote or answer is not in the chunk.
    ``low_confidence``: under the calibrated confidence. ``off_topic``: its quote is less similar to the
    question than calibrated. ``parse_failure``: no valid record."""
    answer: str | None = None
    confidence: float | None = None
    """Mean logprob of the answer's tokens."""
    evidence_similarity: float | None = None
    """Cosine similarity of the evidence quote to the question (when it was checked)."""
    detail: str | None = None
    """Why it was not kept (e.g. the parse error)."""


class RetrievalInfo(RecordModel):
    """How the document's chunks compare with its query (``retrieval.similarity``)."""

    query: Literal["question", "prompt", "task"]
    """What the chunks were compared with: the question, the prompt's ``query`` template, or the task's
    description."""
    mode: Literal["all", "top_k"]
    similarities: list[float]
    """Cosine similarity of the query to each chunk, in chunk order."""
    mapped: list[int]
    """Indices of the chunks that were mapped (all of them in mode ``all``)."""


class ReretrievalRound(RecordModel):
    """One re-retrieval: the query, the passages it found, and the answer from them."""

    query: str
    passages: list[Provenance]
    answer: str | None = None
    confidence: float | None = None
    evidence_similarity: float | None = None
    accepted: bool = False
    """True when this answer replaced the previous one (supported by the passages and more confident)."""
    detail: str | None = None


class ReretrievalInfo(RecordModel):
    """Whether re-retrieval ran for a document, why, and what each round did."""

    triggered: bool
    reason: str
    rounds: list[ReretrievalRound] = Field(default_factory=list)


class Usage(RecordModel):
    """Engine work spent on one document."""

    requests: dict[str, int] = Field(default_factory=dict)
    """Engine requests per stage (map, collapse, reduce)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Prompt tokens vLLM served from its prefix cache."""
    requests_from_cache: int = 0
    """Requests answered from the job's output cache (finished in an earlier run) instead of the engine."""


class Timings(RecordModel):
    """Wall-clock seconds for one document."""

    plan_s: float = 0.0
    map_s: float = 0.0
    reduce_s: float = 0.0
    total_s: float = 0.0


class ErrorInfo(RecordModel):
    """Why a document failed: a stable code and a message naming what is wrong and what to do."""

    code: str
    message: str


class Fingerprints(RecordModel):
    """What a result was computed from (see :mod:`mapreduce_llm.fingerprints`); a rerun reuses the result
    only when both still match."""

    input: str
    """Hash of the document's text, question and metadata."""
    settings: str
    """Hash of the prompt version's content and calibration, sampling, output reserve, context length,
    chunking, retrieval and reduce settings, and the model's identity (from its files)."""


class DocumentResult(RecordModel):
    """One line of results.jsonl."""

    id: str
    status: DocumentStatus
    output: str | None = None
    """The final output (status ok)."""
    error: ErrorInfo | None = None
    """What went wrong (status error)."""
    source: str | None = None
    """Where the document was read from (file, or file:line)."""
    prompt: PromptInfo | None = None
    model: str | None = None
    question: str | None = None
    chunks: int = 0
    """Number of chunks the document was cut into."""
    levels: int = 0
    """Reduce levels used: 0 when the single chunk's map output is final, 1 for one reduce call,
    more when partial outputs were collapsed first."""
    not_found: bool | None = None
    """Question answering: True when no chunk contained an answer."""
    mean_logprob: float | None = None
    """Mean token logprob of the final output (confidence signal; higher is surer)."""
    confidence: float | None = None
    """``output: answer`` prompts: mean logprob of the final answer's tokens (the reduce call's, or the
    chosen map answer's when only one was kept, or the accepted re-retrieval's)."""
    provenance: list[Provenance] = Field(default_factory=list)
    """Chunks whose map outputs fed the final output, with their character spans; for ``output: answer``
    prompts, the evidence quotes the final answer rests on."""
    answers: list[MapAnswer] = Field(default_factory=list)
    """``output: answer`` prompts: every mapped chunk's answer, best confidence first."""
    parse_failures: int = 0
    """Engine outputs that held no valid answer record."""
    retrieval: RetrievalInfo | None = None
    reretrieval: ReretrievalInfo | None = None
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    metadata: dict[str, Any] = Field(default_factory=dict)
    """The input document's other fields, unchanged."""
    fingerprints: Fingerprints | None = None
    """What the result was computed from; None on records of documents that could not be read."""

    @property
    def ok(self) -> bool:
        """The document has an output."""
        return self.status == "ok"

    @property
    def failed(self) -> bool:
        """The document has an error record instead of an output."""
        return self.status == "error"


DriftStatus = Literal["scored", "insufficient"]


class VersionDrift(RecordModel):
    """Drift of one task and prompt version's documents against its baseline reference (summary.json ``drift``).

    ``insufficient``: fewer documents or chunks than ``monitoring.drift_min_documents`` / ``drift_min_chunks`` on
    either side (the job's or the baseline's); no score is given, so none is exported or alerted on.
    """

    status: DriftStatus
    documents: int | None = None
    """The job's documents of this version (None in summaries written before the guard)."""
    chunks: int | None = None
    baseline_documents: int | None = None
    baseline_chunks: int | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    """PSI, or cosine distance for ``embedding_centroid``, per signal; empty when ``insufficient``."""
    mmd: float | None = None
    """Unbiased MMD² between samples of the baseline's and the job's chunk embeddings (RBF kernel)."""
    mmd_p_value: float | None = None
    """Permutation p-value of ``mmd``: small when the two samples do not come from one distribution."""
    note: str | None = None
    """Why scores or the p-value are missing, when they are."""

    @model_validator(mode="before")
    @classmethod
    def _from_scores_only(cls, data: Any) -> Any:
        """Summaries written before the guard hold the scores alone: ``{signal: score}``."""
        if isinstance(data, dict) and "status" not in data:
            return {"status": "scored", "scores": data}
        return data


class JobSummary(RecordModel):
    """summary.json: what one job did."""

    job_id: str
    status: JobStatus
    input: str
    output: str
    prompt: str
    """The prompt reference the job ran: ``task``, ``task@label`` or ``task@version``."""
    documents_by_version: dict[str, int] = Field(default_factory=dict)
    """Documents per prompt version that ran them (``task@version``), e.g. under a canary rollout."""
    model: str | None
    max_model_len: int
    started_at: float
    finished_at: float
    seconds: float
    documents: int
    ok: int
    errors: int
    resumed: int = 0
    """Documents whose successful result was reused from an earlier run into this folder (same input and
    settings fingerprints)."""
    recomputed: dict[str, int] = Field(default_factory=dict)
    """Documents that had a result from an earlier run here but were computed again, by reason:
    ``input_changed``, ``settings_changed``, ``previous_error`` (the earlier result was an error) or
    ``older_format`` (the earlier result has no fingerprints)."""
    errors_by_code: dict[str, int] = Field(default_factory=dict)
    chunks: int = 0
    requests: dict[str, int] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    requests_from_cache: int = 0
    """Engine requests answered from the output cache (finished by an earlier, interrupted run)."""
    requests_sent: int = 0
    """Engine requests actually sent to the engine by this run."""
    requests_by_node: dict[str, int] = Field(default_factory=dict)
    """Engine requests answered by each Ray node (its node id) running vLLM replicas: where the work ran."""
    max_levels: int = 0
    fatal_error: str | None = None
    drift: dict[str, VersionDrift] | None = None
    """Drift of the job's documents against ``monitoring.baseline``, per ``task@version`` present in both. None
    without a baseline."""


@dataclass(slots=True)
class JobTally:
    """Running totals of a job's results: what summary.json counts, without keeping the results."""

    documents: int = 0
    ok: int = 0
    errors: int = 0
    resumed: int = 0
    chunks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    max_levels: int = 0
    errors_by_code: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    by_version: Counter[str] = field(default_factory=Counter)
    """Documents per prompt version (``task@version``)."""
    recomputed: Counter[str] = field(default_factory=Counter)
    """Documents computed again although an earlier run left a result, by reason (counted by the job)."""

    def add(self, result: DocumentResult, *, resumed: bool) -> None:
        """Count one document's result (``resumed``: reused from an earlier run)."""
        self.documents += 1
        self.ok += result.ok
        self.errors += result.failed
        self.resumed += resumed
        if result.error is not None:
            self.errors_by_code[result.error.code] += 1
        if result.prompt is not None:
            self.by_version[f"{result.prompt.name}@{result.prompt.version}"] += 1
        self.chunks += result.chunks
        self.requests.update(result.usage.requests)
        self.prompt_tokens += result.usage.prompt_tokens
        self.completion_tokens += result.usage.completion_tokens
        self.cached_prompt_tokens += result.usage.cached_prompt_tokens
        self.max_levels = max(self.max_levels, result.levels)


def error_result(
    err: DocumentError,
    prompt: PromptRef | None,
    model: str | None,
    source: str | None,
    fingerprints: Fingerprints | None = None,
) -> DocumentResult:
    """The record of a document that failed (ids, sources and messages made writable as UTF-8 whatever they hold)."""
    return DocumentResult(
        id=printable(err.document_id),
        status="error",
        error=ErrorInfo(code=err.code, message=printable(str(err))),
        source=None if source is None else printable(source),
        prompt=None if prompt is None else PromptInfo(name=prompt.task, version=prompt.version),
        model=model,
        fingerprints=fingerprints,
    )


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) shown as backslash escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
