"""The Grafana dashboard of mapreduce-llm jobs, built with Grafana's foundation SDK (``grafana-foundation-sdk``).

``make dashboards`` runs this file and writes ``grafana/dashboards/mapreduce-llm.json``, which Grafana's file
provisioning reads; the JSON is committed and never edited by hand (a test fails when it differs from what this
file builds). The dashboard is a list of rows (:data:`ROWS`), one function per row returning its title and
panels; to add a row, write its function and list it there.

Every query reads the ``${datasource}`` variable (a Prometheus datasource chosen when the dashboard is opened) and
uses only series a job or the batch service exports, or the recording rules of ``rules/recording.yml``:
tests/test_monitoring_config.py checks the names, tests/integration/test_monitoring_stack.py runs every query
on a real Prometheus fed by real jobs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, piechart, stat, timeseries
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement

from mapreduce_llm.prompts.evidence import LIVE_JOB
from mapreduce_llm.prompts.guard import GuardConfig

UID = "mapreduce-llm"
OUTPUT = Path(__file__).parent / "grafana" / "dashboards" / "mapreduce-llm.json"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
"""Every panel's datasource: the dashboard's ``datasource`` variable."""
WIDTH, HEIGHT = 12, 8
"""A panel's size in grid units: two panels side by side (the grid is 24 wide)."""
FINISHED = f'job!="{LIVE_JOB}"'
"""Finished jobs only (Pushgateway groups): the rollout guard's selector, which leaves out the live driver."""

P = TypeVar("P", timeseries.Panel, bargauge.Panel, stat.Panel, piechart.Panel)


def query(expr: str, legend: str) -> Dataquery:
    """One PromQL query with its legend (``{{label}}`` placeholders)."""
    return Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def _panel(panel: P, title: str, description: str, unit: str, queries: list[Dataquery]) -> P:
    """Title, description, unit, size and queries (refIds A, B, ...) of any panel with queries."""
    panel.title(title)
    panel.description(description)
    panel.datasource(DATASOURCE)
    panel.unit(unit)
    panel.height(HEIGHT)
    panel.span(WIDTH)
    for ref, q in zip("ABCDEFGH", queries, strict=False):
        panel.with_target(q.ref_id(ref))
    return panel


def graph(title: str, description: str, unit: str, *queries: Dataquery) -> timeseries.Panel:
    """A time series panel, legend as a list under it."""
    panel = _panel(timeseries.Panel(), title, description, unit, list(queries))
    return panel.legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM))


def bars(title: str, description: str, unit: str, *queries: Dataquery) -> bargauge.Panel:
    """A bar gauge: the latest value of each series as a bar."""
    return _panel(bargauge.Panel(), title, description, unit, list(queries))


def single(title: str, description: str, unit: str, *queries: Dataquery) -> stat.Panel:
    """A stat panel: the latest value of each series as a number."""
    return _panel(stat.Panel(), title, description, unit, list(queries))


def pie(title: str, description: str, unit: str, *queries: Dataquery) -> piechart.Panel:
    """A pie chart of the series' latest values."""
    return _panel(piechart.Panel(), title, description, unit, list(queries))


@dataclass(frozen=True)
class Section:
    """One row of the dashboard: its title and panels, laid out two by two under it."""

    title: str
    panels: list[Builder[model.Panel]]


# --- Rows -------------------------------------------------------------------------------------------------------


def jobs_row() -> Section:
    """Throughput, tokens, latency, errors and freshness of jobs."""
    return Section(
        "Jobs",
        [
            graph(
                "Throughput: documents per second",
                "Live, from the running job's /metrics.",
                "ops",
                query(
                    "sum by (task, version, status) (rate(mapreduce_llm_documents_total[5m]))",
                    "{{task}}@{{version}} {{status}}",
                ),
            ),
            bars(
                "Documents per job",
                "Final counts pushed by each job (Pushgateway) and the running job's counts.",
                "short",
                query("sum by (job, task, status) (mapreduce_llm_job_documents)", "{{job}} {{task}} {{status}}"),
            ),
            graph(
                "Tokens per second",
                "Prompt, generated and prefix-cached tokens by stage.",
                "short",
                query("sum by (stage) (rate(mapreduce_llm_prompt_tokens_total[5m]))", "prompt {{stage}}"),
                query("sum by (stage) (rate(mapreduce_llm_completion_tokens_total[5m]))", "completion {{stage}}"),
                query("sum by (stage) (rate(mapreduce_llm_cached_prompt_tokens_total[5m]))", "prefix-cached {{stage}}"),
            ),
            graph(
                "Engine request latency p90 by stage",
                "Submission to last token, per engine request, over each job (its final figures, or the running "
                "job's so far). Not a rate: a short job's requests may all end between two scrapes.",
                "s",
                query(
                    "histogram_quantile(0.9, sum by (job, stage, le) (mapreduce_llm_request_duration_seconds_bucket))",
                    "{{job}} {{stage}}",
                ),
            ),
            graph(
                "Document time by stage (median)",
                "Per-document seconds spent planning, mapping, reducing, in total, over each job (its final "
                "figures, or the running job's so far). Not a rate: a short job's documents may all end between "
                "two scrapes.",
                "s",
                query(
                    "histogram_quantile(0.5, sum by (job, stage, le) "
                    "(mapreduce_llm_document_stage_duration_seconds_bucket))",
                    "{{job}} {{stage}}",
                ),
            ),
            single(
                "Job duration",
                "Wall-clock seconds of each job.",
                "s",
                query("max by (job, task) (mapreduce_llm_job_duration_seconds)", "{{job}} {{task}}"),
            ),
            graph(
                "Document error ratio",
                "Alert MapReduceLLMDocumentErrors over 10%.",
                "percentunit",
                query("job_task_version:mapreduce_llm_document_error:ratio", "{{job}} {{task}}@{{version}}"),
            ),
            graph(
                "Engine requests by stage and status",
                "Engine requests so far, ok or error.",
                "short",
                query("sum by (stage, status) (mapreduce_llm_engine_requests_total)", "{{stage}} {{status}}"),
            ),
            single(
                "Reduce levels (p90)",
                "Levels of the reduce tree per document.",
                "short",
                query("histogram_quantile(0.9, sum by (task, le) (mapreduce_llm_reduce_levels_bucket))", "{{task}}"),
            ),
            single(
                "Time since the last successful job",
                "Alert MapReduceLLMNoSuccessfulJob after 6 h.",
                "s",
                query("time() - max by (task) (mapreduce_llm_job_last_success_timestamp_seconds)", "{{task}}"),
            ),
        ],
    )


def prompts_row() -> Section:
    """What went into the engine and what came out, per prompt version."""
    return Section(
        "Prompts and outputs",
        [
            graph(
                "Prompt length by version (median, tokens)",
                "Exact prompt tokens of each engine request.",
                "short",
                query(
                    "histogram_quantile(0.5, sum by (task, version, stage, le) "
                    "(mapreduce_llm_prompt_length_tokens_bucket))",
                    "{{task}}@{{version}} {{stage}}",
                ),
            ),
            graph(
                "Document length by version (median, tokens)",
                "Documents in the served model's tokens.",
                "short",
                query(
                    "histogram_quantile(0.5, sum by (task, version, le) (mapreduce_llm_document_length_tokens_bucket))",
                    "{{task}}@{{version}}",
                ),
            ),
            pie(
                "Prompt class shares",
                "Map prompts by length bucket / topic cluster of the baseline (other: unlike any baseline topic; "
                "none: no baseline).",
                "percentunit",
                query(
                    "sum by (task, version, class) (mapreduce_llm_prompt_class_total) / on (task, version) "
                    "group_left sum by (task, version) (mapreduce_llm_prompt_class_total)",
                    "{{task}}@{{version}} {{class}}",
                ),
            ),
            graph(
                "Output length by version (median, tokens)",
                "Generated tokens per engine request.",
                "short",
                query(
                    "histogram_quantile(0.5, sum by (task, version, stage, le) "
                    "(mapreduce_llm_output_length_tokens_bucket))",
                    "{{task}}@{{version}} {{stage}}",
                ),
            ),
            graph(
                "Confidence: geometric mean token probability",
                "exp(mean token logprob) of each final output; higher is surer.",
                "short",
                query("job_task_version:mapreduce_llm_output_confidence_ratio:mean", "{{job}} {{task}}@{{version}}"),
            ),
        ],
    )


def retrieval_row() -> Section:
    """How well chunks matched their query, and what became of structured answers."""
    return Section(
        "Retrieval and answers",
        [
            graph(
                "Retrieval similarity (query to chunks)",
                "Cosine similarity of the question (or task description) to the most similar chunk, and the mean "
                "of the top k.",
                "short",
                query(
                    "job_task_version:mapreduce_llm_retrieval_top1_similarity:mean",
                    "top-1 {{job}} {{task}}@{{version}}",
                ),
                query(
                    "sum by (task, version) (mapreduce_llm_retrieval_topk_similarity_sum) / sum by (task, version) "
                    "(mapreduce_llm_retrieval_topk_similarity_count)",
                    "top-k {{task}}@{{version}}",
                ),
            ),
            graph(
                "Low-similarity share",
                "Documents whose best chunk is under 0.2 similar to the query. Alert "
                "MapReduceLLMLowRetrievalSimilarity over 50% for questions (summaries compare with the task "
                "instruction, which matches no chunk well).",
                "percentunit",
                query(
                    "job_task_version_query:mapreduce_llm_low_similarity:ratio",
                    "{{job}} {{task}}@{{version}} {{query}}",
                ),
            ),
            graph(
                "Answers: map answers by outcome",
                "Structured map answers (output: answer prompts such as qa@2.0.0) by what became of them: kept, "
                "not_found, unsupported (evidence or answer not in the chunk), low_confidence (under the calibrated "
                "threshold), off_topic (evidence unrelated to the question), parse_failure (no valid JSON record).",
                "short",
                query(
                    "sum by (task, version, status) (mapreduce_llm_map_answers_total)",
                    "{{task}}@{{version}} {{status}}",
                ),
            ),
            graph(
                "Answer parse failure ratio",
                "Engine outputs with no valid JSON answer record (any stage) per map answer, by job. Alert "
                "MapReduceLLMAnswerParseFailures over 20%: outputs cut off at reserved_output_tokens, usually.",
                "percentunit",
                query("job_task_version:mapreduce_llm_answer_parse_failure:ratio", "{{job}} {{task}}@{{version}}"),
            ),
            graph(
                "Re-retrievals by outcome",
                "Documents re-retrieved (FLARE) because their answer was under the calibrated confidence or "
                "missing: accepted (a re-retrieved answer replaced it) or kept (none did).",
                "short",
                query(
                    "sum by (task, version, outcome) (mapreduce_llm_reretrievals_total)",
                    "{{task}}@{{version}} {{outcome}}",
                ),
            ),
            graph(
                "Chunk similarity: mapped vs skipped (mean)",
                "Mean cosine similarity of each chunk to its document's query: mapped=yes chunks went to the "
                "model, mapped=no were skipped by top-k retrieval (retrieval.mode: top_k). Skipped chunks close to "
                "mapped ones suggest a larger top_k.",
                "short",
                query(
                    "sum by (task, version, mapped) (mapreduce_llm_chunk_similarity_sum) / sum by (task, version, "
                    "mapped) (mapreduce_llm_chunk_similarity_count)",
                    "{{task}}@{{version}} mapped={{mapped}}",
                ),
            ),
        ],
    )


def drift_row() -> Section:
    """How far jobs' documents are from their baseline, and whether the samples were large enough to say."""
    return Section(
        "Drift",
        [
            bars(
                "Drift against the baseline",
                "PSI: > 0.1 moderate, > 0.25 significant (alert). Embedding centroid cosine distance: alert > 0.2. "
                "Scores found beside mapreduce_llm_drift_insufficient 1 are left out.",
                "short",
                query("task_version_signal:mapreduce_llm_drift_score:max", "{{task}}@{{version}} {{signal}}"),
            ),
            bars(
                "Drift test: MMD p-value and insufficient samples",
                "Permutation p-value of the MMD test on chunk embeddings (documents relabelled): alert "
                "MapReduceLLMDriftMMD under 0.01. insufficient=1: too few documents or chunks on a side "
                "(monitoring.drift_min_documents, drift_min_chunks), so no drift score or p-value was exported for "
                "that task@version.",
                "short",
                query("min by (task, version) (mapreduce_llm_drift_mmd_p_value)", "{{task}}@{{version}} p-value"),
                query("max by (task, version) (mapreduce_llm_drift_insufficient)", "{{task}}@{{version}} insufficient"),
            ),
            bars(
                "Drift test: MMD² of chunk embeddings",
                "The statistic behind the p-value: unbiased MMD² (RBF kernel) between the baseline's and the job's "
                "chunk embeddings, largest of any job per task@version. Near 0 (or below) for the same kind of "
                "documents; its size depends on the embedding model, so compare it across jobs, not with a fixed "
                "threshold.",
                "short",
                query("max by (task, version) (mapreduce_llm_drift_mmd)", "{{task}}@{{version}} MMD²"),
            ),
        ],
    )


def _guarded(numerator: str, denominator: str) -> str:
    """A per-version ratio over finished jobs, 0 (not absent) when the numerator has no series."""
    return (
        f"(sum by (task, version) ({numerator}) or 0 * sum by (task, version) ({denominator}))"
        f" / sum by (task, version) ({denominator})"
    )


def rollouts_row() -> Section:
    """Canary vs production, and the figures the rollout guard judges."""
    guard = GuardConfig()
    documents = f"mapreduce_llm_documents_total{{{FINISHED}}}"
    source = (
        "What `prompts rollout --prometheus URL` compares: summed per prompt version over every finished job "
        "(Pushgateway groups; the live driver is left out). The guard's decisions are printed, logged and kept in "
        "prompts/<task>/history.jsonl."
    )
    guarded = (
        f"{source} Thresholds are rises (drops for confidence) of the canary over production, in the guard: "
        "section of prompts/<task>/labels.yaml."
    )
    return Section(
        "Prompt rollouts",
        [
            graph(
                "Canary vs production: confidence",
                "Geometric mean token probability of final outputs per prompt label. Alert "
                "MapReduceLLMCanaryDiverging at 0.1 apart.",
                "short",
                query("task_label:mapreduce_llm_output_confidence_ratio:mean", "{{task}} {{label}}"),
            ),
            graph(
                "Canary vs production: error ratio",
                "Failed documents per prompt label. Alert MapReduceLLMCanaryDiverging 5 points apart.",
                "percentunit",
                query("task_label:mapreduce_llm_document_error:ratio", "{{task}} {{label}}"),
            ),
            bars(
                "Rollout guard: documents per version",
                f"{source} Either side under guard.min_documents ({guard.min_documents} by default; red below it) "
                "is insufficient data: the rollout may reach guard.first_step, no further.",
                "short",
                query(f"sum by (task, version) ({documents})", "{{task}}@{{version}}"),
            ).thresholds(
                ThresholdsConfig()
                .mode(model.ThresholdsMode.ABSOLUTE)
                .steps([model.Threshold(None, "red"), model.Threshold(guard.min_documents, "green")])
            ),
            graph(
                "Rollout guard: error rate per version",
                f"{guarded} Limit: {guard.error_rate:g} above production (guard.error_rate, default).",
                "percentunit",
                query(
                    _guarded(f'mapreduce_llm_documents_total{{{FINISHED}, status="error"}}', documents),
                    "{{task}}@{{version}}",
                ),
            ),
            graph(
                "Rollout guard: parse failure rate per version",
                f"{guarded} Answer parse failures per map answer (output: answer prompts). Limit: "
                f"{guard.parse_failure_rate:g} above production (guard.parse_failure_rate, default).",
                "percentunit",
                query(
                    _guarded(
                        f"mapreduce_llm_answer_parse_failures_total{{{FINISHED}}}",
                        f"mapreduce_llm_map_answers_total{{{FINISHED}}}",
                    ),
                    "{{task}}@{{version}}",
                ),
            ),
            graph(
                "Rollout guard: not-found rate per version",
                f'{guarded} Answered documents that came back "not found" (versions that answer questions). Limit: '
                f"{guard.not_found_rate:g} above production (guard.not_found_rate, default).",
                "percentunit",
                query(
                    f"sum by (task, version) (mapreduce_llm_documents_not_found_total{{{FINISHED}}})"
                    f' / sum by (task, version) (mapreduce_llm_documents_total{{{FINISHED}, status="ok"}})',
                    "{{task}}@{{version}}",
                ),
            ),
            graph(
                "Rollout guard: mean confidence per version",
                f"{guarded} Mean exp(mean token logprob) of final outputs. Limit: {guard.mean_confidence:g} below "
                "production (guard.mean_confidence, default).",
                "short",
                query(
                    f"sum by (task, version) (mapreduce_llm_output_confidence_ratio_sum{{{FINISHED}}})"
                    f" / sum by (task, version) (mapreduce_llm_output_confidence_ratio_count{{{FINISHED}}})",
                    "{{task}}@{{version}}",
                ),
            ),
            graph(
                "Rollout guard: highest drift score per version",
                f"{guarded} The highest drift score of any signal. Limit: {guard.drift_score:g} above production "
                "(guard.drift_score, default).",
                "short",
                query(f"max by (task, version) (mapreduce_llm_drift_score{{{FINISHED}}})", "{{task}}@{{version}}"),
            ),
        ],
    )


def service_row() -> Section:
    """The batch service's own figures (`mapreduce-llm serve --metrics-port`)."""
    return Section(
        "Batch service",
        [
            graph(
                "Service: batches by status",
                "Batches the batch service keeps (`mapreduce-llm serve`), by OpenAI status.",
                "short",
                query("sum by (status) (mapreduce_llm_service_batches)", "{{status}}"),
            ),
            graph(
                "Service: documents in flight",
                "Requests of unfinished batches that are neither completed nor failed yet.",
                "short",
                query("sum(mapreduce_llm_service_documents_in_flight)", "in flight"),
            ),
            graph(
                "Service: HTTP latency p90 by route",
                "90th percentile time to answer an API request, per route template.",
                "s",
                query(
                    "histogram_quantile(0.9, sum by (route, le) "
                    "(rate(mapreduce_llm_service_http_request_duration_seconds_bucket[5m])))",
                    "{{route}}",
                ),
            ),
            graph(
                "Service: HTTP requests by route and status",
                "API requests per second; 401s are wrong or missing tokens.",
                "reqps",
                query(
                    "sum by (route, status) (rate(mapreduce_llm_service_http_request_duration_seconds_count[5m]))",
                    "{{route}} {{status}}",
                ),
            ),
        ],
    )


def _per_replica_quantile(histogram: str, q: float) -> str:
    """A quantile of ``histogram`` over each replica's life so far (a replica lives for one job). Not over a
    rate: the replica's metrics reach Prometheus every few seconds, and a short job's requests may all fall
    between two of them, which leaves a rate empty."""
    return f"histogram_quantile({q}, sum by (ReplicaId, le) ({histogram}_bucket))"


def engines_row() -> Section:
    """vLLM's own figures from inside each engine replica (a Ray actor), through Ray's metrics endpoint of the node
    it runs on: Ray names them ``ray_vllm_*`` and labels them ``ReplicaId`` (replica-0, ...) and ``NodeAddress``."""
    return Section(
        "vLLM engines",
        [
            graph(
                "Engines: time to first token per replica",
                "Median and 95th percentile time from a request's arrival in the engine to its first token (queueing "
                "plus prefill), over the replica's requests so far. Rising with a steady load means the replica is "
                "saturated.",
                "s",
                query(_per_replica_quantile("ray_vllm_time_to_first_token_seconds", 0.5), "{{ReplicaId}} p50"),
                query(_per_replica_quantile("ray_vllm_time_to_first_token_seconds", 0.95), "{{ReplicaId}} p95"),
            ),
            graph(
                "Engines: time per output token per replica",
                "Median and 95th percentile decode time per generated token, per request, over the replica's requests "
                "so far.",
                "s",
                query(
                    _per_replica_quantile("ray_vllm_request_time_per_output_token_seconds", 0.5), "{{ReplicaId}} p50"
                ),
                query(
                    _per_replica_quantile("ray_vllm_request_time_per_output_token_seconds", 0.95), "{{ReplicaId}} p95"
                ),
            ),
            graph(
                "Engines: requests running and waiting per replica",
                "Requests in the replica's running batch, and requests queued for it. A long queue with a full KV "
                "cache: fewer concurrent requests, or more replicas.",
                "short",
                query("sum by (ReplicaId) (ray_vllm_num_requests_running)", "{{ReplicaId}} running"),
                query("sum by (ReplicaId) (ray_vllm_num_requests_waiting)", "{{ReplicaId}} waiting"),
            ),
            graph(
                "Engines: KV-cache usage per replica",
                "Share of the replica's KV-cache blocks in use (1 = full: new requests wait, running ones may be "
                "preempted).",
                "percentunit",
                query(
                    "max by (ReplicaId, NodeAddress) (ray_vllm_kv_cache_usage_perc)", "{{ReplicaId}} on {{NodeAddress}}"
                ),
            ),
            graph(
                "Engines: prefix-cache hit rate per replica",
                "Prompt tokens found in the prefix cache over prompt tokens looked up, since the replica started: the "
                "shared instructions at the start of every prompt should hit.",
                "percentunit",
                query(
                    "sum by (ReplicaId) (ray_vllm_prefix_cache_hits_total) / "
                    "sum by (ReplicaId) (ray_vllm_prefix_cache_queries_total)",
                    "{{ReplicaId}}",
                ),
            ),
            graph(
                "Engines: tokens per second per replica",
                "Prompt tokens computed and tokens generated per second by each replica.",
                "short",
                query("sum by (ReplicaId) (rate(ray_vllm_prompt_tokens_total[5m]))", "{{ReplicaId}} prompt"),
                query("sum by (ReplicaId) (rate(ray_vllm_generation_tokens_total[5m]))", "{{ReplicaId}} generated"),
            ),
        ],
    )


ROWS: list[Callable[[], Section]] = [
    jobs_row,
    prompts_row,
    retrieval_row,
    drift_row,
    rollouts_row,
    service_row,
    engines_row,
]
"""The dashboard's rows, top to bottom."""


# --- The dashboard ----------------------------------------------------------------------------------------------


def build() -> model.Dashboard:
    """The dashboard: settings, the datasource variable, links, then each row and its panels (numbered 1, 2, ...
    top to bottom)."""
    board = (
        Dashboard("mapreduce-llm")
        .uid(UID)
        .tags(["mapreduce-llm", "llm", "batch"])
        .timezone("utc")
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .link(
            DashboardLink("Ray dashboard")
            .type(model.DashboardLinkType.LINK)
            .url("http://127.0.0.1:8265")
            .target_blank(True)
        )
        .link(
            DashboardLink("vLLM metrics docs")
            .type(model.DashboardLinkType.LINK)
            .url("https://docs.vllm.ai/en/latest/design/metrics.html")
            .target_blank(True)
        )
    )
    for row in ROWS:
        section = row()
        board.with_row(Row(section.title))
        for panel in section.panels:
            board.with_panel(panel)
    built = board.build()
    for number, item in enumerate(built.panels or [], 1):
        item.id_val = number
    return built


def render() -> str:
    """The dashboard as the JSON file Grafana provisions (sorted keys, two-space indent, final newline)."""
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(build()) + "\n"


def main() -> int:
    """Write the dashboard JSON (``make dashboards``)."""
    rendered = render()
    if OUTPUT.exists() and OUTPUT.read_text(encoding="utf-8") == rendered:
        print(f"{OUTPUT} is up to date")
    else:
        OUTPUT.write_text(rendered, encoding="utf-8")
        print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
