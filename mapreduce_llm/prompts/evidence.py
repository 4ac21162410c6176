"""Evidence for the rollout guard: what each prompt version did, from result folders or from Prometheus.

**Result folders** (``--canary-results DIR --production-results DIR``): the folders jobs write. Each side counts the
records of ``results.jsonl`` that ran its version (so one folder of a job run under the rollout can be both sides);
drift comes from ``summary.json``. Records of documents that were never read (no prompt version) count for neither.

**Prometheus** (``--prometheus URL``): instant queries through ``/api/v1/query`` over the job metrics
(:mod:`mapreduce_llm.monitoring.metrics`), summed per prompt version over every finished job, i.e. every
Pushgateway group. The live driver's scrape job (``mapreduce-llm-driver``) is left out: a job that lingers after
pushing would count twice.

Both give the same figures: documents and errors, parse failures per map answer, "not found" documents among the
answered ones, mean exp(mean token logprob) of the final outputs, and the highest drift score.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import httpx
from pydantic import ValidationError

from mapreduce_llm.errors import ConfigError, MapReduceError
from mapreduce_llm.prompts.guard import Figures
from mapreduce_llm.results import DocumentResult

LIVE_JOB = "mapreduce-llm-driver"
"""The scrape job of running drivers (monitoring/prometheus.yml), left out of the guard's queries."""


class EvidenceError(MapReduceError):
    """The guard's evidence could not be read: a missing or foreign result folder, an unreachable Prometheus."""


def results_figures(folder: Path, task: str, version: str) -> Figures:
    """Figures of ``task@version`` from a finished job's output folder (results.jsonl, summary.json)."""
    path = folder / "results.jsonl"
    if not path.is_file():
        partial = " (it has results.partial.jsonl: the job is still running or was interrupted)"
        raise EvidenceError(
            f"{folder} has no results.jsonl{partial if (folder / 'results.partial.jsonl').exists() else ''}; "
            "pass the --output folder of a finished `mapreduce-llm run`"
        )
    documents = errors = not_found = answered_with_flag = map_answers = parse_failures = 0
    confidences: list[float] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = DocumentResult.model_validate_json(line)
            except ValidationError as exc:
                raise EvidenceError(
                    f"{path}:{number}: not a result record ({exc.errors()[0]['msg']}); pass the output folder of a "
                    "job run by this release of mapreduce-llm"
                ) from None
            if record.prompt is None or (record.prompt.name, record.prompt.version) != (task, version):
                continue
            documents += 1
            if record.failed:
                errors += 1
                continue
            if record.not_found is not None and not _expects_not_found(record):
                answered_with_flag += 1
                not_found += record.not_found
            map_answers += len(record.answers)
            parse_failures += record.parse_failures
            if record.mean_logprob is not None:
                confidences.append(math.exp(record.mean_logprob))
    return Figures(
        version=version,
        source=str(folder),
        documents=documents,
        errors=errors,
        not_found=not_found if answered_with_flag else None,
        not_found_of=answered_with_flag or None,
        map_answers=map_answers,
        parse_failures=parse_failures,
        mean_confidence=sum(confidences) / len(confidences) if confidences else None,
        drift_score=_summary_drift(folder, f"{task}@{version}"),
    )


class ResultsEvidence:
    """The guard's figures from two finished jobs' output folders (the same folder twice for a job run under the
    rollout: each side counts only its own version's records)."""

    def __init__(self, canary: Path, production: Path) -> None:
        self.canary, self.production = canary, production

    def pair(self, task: str, production: str, canary: str) -> tuple[Figures, Figures]:
        """(production's figures, the canary's)."""
        return results_figures(self.production, task, production), results_figures(self.canary, task, canary)


def _summary_drift(folder: Path, key: str) -> float | None:
    path = folder / "summary.json"
    if not path.is_file():
        return None
    try:
        drift = json.loads(path.read_text(encoding="utf-8")).get("drift") or {}
    except (json.JSONDecodeError, AttributeError) as exc:
        raise EvidenceError(f"{path}: not a job summary ({exc}); pass a finished job's output folder") from None
    entry = drift.get(key) or {}
    if "status" in entry:  # {status, scores, ...}; older summaries hold {signal: score} alone
        entry = (entry.get("scores") or {}) if entry["status"] == "scored" else {}
    scores = [float(v) for v in entry.values() if isinstance(v, int | float)]
    return max(scores) if scores else None


def _promql_string(value: str) -> str:
    return json.dumps(value)  # a PromQL string literal (Go escapes) for the plain names used here


class PrometheusEvidence:
    """The guard's figures from a Prometheus server's HTTP API (``client``: an httpx client, e.g. for tests)."""

    def __init__(self, url: str, *, client: httpx.Client | None = None, timeout: float = 10.0) -> None:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ConfigError(
                f"--prometheus must be the server's http(s) URL, like http://127.0.0.1:9090; got {url!r}",
                parameter="prometheus",
                value=url,
            )
        self.url = url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout)

    def query(self, expr: str) -> dict[str, float]:
        """An instant query's result by the series' ``version`` label."""
        try:
            response = self.client.get(f"{self.url}/api/v1/query", params={"query": expr})
        except httpx.HTTPError as exc:
            raise EvidenceError(
                f"cannot query Prometheus at {self.url}: {exc}; check --prometheus and that the server is up"
            ) from None
        try:
            body = response.json()
        except ValueError:
            raise EvidenceError(
                f"{self.url}/api/v1/query answered HTTP {response.status_code} without JSON; is --prometheus the "
                "Prometheus server (port 9090 by default), not a Pushgateway or an exporter?"
            ) from None
        if body.get("status") != "success":
            raise EvidenceError(
                f"Prometheus at {self.url} refused the query {expr!r}: {body.get('errorType')}: {body.get('error')}"
            )
        values = {}
        for series in body["data"]["result"]:
            value = float(series["value"][1])
            if math.isfinite(value):
                values[series["metric"].get("version", "")] = value
        return values

    def pair(self, task: str, production: str, canary: str) -> tuple[Figures, Figures]:
        """(production's figures, the canary's)."""
        found = self.figures(task, [production, canary])
        return found[production], found[canary]

    def figures(self, task: str, versions: list[str]) -> dict[str, Figures]:
        """Figures of each of ``task``'s ``versions``, summed over every finished job."""
        pattern = "|".join(re.escape(v) for v in versions)
        sel = f"task={_promql_string(task)}, version=~{_promql_string(pattern)}, job!={_promql_string(LIVE_JOB)}"

        def by_version(expr: str) -> dict[str, float]:
            return self.query(expr.replace("SEL", sel))

        documents = by_version("sum by (version) (mapreduce_llm_documents_total{SEL})")
        errors = by_version('sum by (version) (mapreduce_llm_documents_total{SEL, status="error"})')
        not_found = by_version("sum by (version) (mapreduce_llm_documents_not_found_total{SEL})")
        answers = by_version("sum by (version) (mapreduce_llm_map_answers_total{SEL})")
        failures = by_version("sum by (version) (mapreduce_llm_answer_parse_failures_total{SEL})")
        confidence = by_version(
            "sum by (version) (mapreduce_llm_output_confidence_ratio_sum{SEL})"
            " / sum by (version) (mapreduce_llm_output_confidence_ratio_count{SEL})"
        )
        drift = by_version("max by (version) (mapreduce_llm_drift_score{SEL})")
        return {
            v: Figures(
                version=v,
                source=self.url,
                documents=int(documents.get(v, 0)),
                errors=int(errors.get(v, 0)),
                not_found=int(not_found[v]) if v in not_found else None,
                map_answers=int(answers.get(v, 0)),
                parse_failures=int(failures.get(v, 0)),
                mean_confidence=confidence.get(v),
                drift_score=drift.get(v),
            )
            for v in versions
        }


def _expects_not_found(record: DocumentResult) -> bool:
    """The input says the document does not hold the answer (JSONL field ``answer`` null, kept in the result's
    metadata): "not found" is the right reply there, so it is not counted in the version's not-found rate."""
    return "answer" in record.metadata and record.metadata["answer"] is None
