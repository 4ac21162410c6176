"""Prompt files: the schema of one prompt version, the checks on its templates, and loading it.

A prompt version is one YAML file, ``prompts/<task>/<version>.yaml``, with three stages:

* ``map`` runs on every chunk; its user message holds ``{chunk}``;
* ``collapse`` merges a group of partial outputs into one when they do not fit a single call (``{partials}``);
* ``reduce`` writes the final output from partial outputs that fit one call (``{partials}``).

Templates use ``{name}`` placeholders (``{{`` and ``}}`` for literal braces). Besides ``chunk`` and
``partials``, a template may use the variables the file declares (e.g. ``question``), filled from the
document's fields (see :mod:`mapreduce_llm.prompts.render` for how values are kept data).

Instructions come first and the chunk last, so vLLM's prefix cache shares the instruction tokens between
all chunks of a job.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from mapreduce_llm.common import StrictModel
from mapreduce_llm.errors import PromptError

Stage = Literal["map", "collapse", "reduce"]
STAGES: tuple[Stage, ...] = ("map", "collapse", "reduce")
SLOT = {"map": "chunk", "collapse": "partials", "reduce": "partials"}
"""The variable each stage's user message must contain once: what the stage works on."""

VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


class Message(StrictModel):
    """The two messages of one stage."""

    system: str = ""
    """Instructions shared by every call of the stage (first in the prompt: prefix-cached)."""
    user: str
    """The request; contains the stage's slot variable (``{chunk}`` or ``{partials}``)."""


class Sampling(StrictModel):
    """Sampling defaults of a prompt version."""

    temperature: Annotated[float, Field(ge=0)] = 0.0
    """0 is greedy decoding."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Nucleus sampling mass."""
    repetition_penalty: Annotated[float, Field(gt=0)] = 1.0
    """>1 discourages repeating tokens, those of the prompt included (vLLM applies it to both): a summary that
    should reuse the document's names and terms is pushed away from them."""
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    """>0 lowers a token's chance by this much for each time it is already in the output (not the prompt)."""
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    """>0 lowers a token's chance by this much once it is in the output (not the prompt)."""


class AnswerFormat(StrictModel):
    """Limits of the structured answer record (``output: answer``)."""

    max_quote_chars: Annotated[int, Field(ge=20)] = 300
    """Longest evidence quote the schema allows."""
    max_answer_chars: Annotated[int, Field(ge=5)] = 120
    """Longest answer the schema allows."""
    min_quote_match: Annotated[float, Field(ge=50, le=100)] = 90
    """How closely (0–100, fuzzy alignment) a quote and an answer must match the chunk to count as found there."""


class PromptFile(StrictModel):
    """One released version of a task's prompts."""

    description: str
    """What the task does, in one or two sentences."""
    variables: list[str] = Field(default_factory=list)
    """Document fields the templates use besides chunk/partials (``question``, or a metadata key)."""
    map: Message
    collapse: Message
    reduce: Message
    reserved_output_tokens: Annotated[int, Field(ge=16)] = 256
    """Tokens reserved for each call's output (its max_tokens); chunks get the rest of the context."""
    sampling: Sampling = Field(default_factory=Sampling)
    partial_separator: str = "\n\n"
    """Text placed between partial outputs in ``{partials}``."""
    not_found: str | None = None
    """For question answering: the answer meaning "not in this text". Map outputs starting with it are
    dropped before reducing; when every chunk says it, the document's answer is this text."""
    not_found_below_mean_logprob: float | None = None
    """Also treat a map answer as not found when its mean token logprob is below this value."""
    output: Literal["text", "answer"] = "text"
    """``text``: free text at every stage. ``answer``: every stage returns a JSON record with an answer and
    its evidence quote, under structured decoding; map answers are checked against their chunk and filtered
    by calibrated confidence (see mapreduce_llm/answers.py). Needs ``not_found``."""
    answer: AnswerFormat = Field(default_factory=AnswerFormat)
    """Limits of the answer record (``output: answer``)."""
    query: str | None = None
    """What retrieval compares chunks and evidence with: a template over the declared variables (e.g.
    ``{field}``). Default: the document's question, else ``description``."""

    @field_validator("variables")
    @classmethod
    def _identifiers(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name.isidentifier():
                raise ValueError(f"variable names must be identifiers, got {name!r}")
            if name in ("chunk", "partials"):
                raise ValueError(f"{name!r} is built in; do not declare it")
        return names

    @model_validator(mode="after")
    def _answer_needs_not_found(self) -> PromptFile:
        if self.output == "answer" and not self.not_found:
            raise ValueError('output "answer" needs `not_found:` (the answer meaning "not in this text")')
        return self


@dataclass(frozen=True, slots=True)
class PromptRef:
    """A resolved prompt: task name, version and the validated file."""

    task: str
    version: str
    path: Path
    file: PromptFile

    @property
    def ref(self) -> str:
        """``task@version``."""
        return f"{self.task}@{self.version}"


def _fields(template: str, where: str, path: Path) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise PromptError(
            f"{path}: {where} is not a valid template ({exc}); write literal braces as {{{{ and }}}}",
            path=str(path),
            field=where,
        ) from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise PromptError(
                f"{path}: {where} has placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}; only plain {{name}} placeholders are allowed",
                path=str(path),
                field=where,
            )
        names.append(name)
    return names


def _validate(pf: PromptFile, path: Path) -> None:
    declared = set(pf.variables)
    for stage in STAGES:
        msg: Message = getattr(pf, stage)
        for part in ("system", "user"):
            where = f"{stage}.{part}"
            text = getattr(msg, part)
            if "\ue000" in text or "\ue001" in text:
                raise PromptError(f"{path}: {where} contains reserved characters U+E000/U+E001", path=str(path))
            names = _fields(text, where, path)
            for name in names:
                if name != SLOT[stage] and name not in declared:
                    allowed = sorted(declared | {SLOT[stage]})
                    raise PromptError(
                        f"{path}: {where} uses undeclared variable {{{name}}}; declare it under "
                        f"`variables:` or use one of {allowed}",
                        path=str(path),
                        field=where,
                    )
            slot_count = names.count(SLOT[stage])
            expected = 1 if part == "user" else 0
            if slot_count != expected:
                raise PromptError(
                    f"{path}: {where} must contain {{{SLOT[stage]}}} {'exactly once' if expected else 'nowhere'}"
                    f", found it {slot_count} times",
                    path=str(path),
                    field=where,
                )
    if pf.query is not None:
        for name in _fields(pf.query, "query", path):
            if name not in declared:
                raise PromptError(
                    f"{path}: query uses undeclared variable {{{name}}}; declare it under `variables:`",
                    path=str(path),
                    field="query",
                )
    used = {
        n
        for stage in STAGES
        for part in ("system", "user")
        for n in _fields(getattr(getattr(pf, stage), part), "", path)
    }
    for name in declared - used:
        raise PromptError(
            f"{path}: variable {name!r} is declared but no template uses it; remove it from `variables:`",
            path=str(path),
            field="variables",
        )


def load_prompt_file(path: Path) -> PromptFile:
    """Load and validate one prompt file; every problem is a PromptError naming the file and field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PromptError(f"prompt file {path} does not exist", path=str(path)) from None
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: not valid YAML: {exc}", path=str(path)) from None
    if not isinstance(raw, dict):
        raise PromptError(f"{path}: must be a YAML mapping", path=str(path))
    try:
        pf = PromptFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise PromptError(f"{path}: field {field!r}: {err['msg']}", path=str(path), field=field) from None
    _validate(pf, path)
    return pf


def prompt_hash(prompt: PromptFile) -> str:
    """Content hash of a prompt version: its validated fields that differ from their defaults, so neither
    formatting-only edits nor a new optional field in a later release of this package change it."""
    return hashlib.sha256(prompt.model_dump_json(exclude_defaults=True).encode()).hexdigest()
