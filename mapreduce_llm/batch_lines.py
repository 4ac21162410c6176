"""OpenAI batch lines in a job: ``run`` reads them as documents and, with ``output_format: batch``, writes its
results as batch output and error lines — the service's shapes (:mod:`mapreduce_llm.batch_format`), so one file
moves between ``run``, ``serve`` and other batch tools unchanged.

Reading (:func:`batch_document`): a JSONL line **without** ``text`` that has ``custom_id`` or ``body`` is a batch
line; a line with ``text`` is a document line, read as before (its other fields, ``custom_id`` too, are
metadata). A file may mix both; ids and custom_ids share one namespace. A batch line is checked as the service
checks it (:func:`~mapreduce_llm.batch_format.check_line`: method, url, custom_id, body), then becomes the
document ``{id: custom_id, text, question, **metadata}``. A job has one prompt and one set of settings, so
:class:`JobRequests` also checks what the body asks for: ``body.prompt`` must resolve to the job's prompt
versions (``summarize`` and ``summarize@1.0.0`` are the same when 1.0.0 is what ``summarize`` runs), else
``prompt_mismatch``; each per-request setting must equal the job spec's field, else ``unsupported_setting``. Each
rejected line is its own error record (codes :data:`BATCH_LINE_CODES`, id = its custom_id when readable); the
other lines run.

Writing (:func:`write_batch_files`): one line per record of ``results.jsonl``, in input order, custom_id = the
document id, request ids derived from the job id (the same on every rerun). A line rejected before it could run
(:data:`NOT_RUN_CODES`) gets :func:`~mapreduce_llm.batch_format.failed_line` (``response: null``), as in the
service; every other record :func:`~mapreduce_llm.batch_format.output_line` (200 in the output file; 400/500 with
the record as body in the error file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from mapreduce_llm.atomic import atomic_writer
from mapreduce_llm.batch_format import (
    BODY_SETTINGS,
    ENDPOINT,
    BatchError,
    MapReduceBody,
    check_line,
    dumps,
    failed_line,
    output_line,
)
from mapreduce_llm.errors import DocumentError, MapReduceError
from mapreduce_llm.results import DocumentResult

if TYPE_CHECKING:
    from mapreduce_llm.config import JobSpec
    from mapreduce_llm.prompts import PromptSelection

BatchLineCode = Literal[
    "invalid_url",
    "invalid_method",
    "missing_custom_id",
    "invalid_custom_id",
    "duplicate_custom_id",
    "invalid_request",
    "prompt_mismatch",
    "unsupported_setting",
]
"""Error codes of batch lines a job rejects: the service's (another url, a bad method or custom_id, a custom_id
used earlier, a malformed body) and ``run``'s own (another prompt, a setting the job does not run with). Part of
:data:`mapreduce_llm.documents.ReadErrorCode`."""
BATCH_LINE_CODES: Final[tuple[str, ...]] = get_args(BatchLineCode)
"""The codes of :data:`BatchLineCode`."""

NOT_RUN_CODES: Final = frozenset(
    {
        *BATCH_LINE_CODES,
        "malformed_json",
        "invalid_utf8",
        "unsupported_json",
        "lone_surrogate",
        "not_an_object",
        "too_large",
    }
)
"""Records of lines rejected before they became documents: ``response: null`` in the error file, as the service
writes its rejected lines."""

RequestCheck = Callable[[MapReduceBody], "tuple[str, str] | None"]
"""Why a job cannot run what a line's body asks for, as (code, message), or None."""

_SHAPE_HINT: Final = (
    ' (read as an OpenAI batch line: it has "custom_id" or "body" and no "text"; a batch line has custom_id, '
    'method, url and body, a document line has "text")'
)


def is_batch_line(fields: dict[str, Any]) -> bool:
    """Whether a parsed JSONL object is read as an OpenAI batch line rather than a document line."""
    return "text" not in fields and ("custom_id" in fields or "body" in fields)


def batch_document(
    fields: dict[str, Any], number: int, where: str, seen: set[str], check: RequestCheck | None = None
) -> dict[str, Any]:
    """The document fields (``id``, ``text``, ``question``, metadata) of the batch line ``fields`` (line
    ``number``, at ``where``), or DocumentError with a code of :data:`BATCH_LINE_CODES`. ``seen``: the custom_ids
    of earlier valid lines (this one is added); ``check``: the job's check of the body (:class:`JobRequests`)."""
    checked = check_line(fields, number, ENDPOINT, seen, where=where)
    raw_id = fields.get("custom_id")
    document_id = raw_id if isinstance(raw_id, str) and raw_id.strip() else where
    if isinstance(checked, BatchError):
        missing = [name for name in ("custom_id", "method", "url", "body") if name not in fields]
        hint = _SHAPE_HINT if missing else ""
        raise DocumentError(checked.message + hint, document_id=document_id, code=checked.code)
    seen.add(checked.custom_id)
    problem = check(checked.body) if check is not None else None
    if problem is not None:
        code, message = problem
        raise DocumentError(f"{where}: {message}", document_id=checked.custom_id, code=code)
    return checked.body.document(checked.custom_id)


class JobRequests:
    """A job's check of batch line bodies: its prompt (``spec.prompt``, resolved as ``prompts``) and the spec's
    values of the per-request settings (:data:`~mapreduce_llm.batch_format.BODY_SETTINGS`)."""

    def __init__(self, spec: JobSpec, prompts: PromptSelection) -> None:
        self.spec = spec
        self.prompts = prompts
        self._prompt_problems: dict[str, str | None] = {prompts.reference: None}

    def __call__(self, body: MapReduceBody) -> tuple[str, str] | None:
        if body.prompt not in self._prompt_problems:
            self._prompt_problems[body.prompt] = self._prompt_problem(body.prompt)
        problem = self._prompt_problems[body.prompt]
        if problem is not None:
            return "prompt_mismatch", problem
        for key, path in BODY_SETTINGS.items():
            value = getattr(body, key)
            current = _field(self.spec, path)
            if value is not None and value != current:
                now = "is not set (the prompt file's default)" if current is None else f"is {current!r}"
                return "unsupported_setting", (
                    f"body.{key} is {value!r}, but this job runs every document with one {path}, which {now}; "
                    f"set it for the whole job (--set {path}={value}) or leave it out of the body "
                    "(`mapreduce-llm serve` runs lines with other settings as jobs of their own)"
                )
        return None

    def _prompt_problem(self, reference: str) -> str | None:
        from mapreduce_llm.prompts import select_prompts

        job = f"{self.prompts.reference!r} ({_versions(self.prompts)})"
        try:
            other = select_prompts(reference, self.spec.prompts_dir)
        except MapReduceError as exc:
            return f"body.prompt {reference!r} cannot be resolved ({exc}); this job runs prompt {job}"
        if _identity(other) == _identity(self.prompts):
            return None
        return (
            f"body.prompt {reference!r} ({_versions(other)}) is not this job's prompt {job}; a job runs one "
            f"prompt: run these lines with --prompt {reference} (or send the file to `mapreduce-llm serve`, which "
            "runs each prompt as a job of its own)"
        )


def _versions(selection: PromptSelection) -> str:
    return ", ".join(ref.ref for ref in selection.versions)


def _identity(selection: PromptSelection) -> tuple[str, tuple[tuple[int, int, str], ...]]:
    """What a selection runs: its base version and its rollout's ranges."""
    return selection.base.ref, tuple((start, end, ref.ref) for start, end, ref in selection.splits)


def _field(spec: JobSpec, path: str) -> Any:
    value: Any = spec
    for part in path.split("."):
        value = getattr(value, part)
    return value


# --- writing ---------------------------------------------------------------------------------------------


def batch_line(batch_id: str, result: DocumentResult) -> tuple[bool, dict[str, Any]]:
    """(ok, line) for one result record: an output-file line when ok, else an error-file line."""
    if result.error is not None and result.error.code in NOT_RUN_CODES:
        custom_id = None if result.id == result.source else result.id  # no readable custom_id: id is file:line
        return False, failed_line(batch_id, custom_id, result.error.code, result.error.message)
    return output_line(batch_id, result.id, result)


def write_batch_files(results: Path, output: Path, errors: Path, batch_id: str) -> tuple[int, int]:
    """Write the records of ``results`` (a results.jsonl) as batch lines: ``output`` for the documents that
    succeeded, ``errors`` for the others; each file is replaced whole (temporary file, then rename). Returns
    (output lines, error lines)."""
    counts = [0, 0]
    with atomic_writer(output) as good, atomic_writer(errors) as bad, results.open(encoding="utf-8") as fh:
        for raw in fh:
            ok, line = batch_line(batch_id, DocumentResult.model_validate_json(raw))
            (good if ok else bad).write(dumps(line).encode("utf-8"))
            counts[not ok] += 1
    return counts[0], counts[1]
