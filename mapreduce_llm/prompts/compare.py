"""Two prompt versions side by side: how right, how sure, how costly, on the same documents.

Pure functions over result records and summaries: :func:`compare` takes two jobs' records (from
:func:`read_results`, an output folder) and matches them by document id; :func:`table` and
:func:`comparison_json` print the :class:`Comparison`. ``mapreduce-llm prompts compare`` runs the two jobs (or
reads two finished folders) and prints one of them.

**Expected answers.** A document whose input carried an ``answer`` field (a job keeps it in the record's
``metadata``) is scored: with a string, the output must contain it (case-insensitive); with ``null`` the
document does not hold the answer and the output must say the prompt's ``not_found`` reply (:func:`is_correct`,
the rule of the needle sets in ``benchmarks/``). A document that failed is never right. Documents without the
field are counted but not scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mapreduce_llm.errors import ConfigError
from mapreduce_llm.results import DocumentResult, JobSummary

NOT_FOUND = "NOT FOUND"
"""The ``not_found`` reply assumed when the prompt version that ran is not known (qa's)."""
COMPARISON_FILE = "comparison.json"
"""Where ``prompts compare`` writes :func:`dumps` in the folder holding the two jobs it ran."""
ANSWER_FIELD = "answer"
"""The input field (a record's metadata key) holding a document's expected answer; null: not in the document."""


def says_not_found(output: str, not_found: str = NOT_FOUND) -> bool:
    """The job's own rule: empty, or starting with ``not_found`` (case-insensitive) once surrounding
    whitespace, quotes and full stops are stripped."""
    cleaned = output.strip().strip(".\"' ").upper()
    return not cleaned or cleaned.startswith(not_found.upper())


def is_correct(expected: str | None, output: str, not_found: str = NOT_FOUND) -> bool:
    """Whether ``output`` answers right: contains ``expected`` (case-insensitive), or says not found when None."""
    if expected is None:
        return says_not_found(output, not_found)
    return expected.lower() in output.lower()


def expected_answer(result: DocumentResult) -> tuple[bool, str | None]:
    """(whether the document carries an expected answer, that answer: None = not in the document)."""
    if ANSWER_FIELD not in result.metadata:
        return False, None
    value = result.metadata[ANSWER_FIELD]
    return True, None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Quantiles:
    """p10, median and p90 of some values (linear interpolation between ranks); None when there are none."""

    n: int
    p10: float | None = None
    median: float | None = None
    p90: float | None = None

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Quantiles:
        """The quantiles of the values that are not None."""
        ordered = sorted(v for v in values if v is not None)
        if not ordered:
            return cls(0)

        def at(q: float) -> float:
            pos = q * (len(ordered) - 1)
            low = int(pos)
            high = min(low + 1, len(ordered) - 1)
            return round(ordered[low] + (ordered[high] - ordered[low]) * (pos - low), 4)

        return cls(len(ordered), at(0.1), at(0.5), at(0.9))


@dataclass(frozen=True, slots=True)
class Side:
    """One version's (or one folder's) figures over the compared documents."""

    name: str
    """What ran: ``task@version`` (or the versions, under a rollout)."""
    source: str
    """The output folder the records were read from."""
    documents: int
    ok: int
    errors: int
    errors_by_code: dict[str, int]
    answers_right: int
    answers_total: int
    """Documents whose expected answer is a string."""
    not_found_right: int
    not_found_total: int
    """Documents whose expected answer is null (the answer is not in the document)."""
    said_not_found: int
    """Documents whose output says the ``not_found`` reply (right or not)."""
    parse_failures: int
    """Engine outputs with no valid answer record, summed over documents."""
    parse_failure_documents: int
    confidence: Quantiles
    """``confidence`` of the final answers (``output: answer`` prompts: mean logprob of the answer's tokens)."""
    mean_logprob: Quantiles
    """``mean_logprob`` of the final outputs (every prompt)."""
    prompt_tokens: int
    completion_tokens: int
    requests: int
    """Engine requests the documents' results used (sent, or taken from the request cache)."""
    requests_sent: int | None
    """Requests this run actually sent to the engine (summary.json); None without a summary."""
    resumed: int | None
    """Documents reused from an earlier run into the folder (summary.json)."""
    job_seconds: float | None
    """The job's wall time (summary.json)."""
    document_seconds: Quantiles
    """Wall time per document (``timings.total_s``; documents run concurrently, so they overlap)."""
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def scored(self) -> int:
        """Documents with an expected answer."""
        return self.answers_total + self.not_found_total

    @property
    def right(self) -> int:
        """Documents answered right (answer found, or "not found" where it is not in the document)."""
        return self.answers_right + self.not_found_right


def side(
    name: str,
    source: str,
    results: Sequence[DocumentResult],
    summary: JobSummary | None,
    not_found: str = NOT_FOUND,
) -> Side:
    """The figures of one side over ``results`` (already restricted to the compared documents)."""
    answers_right = answers_total = not_found_right = not_found_total = said = 0
    errors_by_code: dict[str, int] = {}
    versions: dict[str, int] = {}
    for r in results:
        if r.error is not None:
            errors_by_code[r.error.code] = errors_by_code.get(r.error.code, 0) + 1
        if r.prompt is not None:
            ref = f"{r.prompt.name}@{r.prompt.version}"
            versions[ref] = versions.get(ref, 0) + 1
        said_it = r.ok and says_not_found(r.output or "", not_found)
        said += said_it
        has_answer, expected = expected_answer(r)
        if not has_answer:
            continue
        right = r.ok and is_correct(expected, r.output or "", not_found)
        if expected is None:
            not_found_total += 1
            not_found_right += right
        else:
            answers_total += 1
            answers_right += right
    return Side(
        name=name,
        source=source,
        documents=len(results),
        ok=sum(r.ok for r in results),
        errors=sum(r.failed for r in results),
        errors_by_code=dict(sorted(errors_by_code.items())),
        answers_right=answers_right,
        answers_total=answers_total,
        not_found_right=not_found_right,
        not_found_total=not_found_total,
        said_not_found=said,
        parse_failures=sum(r.parse_failures for r in results),
        parse_failure_documents=sum(r.parse_failures > 0 for r in results),
        confidence=Quantiles.of(r.confidence for r in results if r.ok),
        mean_logprob=Quantiles.of(r.mean_logprob for r in results if r.ok),
        prompt_tokens=sum(r.usage.prompt_tokens for r in results),
        completion_tokens=sum(r.usage.completion_tokens for r in results),
        requests=sum(sum(r.usage.requests.values()) for r in results),
        requests_sent=None if summary is None else summary.requests_sent,
        resumed=None if summary is None else summary.resumed,
        job_seconds=None if summary is None else round(summary.seconds, 1),
        document_seconds=Quantiles.of(r.timings.total_s for r in results if r.ok),
        versions=dict(sorted(versions.items())),
    )


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two sides over the documents both have; the ids only one side has are listed, not compared."""

    task: str
    a: Side
    b: Side
    only_a: list[str]
    only_b: list[str]

    @property
    def better(self) -> str | None:
        """``a`` or ``b``: more documents right among those with an expected answer; ``tie``; None when no
        document carries one (nothing to judge by)."""
        if not self.a.scored:
            return None
        if self.a.right == self.b.right:
            return "tie"
        return "a" if self.a.right > self.b.right else "b"


def compare(
    task: str,
    a: tuple[str, str, Sequence[DocumentResult], JobSummary | None],
    b: tuple[str, str, Sequence[DocumentResult], JobSummary | None],
    not_found: tuple[str, str] = (NOT_FOUND, NOT_FOUND),
) -> Comparison:
    """Compare two sides, each ``(name, source folder, records, summary)``, on the documents both have.

    ``not_found``: each side's prompt's ``not_found`` reply. Raises ConfigError when the sides share no
    document, or a record ran another task's prompt.
    """
    for name, source, records, _ in (a, b):
        other = sorted({r.prompt.name for r in records if r.prompt is not None and r.prompt.name != task})
        if other:
            raise ConfigError(
                f"results in {source} ({name}) ran prompt task {', '.join(other)}, not {task}; "
                f"compare folders of {task} jobs, or name the task they ran",
                parameter="task",
            )
    ids_a, ids_b = {r.id for r in a[2]}, {r.id for r in b[2]}
    common = ids_a & ids_b
    if not common:
        raise ConfigError(
            f"{a[1]} and {b[1]} share no document id ({len(ids_a)} and {len(ids_b)} documents); "
            "compare two jobs run over the same input",
            parameter="results",
        )
    sides = [
        side(name, source, [r for r in records if r.id in common], summary, reply)
        for (name, source, records, summary), reply in zip((a, b), not_found, strict=True)
    ]
    return Comparison(
        task=task,
        a=sides[0],
        b=sides[1],
        only_a=sorted(ids_a - common),
        only_b=sorted(ids_b - common),
    )


def read_results(folder: Path) -> tuple[list[DocumentResult], JobSummary | None]:
    """The records of ``folder/results.jsonl`` and its ``summary.json`` (None when absent); ConfigError naming
    the file (and line) when a finished job's files are missing or unreadable."""
    path = folder / "results.jsonl"
    if not folder.is_dir():
        raise ConfigError(f"results folder {folder} does not exist; give the --output folder of a finished job")
    if not path.is_file():
        raise ConfigError(
            f"{folder} has no results.jsonl; give the --output folder of a finished job (a job still running "
            "or stopped writes it only at the end: run it again into the same folder to finish it)"
        )
    results = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            results.append(DocumentResult.model_validate_json(line))
        except ValidationError as exc:
            raise ConfigError(
                f"{path}:{number} is not a result record ({exc.errors()[0]['msg']}); "
                "give a folder written by mapreduce-llm run"
            ) from exc
    summary_path = folder / "summary.json"
    summary = None
    if summary_path.is_file():
        try:
            summary = JobSummary.model_validate_json(summary_path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise ConfigError(f"{summary_path} is not a job summary ({exc.errors()[0]['msg']})") from exc
    return results, summary


def _ratio(right: int, total: int) -> str:
    return f"{right}/{total} ({right / total:.0%})" if total else "–"


def _quantiles(q: Quantiles, digits: int = 2) -> str:
    if not q.n:
        return "–"
    return f"{q.p10:.{digits}f} / {q.median:.{digits}f} / {q.p90:.{digits}f}"


def _optional(value: float | int | None, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


def table(comparison: Comparison) -> list[str]:
    """The comparison as aligned text lines: one row per figure, one column per side."""
    a, b = comparison.a, comparison.b

    def errors(s: Side) -> str:
        codes = ", ".join(f"{n} {code}" for code, n in s.errors_by_code.items())
        return f"{s.errors} ({codes})" if codes else str(s.errors)

    rows: list[tuple[str, str, str]] = [
        ("", a.name, b.name),
        ("documents", str(a.documents), str(b.documents)),
        ("answers right", _ratio(a.answers_right, a.answers_total), _ratio(b.answers_right, b.answers_total)),
        (
            '"not found" right',
            _ratio(a.not_found_right, a.not_found_total),
            _ratio(b.not_found_right, b.not_found_total),
        ),
        ('said "not found"', str(a.said_not_found), str(b.said_not_found)),
        ("errors", errors(a), errors(b)),
        (
            "parse failures (documents)",
            f"{a.parse_failures} ({a.parse_failure_documents})",
            f"{b.parse_failures} ({b.parse_failure_documents})",
        ),
        ("confidence p10 / median / p90", _quantiles(a.confidence), _quantiles(b.confidence)),
        ("mean logprob p10 / median / p90", _quantiles(a.mean_logprob), _quantiles(b.mean_logprob)),
        ("prompt tokens", f"{a.prompt_tokens:,}", f"{b.prompt_tokens:,}"),
        ("completion tokens", f"{a.completion_tokens:,}", f"{b.completion_tokens:,}"),
        (
            "engine requests (sent this run)",
            f"{a.requests} ({_optional(a.requests_sent)})",
            f"{b.requests} ({_optional(b.requests_sent)})",
        ),
        (
            "seconds per document p10 / median / p90",
            _quantiles(a.document_seconds, 1),
            _quantiles(b.document_seconds, 1),
        ),
        ("job seconds", _optional(a.job_seconds, ".1f"), _optional(b.job_seconds, ".1f")),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{label:<{widths[0]}}  {x:>{widths[1]}}  {y:>{widths[2]}}".rstrip() for label, x, y in rows]
    lines.insert(1, "-" * len(lines[0]))
    if comparison.only_a or comparison.only_b:
        lines.append(
            f"not compared: {len(comparison.only_a)} documents only in {a.source}, "
            f"{len(comparison.only_b)} only in {b.source}"
        )
    better = comparison.better
    if better is None:
        lines.append("no document carries an expected answer (input field `answer`): nothing scored")
    elif better == "tie":
        lines.append(f"tie: {a.right} of {a.scored} documents right on both sides")
    else:
        win, lose = (a, b) if better == "a" else (b, a)
        lines.append(f"better: {win.name}, {win.right} of {win.scored} documents right against {lose.right}")
    return lines


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as a JSON-ready object: the task, both sides' figures, the documents left out, the
    better side (``a``, ``b``, ``tie`` or null)."""

    def one(s: Side) -> dict[str, Any]:
        return {**asdict(s), "scored": s.scored, "right": s.right}

    return {
        "task": comparison.task,
        "a": one(comparison.a),
        "b": one(comparison.b),
        "only_a": comparison.only_a,
        "only_b": comparison.only_b,
        "better": comparison.better,
    }


def dumps(comparison: Comparison) -> str:
    """:func:`comparison_json` as indented JSON text."""
    return json.dumps(comparison_json(comparison), indent=2, ensure_ascii=False)
