"""Metrics on a real Prometheus and Pushgateway: three real jobs, a baseline, a drift alert, every dashboard panel.

Prometheus (Debian package ``prometheus``) and the Pushgateway (``prometheus-pushgateway``) run on free loopback
ports with the shipped rule files and 1 s scrape and evaluation intervals. Job A summarizes short Python docs
pieces with embeddings on, serving /metrics and pushing at the end; its profile.jsonl becomes baseline
``python-docs`` (through the CLI); job B summarizes license texts against that baseline. Then the drift alert
must fire. Job C answers a question with qa@2.0.0 (structured answers, calibrated for the served model) on two
short documents, one holding the fact and one not, which is re-retrieved. Then every query of the Grafana
dashboard must return data.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from mapreduce_llm.cli import cli
from mapreduce_llm.config import JobSpec
from mapreduce_llm.engines.vllm_ray import VLLMRayEngine
from mapreduce_llm.monitoring.export import serve_metrics
from mapreduce_llm.prompts import load_calibration, select_prompts, write_calibration
from mapreduce_llm.results import VersionDrift
from mapreduce_llm.runner import run_job
from mapreduce_llm.service.app import create_app
from mapreduce_llm.service.metrics import ServiceMetrics
from tests.conftest import CORPUS, PROMPTS, SUMMARIZE
from tests.integration.conftest import TEST_ENGINE
from tests.integration.test_drift_scenario import _scenario
from tests.prometheus_servers import free_port, prometheus, pushgateway, query, static
from tests.service_helpers import line, make_service
from tests.test_monitoring_config import dashboard_exprs


@dataclass
class Stack:
    prometheus: str
    pushgateway: str
    driver_port: int


@contextlib.contextmanager
def _batch_service_metrics(root: Path, port: int) -> Iterator[None]:
    """The batch service's own /metrics (as `serve` exports them) with one batch in flight and API calls every
    half second (a latency quantile over a rate needs requests in its window), over the fake job runner: the
    service's dashboard row has series to show."""
    service = make_service(root)
    metrics = ServiceMetrics(service.store)
    service.create([line("a"), line("b")])
    service.batches.tick()
    token = "stack-token-0123456789abcdef"
    stop = threading.Event()

    def calls(client: TestClient) -> None:
        while not stop.wait(0.5):
            client.get("/v1/batches", headers={"Authorization": f"Bearer {token}"})
            client.get("/v1/batches")  # a 401

    with (
        TestClient(create_app(service.batches, [token], middleware=[metrics.middleware])) as client,
        serve_metrics(metrics.registry, port),
    ):
        caller = threading.Thread(target=calls, args=(client,), daemon=True)
        caller.start()
        try:
            yield
        finally:
            stop.set()
            caller.join(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Prometheus + Pushgateway on loopback, scraping the job driver's port, the Pushgateway and a batch service's
    /metrics every second."""
    root = tmp_path_factory.mktemp("prometheus")
    gw_port, driver_port, service_port = free_port(), free_port(), free_port()
    scrapes = [
        static("mapreduce-llm-driver", driver_port),
        static("mapreduce-llm-service", service_port),
        static("pushgateway", gw_port, honor_labels=True),
    ]
    with (
        pushgateway(root, gw_port) as gateway,
        prometheus(root, scrapes, rules=True) as server,
        _batch_service_metrics(root / "service", service_port),
    ):
        yield Stack(server, gateway, driver_port)


def _query(stack: Stack, expr: str) -> list[dict[str, Any]]:
    return query(stack.prometheus, expr)


def _wait_for(stack: Stack, expr: str, series: int = 1, seconds: float = 60) -> list[dict[str, Any]]:
    """Poll until ``expr`` returns at least ``series`` series (scrapes and rule evaluations run every second)."""
    deadline = time.monotonic() + seconds
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = _query(stack, expr)
        if len(result) >= series:
            return result
        time.sleep(1)
    raise TimeoutError(f"{len(result)} of {series} series for {expr} after {seconds} s: {result}")


def _monitored_job(
    stack: Stack,
    engine: VLLMRayEngine,
    src: Path,
    out: Path,
    baselines: Path,
    baseline: str | None,
    prompt: str = "summarize",
    job_id: str | None = None,
    prompts_dir: Path = PROMPTS,
) -> dict[str, VersionDrift] | None:
    """``run_job`` with a ``monitoring:`` section (what `mapreduce-llm run --metrics-port P --pushgateway URL
    [--embed | --baseline NAME]` runs); returns the drift of its summary. Summaries keep 32 output tokens (the
    engine decodes ~30 tokens/s here); other prompts keep their own reservation (qa@2.0.0's answer record needs
    its 128) and their profiles reuse the vectors of the job's retrieval (embeddings on by default for answers).
    The jobs have 4 documents: the drift minimum is lowered to that (by default 40 would withhold the drift)."""
    summarize = prompt == "summarize"
    spec = JobSpec.model_validate(
        {
            "input": src,
            "output": out,
            "job_id": job_id,
            "prompt": prompt,
            "prompts_dir": prompts_dir,
            "engine": TEST_ENGINE.model_dump(),
            "sampling": {"reserved_output_tokens": 32} if summarize else {},
            "monitoring": {
                "metrics_port": stack.driver_port,
                "metrics_linger_s": 2,  # Prometheus scrapes the driver's final figures too (every second here)
                "pushgateway": stack.pushgateway,
                "embed": True,
                "baseline": baseline,
                "baselines_dir": baselines,
                "drift_min_documents": 4,
                "drift_min_chunks": 4,
            },
        }
    )
    summary = run_job(spec, engine=engine)
    written = json.loads((out / "summary.json").read_text()).get("drift")
    assert written == (None if summary.drift is None else {k: v.model_dump() for k, v in summary.drift.items()})
    return summary.drift


@pytest.fixture(scope="module")
def two_jobs(stack: Stack, engine: VLLMRayEngine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Job A on Python docs → baseline python-docs; job B on license texts scored against it."""
    root = tmp_path_factory.mktemp("jobs")
    folders = _scenario().build_corpora(root / "corpora", 4)
    for folder in folders.values():  # short documents: one chunk each, the engine decodes ~30 tokens/s here
        for path in folder.iterdir():
            path.write_text(path.read_text()[:1500])
    baselines = root / "baselines"
    _monitored_job(stack, engine, folders["baseline"], root / "week1", baselines, None)
    made = CliRunner().invoke(
        cli,
        ["drift", "baseline", "--results", str(root / "week1"), "--name", "python-docs"],
        env={"MAPREDUCE_LLM_BASELINES": str(baselines)},
    )
    assert made.exit_code == 0, made.output
    drift = _monitored_job(stack, engine, folders["different"], root / "week2", baselines, "python-docs")
    return {"root": root, "drift": drift, "baseline_output": made.output}


FACT = "The access code for the Halvorsen archive is 4417."
QUESTION = "What is the access code for the Halvorsen archive?"


@pytest.fixture(scope="module")
def answer_job(stack: Stack, engine: VLLMRayEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Job C (id ``answers``): qa@2.0.0 on two ~2,500-character Python docs pieces, the first with a planted
    fact at a paragraph break, the second without it, both asking for that fact. The shipped calibration is
    used with its re-retrieval trigger raised to 0 (every answer's confidence is below it, and a missing
    answer triggers too), so both documents are re-retrieved whatever the model answers."""
    root = tmp_path_factory.mktemp("answers")
    prompts = root / "prompts"
    shutil.copytree(PROMPTS, prompts)
    qa = select_prompts("qa@2.0.0", prompts).base
    shipped = load_calibration(qa, engine.info.model)
    assert shipped is not None, f"qa@2.0.0 has no calibration for {engine.info.model}"
    write_calibration(qa, engine.info.model, shipped.model_copy(update={"reduce_min_confidence": 0.0}))
    text = (CORPUS / "python-howtos.md").read_text(encoding="utf-8")
    needle = text[:2_500]
    at = needle.find("\n\n", 1_200)
    needle = needle[:at] + "\n\n" + FACT + needle[at:]
    rows = [
        {"id": "needle", "text": needle, "question": QUESTION},
        {"id": "no-needle", "text": text[20_000:22_500], "question": QUESTION},
    ]
    assert FACT not in rows[1]["text"]
    source = root / "questions.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = root / "out"
    _monitored_job(
        stack, engine, source, out, root / "baselines", None, prompt="qa@2.0.0", job_id="answers", prompts_dir=prompts
    )
    return out


def test_baseline_is_built_from_the_first_job(two_jobs: dict[str, Any]) -> None:
    """`drift baseline` stores a reference for summarize@1.0.0 from job A's profile.jsonl."""
    assert f"summarize@{SUMMARIZE}: 4 documents" in two_jobs["baseline_output"]
    stored = json.loads((two_jobs["root"] / "baselines" / "python-docs.json").read_text())
    assert stored["versions"][f"summarize@{SUMMARIZE}"]["centroid"]


def test_pushed_figures_are_grouped_by_job_and_task(stack: Stack, two_jobs: dict[str, Any]) -> None:
    """The Pushgateway holds one group per job name and task; Prometheus scrapes it with those labels."""
    result = _wait_for(stack, 'mapreduce_llm_job_documents{status="ok", job=~"week1|week2"}', series=2)
    assert {(r["metric"]["job"], r["metric"]["task"]) for r in result} == {
        ("week1", "summarize"),
        ("week2", "summarize"),
    }
    assert all(r["value"][1] == "4" for r in result)


def test_drift_alert_fires_for_the_different_corpus(stack: Stack, two_jobs: dict[str, Any]) -> None:
    """Job B's drift gauges are over the thresholds and MapReduceLLMDrift fires in Prometheus."""
    judged = two_jobs["drift"][f"summarize@{SUMMARIZE}"]  # from the summary: the job's run_job returned it
    assert judged.status == "scored" and judged.scores["embedding_centroid"] > 0.2
    assert judged.mmd_p_value is not None  # the dashboard's p-value panel reads it
    firing = _wait_for(
        stack, f'ALERTS{{alertname="MapReduceLLMDrift", alertstate="firing", task="summarize", version="{SUMMARIZE}"}}'
    )
    assert "embedding_centroid" in {r["metric"]["signal"] for r in firing}


def test_answer_job_exports_answers_and_reretrievals(stack: Stack, answer_job: Path) -> None:
    """Job C's pushed figures: its map answers by status, a parse-failure ratio (0 when none failed) and the
    re-retrieval of the document without the fact."""
    results = [json.loads(line) for line in (answer_job / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results] == ["ok", "ok"], results
    assert all(r["reretrieval"]["triggered"] for r in results), [r["reretrieval"] for r in results]
    answers = _wait_for(stack, 'mapreduce_llm_map_answers_total{job="answers", task="qa", version="2.0.0"}')
    assert sum(float(r["value"][1]) for r in answers) == sum(len(r["answers"]) for r in results)
    ratio = _wait_for(stack, 'job_task_version:mapreduce_llm_answer_parse_failure:ratio{job="answers"}')
    assert math.isfinite(float(ratio[0]["value"][1])), ratio
    _wait_for(stack, 'mapreduce_llm_reretrievals_total{job="answers", task="qa", version="2.0.0"}')


def test_every_dashboard_panel_returns_data(stack: Stack, two_jobs: dict[str, Any], answer_job: Path) -> None:
    """Each query of the Grafana dashboard returns at least one series with a number, from the real jobs
    (the answer and re-retrieval panels from job C). The vLLM engines row reads Ray's metrics endpoints, which
    this stack does not scrape: tests/integration/test_cluster.py checks it on a cluster."""
    deadline = time.monotonic() + 60  # recording rules run every second; give them a few rounds
    while True:
        empty = []
        for title, expr in dashboard_exprs():
            if "ray_vllm_" in expr:
                continue
            values = [float(r["value"][1]) for r in _query(stack, expr)]
            if not any(math.isfinite(v) for v in values):
                empty.append((title, expr, values))
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not empty, empty
