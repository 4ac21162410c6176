"""What every flow works with: one document's run, what its prompt version runs with, and what a flow gives back.

A flow is ``async def flow(run: DocumentRun) -> Outcome``: it gets a planned document whose chunks retrieval has
already selected, makes its engine calls through :meth:`DocumentRun.call` and says what came out. The job does the
rest (reading, planning, selection, the result record). :meth:`DocumentRun.call` is the one place a flow reaches
the engine: it renders the stage's request, checks the budget, sends it through the job's
:class:`~mapreduce_llm.engines.client.EngineClient` and counts it in the document's :class:`Usage`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mapreduce_llm.common import StageName
from mapreduce_llm.errors import BudgetError, DocumentError, RequestError
from mapreduce_llm.fingerprints import digest
from mapreduce_llm.prompts import load_calibration, prompt_hash
from mapreduce_llm.reduce import Partial, SourceSpan
from mapreduce_llm.results import (
    DocumentResult,
    Fingerprints,
    MapAnswer,
    PromptInfo,
    Provenance,
    ReretrievalInfo,
    RetrievalInfo,
    Timings,
    Usage,
)
from mapreduce_llm.retrieval import query_of, similarities

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from mapreduce_llm.answers import Judged
    from mapreduce_llm.config import JobSpec, SamplingConfig
    from mapreduce_llm.documents import Document
    from mapreduce_llm.embeddings import TextEmbedder
    from mapreduce_llm.engines.base import Engine, EngineOutput
    from mapreduce_llm.engines.client import EngineClient
    from mapreduce_llm.planning import DocumentPlan
    from mapreduce_llm.prompts import ModelCalibration, PromptRef
    from mapreduce_llm.tokenization import Tokenizer


@dataclass(frozen=True, slots=True)
class Params:
    """Sampling of one prompt version, with the job spec's overrides applied."""

    reserve: int
    """Output tokens reserved for (and the ``max_tokens`` of) every call."""
    temperature: float
    top_p: float
    repetition_penalty: float
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @classmethod
    def of(cls, prompt: PromptRef, override: SamplingConfig) -> Params:
        """The prompt file's defaults, overridden by the job spec's ``sampling`` section."""
        pf = prompt.file
        return cls(
            reserve=override.reserved_output_tokens or pf.reserved_output_tokens,
            temperature=pf.sampling.temperature if override.temperature is None else override.temperature,
            top_p=override.top_p or pf.sampling.top_p,
            repetition_penalty=override.repetition_penalty or pf.sampling.repetition_penalty,
            frequency_penalty=(
                pf.sampling.frequency_penalty if override.frequency_penalty is None else override.frequency_penalty
            ),
            presence_penalty=(
                pf.sampling.presence_penalty if override.presence_penalty is None else override.presence_penalty
            ),
        )

    def fingerprinted(self) -> dict[str, float | int]:
        """The fields for a settings fingerprint: the penalties added later only when set, so that results
        written before them keep their fingerprints."""
        fields = asdict(self)
        for added in ("frequency_penalty", "presence_penalty"):
            if fields[added] == 0.0:
                del fields[added]
        return fields


class VersionSettings:
    """What each prompt version runs with in a job, each worked out once: its sampling (the job spec's overrides
    applied), its calibration for the served model, and its settings fingerprint."""

    def __init__(self, spec: JobSpec, engine: Engine, model_identity: str | None, logger: FilteringBoundLogger) -> None:
        self.spec = spec
        self.engine = engine
        self.model_identity = model_identity
        self.log = logger
        self._calibrations: dict[str, ModelCalibration | None] = {}
        self._fingerprints: dict[str, str] = {}

    def params(self, prompt: PromptRef) -> Params:
        """Sampling for a prompt version: the prompt file's defaults, overridden by the job spec."""
        return Params.of(prompt, self.spec.sampling)

    def calibration(self, prompt: PromptRef) -> ModelCalibration | None:
        """The thresholds of ``prompt`` for the served model (read once per job; a warning when an ``output:
        answer`` prompt has none)."""
        if prompt.ref not in self._calibrations:
            found = load_calibration(prompt, self.engine.info.model)
            if found is None and prompt.file.output == "answer":  # only answers are filtered by calibration
                self.log.warning(
                    "prompt.uncalibrated",
                    prompt=prompt.ref,
                    model=self.engine.info.model,
                    hint="answers are not filtered by confidence and re-retrieval is off; run benchmarks/calibrate.py",
                )
            self._calibrations[prompt.ref] = found
        return self._calibrations[prompt.ref]

    def fingerprint(self, prompt: PromptRef) -> str:
        """Hash of every setting that shapes a result under ``prompt`` (see :mod:`mapreduce_llm.fingerprints`)."""
        if prompt.ref not in self._fingerprints:
            calibration = self.calibration(prompt)
            spec, info = self.spec, self.engine.info
            self._fingerprints[prompt.ref] = digest(
                {
                    "prompt": prompt_hash(prompt.file),
                    "calibration": None if calibration is None else calibration.model_dump(mode="json"),
                    "sampling": self.params(prompt).fingerprinted(),
                    "seed": spec.engine.seed,
                    "max_model_len": info.max_model_len,
                    "chunking": spec.chunking.model_dump(mode="json"),
                    "retrieval": spec.retrieval.model_dump(mode="json"),
                    "reduce": spec.reduce.model_dump(mode="json"),
                    "model": self.model_identity or info.model,
                }
            )
        return self._fingerprints[prompt.ref]


@dataclass(slots=True)
class Accounting:
    """Engine work spent on one document so far; :meth:`usage` is its record."""

    requests: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    from_cache: int = 0

    def add(self, stage: str, out: EngineOutput, *, from_cache: bool = False) -> None:
        """Count one call of ``stage`` and its tokens."""
        self.requests[stage] += 1
        self.from_cache += from_cache
        self.prompt_tokens += out.prompt_tokens
        self.completion_tokens += out.completion_tokens
        self.cached_prompt_tokens += out.cached_prompt_tokens or 0

    def usage(self) -> Usage:
        """The totals as the result's ``usage`` record."""
        return Usage(
            requests=dict(self.requests),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens,
            requests_from_cache=self.from_cache,
        )


@dataclass(slots=True)
class DocumentRun:
    """One document's context while its flow runs: the plan, the settings it runs under and the job's tools."""

    plan: DocumentPlan
    """Chunks and rendered stage templates, with the prompt version and the document."""
    selected: list[int]
    """Indices of the chunks to map (all of them unless retrieval picked the top ones)."""
    params: Params
    spec: JobSpec
    """The job's settings (flows read ``retrieval`` and ``reduce``)."""
    calibration: ModelCalibration | None
    """The prompt version's thresholds for the served model (None: not calibrated for it)."""
    model: str
    """The served model's name."""
    tokenizer: Tokenizer
    embedder: TextEmbedder
    client: EngineClient
    log: FilteringBoundLogger
    """Bound to the job, the document and the prompt version. Never log document text (or answers: they quote it)."""
    accounting: Accounting = field(default_factory=Accounting)

    @property
    def prompt(self) -> PromptRef:
        """The prompt version this document runs."""
        return self.plan.prompt

    @property
    def document(self) -> Document:
        """The document."""
        return self.plan.document

    async def call(
        self, stage: StageName, slot_ids: Sequence[int], schema: dict[str, Any] | None = None
    ) -> EngineOutput:
        """One engine call of ``stage`` with ``slot_ids`` in the stage template's slot (``schema``: decode the
        output as JSON under it). A failed request becomes this document's ``engine_request`` error."""
        plan = self.plan
        template = {
            "map": plan.map_template,
            "collapse": plan.collapse_template,
            "reduce": plan.reduce_template,
            "reretrieve": plan.map_template,  # the map prompt, over the re-retrieved passages
        }[stage]
        ids = template.request_ids(list(slot_ids))
        params = self.params
        if len(ids) + params.reserve > plan.max_model_len:
            # Planning makes this impossible; if it ever happens it is a bug, not bad input.
            raise BudgetError(
                f"internal error: a {stage} request of {len(ids)} tokens + {params.reserve} reserved exceeds "
                f"max_model_len {plan.max_model_len} for document {plan.document.id!r}; please report it"
            )
        request = self.client.request(
            stage,
            ids,
            max_tokens=params.reserve,
            temperature=params.temperature,
            top_p=params.top_p,
            repetition_penalty=params.repetition_penalty,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            json_schema=schema,
        )
        try:
            reply = await self.client.generate(request, self.prompt)
        except RequestError as exc:
            raise DocumentError(
                f"{plan.document.source}: a {stage} request failed: {exc}",
                document_id=plan.document.id,
                code="engine_request",
            ) from None
        self.accounting.add(stage, reply.output, from_cache=reply.from_cache)
        return reply.output

    def partial(self, out: EngineOutput, sources: tuple[SourceSpan, ...]) -> Partial:
        """An engine output as a partial output of the reduce tree (stripped, encoded as data)."""
        text = out.text.strip()
        return Partial(text, tuple(self.tokenizer.encode_data(text)), sources, out.mean_logprob)

    def result(
        self, outcome: Outcome, retrieval: RetrievalInfo | None, timings: Timings, fingerprints: Fingerprints
    ) -> DocumentResult:
        """The document's result record: the flow's outcome with the document's ids, usage and the rest."""
        doc, prompt, details = self.document, self.prompt, outcome.answer
        return DocumentResult(
            id=doc.id,
            status="ok",
            output=outcome.output,
            source=doc.source,
            prompt=PromptInfo(name=prompt.task, version=prompt.version),
            model=self.model,
            question=doc.question,
            chunks=len(self.plan.chunks),
            levels=outcome.levels,
            not_found=outcome.not_found,
            mean_logprob=outcome.mean_logprob,
            confidence=None if details is None else details.confidence,
            provenance=outcome.provenance,
            answers=[] if details is None else details.answers,
            parse_failures=0 if details is None else details.parse_failures,
            retrieval=retrieval,
            reretrieval=None if details is None else details.reretrieval,
            usage=self.accounting.usage(),
            timings=timings,
            metadata=doc.metadata,
            fingerprints=fingerprints,
        )

    async def evidence_similarity(self, judged: Sequence[Judged]) -> list[float | None]:
        """Similarity of each supported answer's evidence to the question (None where not checked)."""
        quotes = {i: j.evidence for i, j in enumerate(judged) if j.supported and j.evidence is not None}
        if not quotes or not self.spec.retrieval.similarity_for(self.prompt.file.output):
            return [None] * len(judged)
        scores = await asyncio.to_thread(similarities, self.embedder, query_of(self.plan)[0], list(quotes.values()))
        by_index = dict(zip(quotes, scores, strict=True))
        return [by_index.get(i) for i in range(len(judged))]


@dataclass(frozen=True, slots=True)
class Tentative:
    """An answer on the table: the reducer's (or the only kept map answer), which re-retrieval may replace."""

    answer: str
    confidence: float | None
    """Mean logprob of the answer's tokens."""
    evidence: list[Provenance]
    """The quotes it rests on, with their spans in the document."""


@dataclass(frozen=True, slots=True)
class AnswerDetails:
    """What an answer flow adds to its outcome."""

    confidence: float | None
    """The final answer's confidence, rounded as the result shows it."""
    answers: list[MapAnswer]
    """Every mapped chunk's answer, best confidence first."""
    parse_failures: int
    reretrieval: ReretrievalInfo


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a flow made of one document (the job adds ids, usage, timings and fingerprints)."""

    output: str
    levels: int
    """Reduce levels used (0: a single map output is final)."""
    not_found: bool | None
    """True when no chunk had an answer; None for prompts without a "not found" reply."""
    mean_logprob: float | None
    provenance: list[Provenance]
    map_s: float
    """Seconds from the first map call to the last map output."""
    answer: AnswerDetails | None = None
    """Set by flows of ``output: answer`` prompts."""


Flow = Callable[[DocumentRun], Awaitable[Outcome]]
"""A per-document flow: map, reduce and whatever else one output kind needs."""
