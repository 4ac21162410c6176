"""Jobs on a real multi-node Ray cluster with token authentication, through `mapreduce-llm cluster submit|status|logs|
list`, everything on loopback.

The cluster is a head (one CPU, no engine resources: the jobs' drivers run there) and worker nodes joined with
`ray start --address …` (tests/ray_nodes.py: own temp folders and ports, token auth). Engines are placed on worker
nodes by the job spec's ``engine.resources_per_replica``; each job's summary.json says which nodes answered its
requests. Every node is stopped by its process group at the end (never `ray stop`, which would end every Ray on the
machine).

- A monitored job (``monitoring:`` in its spec) on the engine node: results, /metrics while it runs, drift against
  an uploaded baseline, its figures in a real Pushgateway, and vLLM's own engine metrics, exported by the replica
  through Ray's metrics endpoint of its node, found in a real Prometheus that discovers the nodes from the head's
  service-discovery file (as monitoring/prometheus.yml does).
- Node loss: an engine node is killed mid-job (SIGKILL to its raylet and workers). With a replacement node joining,
  the replica restarts there and the job finishes with every document exactly once; without one, the replica is
  given up after ``engine.replica_lost_after_s`` and the job finishes on its other replica.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mapreduce_llm.monitoring.baselines import BaselineStore
from mapreduce_llm.monitoring.drift import build_baseline
from mapreduce_llm.monitoring.profiles import DocumentProfile
from mapreduce_llm.service.ray_head import LocalRayHead, free_ports
from tests.conftest import PROMPTS
from tests.prometheus_servers import prometheus, pushgateway, query
from tests.ray_nodes import WorkerNode
from tests.test_monitoring_config import dashboard_exprs

BIN = Path(sys.executable).parent
JOB_S = 600  # an engine start and a few documents; generous for a machine shared with other work
ENGINE = {"max_model_len": 1024, "kv_cache_space_gib": 1, "engine_kwargs": {"enforce_eager": True}}
"""The engine of every job here: small context, no torch.compile (starts sooner)."""


@dataclass
class Cluster:
    head: LocalRayHead
    env: dict[str, str]
    """Environment of a client that has the token (and RAY_AUTH_MODE=token)."""

    @property
    def address(self) -> str:
        return self.head.address


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A token-auth Ray head on 127.0.0.1 with one CPU and no engine resources."""
    with LocalRayHead(num_cpus=1, startup_s=120, first_port=26379) as head:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": head.token}
        env.pop("RAY_ADDRESS", None)
        yield Cluster(head, env)


@pytest.fixture(scope="module")
def engine_node(cluster: Cluster) -> Iterator[WorkerNode]:
    """A worker node that declares the custom resource ``engine``: where the monitored job's replica must go."""
    with WorkerNode(cluster.head, num_cpus=1, resources={"engine": 1}, first_port=27000) as node:
        yield node


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mapreduce-llm"), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _job_state(cluster: Cluster, submission: str) -> str:
    """The job's state from the Jobs API (polled over HTTP: a CLI process per poll would take CPU from the engines)."""
    answer = httpx.get(
        f"{cluster.address}/api/jobs/{submission}",
        headers={"Authorization": f"Bearer {cluster.head.token}"},
        timeout=10,
    )
    answer.raise_for_status()
    return str(answer.json()["status"])


def _status(cluster: Cluster, submission: str) -> str:
    """`mapreduce-llm cluster status` of the job."""
    status = _cli(cluster.env, "cluster", "status", submission, "--address", cluster.address)
    assert status.returncode == 0, status.stderr
    return status.stdout


def _submit(cluster: Cluster, spec: Path) -> str:
    submitted = _cli(cluster.env, "cluster", "submit", str(spec), "--address", cluster.address)
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip().splitlines()[-1]


def _logs(cluster: Cluster, submission: str) -> str:
    return _cli(cluster.env, "cluster", "logs", submission, "--address", cluster.address).stdout


def test_submission_without_token_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    """No token: a one-line explanation and exit status 1, not a traceback."""
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    src = tmp_path / "doc.txt"
    src.write_text("Ray runs Python code on a cluster.")
    done = _cli(
        env, "cluster", "submit", "--input", str(src), "--output", str(tmp_path / "out"), "--address", cluster.address
    )
    assert done.returncode == 1
    assert "refused the request" in done.stderr and "RAY_AUTH_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


# --- a monitored job on the engine node ----------------------------------------------------------------------------

MONITORED = "cluster-monitored"

VLLM_SERIES = {
    "time to first token": "ray_vllm_time_to_first_token_seconds_count",
    "time per output token": "ray_vllm_request_time_per_output_token_seconds_count",
    "requests running": "ray_vllm_num_requests_running",
    "requests waiting": "ray_vllm_num_requests_waiting",
    "KV-cache usage": "ray_vllm_kv_cache_usage_perc",
    "prefix-cache queries": "ray_vllm_prefix_cache_queries_total",
}
"""vLLM's engine metrics as Ray exports them (``vllm:`` becomes ``ray_vllm_``), one per view of the dashboard row."""


def _pushed(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample the Pushgateway holds for the monitored job: (name, labels without job/instance) → value."""
    body = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return {
        (s.name, frozenset((k, v) for k, v in s.labels.items() if k not in {"job", "instance"})): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.labels.get("job") == MONITORED
    }


def _scrape(port: int) -> str | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None


def _with_data(server: str, panels: list[tuple[str, str]]) -> set[str]:
    """Titles of the dashboard panels whose query returns a number now."""
    return {title for title, expr in panels if any(math.isfinite(float(r["value"][1])) for r in query(server, expr))}


def _monitored_spec(tmp_path: Path, gateway: str, metrics_port: int) -> tuple[Path, Path]:
    """A qa job with monitoring in its spec and its replica on an ``engine`` node; returns (spec, output)."""
    baselines = tmp_path / "baselines"
    reference = [
        DocumentProfile(id=f"b{i}", task="qa", version="1.0.0", document_tokens=4000, map_prompt_tokens=[900] * 4)
        for i in range(5)
    ]
    BaselineStore(baselines).save(build_baseline("meeting-notes", reference, "test"))
    src = tmp_path / "questions.jsonl"
    text = "The meeting notes. The access code for the archive room is 4721. The room is on the third floor."
    question = "What is the access code for the archive room?"
    src.write_text("".join(json.dumps({"id": f"n{i}", "text": text, "question": question}) + "\n" for i in range(3)))
    out = tmp_path / "out"
    spec = tmp_path / "job.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "input": "questions.jsonl",  # relative: sent along with the job
                "output": str(out),  # a path on the cluster (here the same machine)
                "job_id": MONITORED,
                "prompt": "qa@1.0.0",
                "prompts_dir": str(PROMPTS),
                # Two requests at a time: the engine serves for a while, so vLLM's counters rise between scrapes
                # and the dashboard's rates have data.
                "engine": {**ENGINE, "resources_per_replica": {"engine": 1}, "max_concurrent_requests": 2},
                "sampling": {"reserved_output_tokens": 32},
                "monitoring": {
                    "metrics_port": metrics_port,
                    "pushgateway": gateway,
                    "embed": False,
                    "baseline": "meeting-notes",
                    "baselines_dir": str(baselines),
                    "drift_min_documents": 1,  # three documents against five: scored, not withheld as insufficient
                    "drift_min_chunks": 1,
                },
            }
        )
    )
    return spec, out


def test_a_monitored_job_runs_its_engine_on_the_engine_node(
    cluster: Cluster, engine_node: WorkerNode, tmp_path: Path
) -> None:
    """A real job with the embedded model, submitted with the token, monitoring in its spec: it succeeds with its
    replica on the engine node (not the head), `cluster status|logs|list` show it, it serves /metrics while it runs,
    scores drift against the uploaded baseline (printed, and in summary.json), leaves its figures, drift gauges
    included, in the Pushgateway group of its job id and task — and vLLM's engine metrics of replica-0 reach a real
    Prometheus through Ray's metrics endpoint of the engine node. (One job for all: each job starts an engine.)"""
    (metrics_port,) = free_ports(28200, 1)
    ray_targets = {"job_name": "ray", "file_sd_configs": [{"files": [str(cluster.head.service_discovery_file)]}]}
    with (
        pushgateway(tmp_path) as gateway,
        prometheus(tmp_path, [ray_targets]) as server,
    ):
        spec, out = _monitored_spec(tmp_path, gateway, metrics_port)
        submission = _submit(cluster, spec)
        served: str | None = None
        engine_series: list[dict[str, Any]] = []
        engine_panels = [(title, expr) for title, expr in dashboard_exprs() if "ray_vllm_" in expr]
        panels_with_data: set[str] = set()
        deadline = time.monotonic() + JOB_S
        state = ""
        while time.monotonic() < deadline:
            state = _job_state(cluster, submission)
            if state in {"SUCCEEDED", "FAILED", "STOPPED"}:
                break
            if served is None and state == "RUNNING":
                served = _scrape(metrics_port)
            if not engine_series:
                engine_series = query(server, '{__name__=~"ray_vllm_.+"}')
            panels_with_data |= _with_data(server, engine_panels)
            time.sleep(2)
        settle = time.monotonic() + 20  # the last export and scrape of the engine's figures
        while len(panels_with_data) < len(engine_panels) and time.monotonic() < settle:
            panels_with_data |= _with_data(server, engine_panels)
            time.sleep(2)
        logs, status = _logs(cluster, submission), _status(cluster, submission)
        assert state == "SUCCEEDED", f"{status}\n{logs[-3000:]}"
        engine_metrics = {view: query(server, f"last_over_time({name}[10m])") for view, name in VLLM_SERIES.items()}
        pushed = _pushed(gateway)
        scraped = [(r["metric"].get("instance"), r["value"][1]) for r in query(server, "up")]  # for the messages
        listed = cluster.head.service_discovery_file.read_text() if cluster.head.service_discovery_file.exists() else ""

    assert "task: qa" in status and "prompt_versions: 1.0.0" in status
    assert "3 ok, 0 errors of 3 documents" in logs
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == ["n0", "n1", "n2"]
    assert all(r["status"] == "ok" and r["output"].strip() and r["prompt"]["version"] == "1.0.0" for r in results)
    listed = _cli(cluster.env, "cluster", "list", "--address", cluster.address)
    assert submission in listed.stdout and "SUCCEEDED" in listed.stdout
    assert served is not None and "mapreduce_llm_job_running 1.0" in served, "no /metrics while the job ran"
    assert _scrape(metrics_port) is None  # served for the job's duration only

    summary = json.loads((out / "summary.json").read_text())
    assert summary["job_id"] == MONITORED
    assert summary["requests_by_node"] == {engine_node.node_id: summary["requests_sent"]}  # all on the worker
    judged = summary["drift"]["qa@1.0.0"]
    drift = judged["scores"]
    assert judged["status"] == "scored" and set(drift) == {"document_length", "prompt_class"}  # no embeddings
    assert judged["mmd_p_value"] is None
    assert "drift qa@1.0.0" in logs and "document_length" in logs

    task = {("task", "qa")}
    assert pushed[("mapreduce_llm_job_documents", frozenset({*task, ("status", "ok")}))] == 3
    assert pushed[("mapreduce_llm_job_last_success_timestamp_seconds", frozenset(task))] == summary["finished_at"]
    assert pushed[("mapreduce_llm_job_running", frozenset(task))] == 0
    for signal, score in drift.items():
        labels = frozenset({*task, ("version", "1.0.0"), ("signal", signal)})
        assert pushed[("mapreduce_llm_drift_score", labels)] == pytest.approx(score)
    assert pushed[("mapreduce_llm_drift_insufficient", frozenset({*task, ("version", "1.0.0")}))] == 0
    requests = [v for (name, _), v in pushed.items() if name == "mapreduce_llm_engine_requests_total"]
    assert sum(requests) == sum(summary["requests"].values())

    assert engine_series, f"no ray_vllm_* series in Prometheus while the job ran; up: {scraped}; listed: {listed}"
    for view, series in engine_metrics.items():
        assert series, f"no {VLLM_SERIES[view]} ({view}) in Prometheus"
        labels = series[0]["metric"]
        assert labels["ReplicaId"] == "replica-0" and labels["model_name"] == "SmolLM2-135M-Instruct", labels
    assert panels_with_data == {title for title, _ in engine_panels}, "dashboard panels of the vLLM row with no data"
    ttft = engine_metrics["time to first token"][0]
    assert float(ttft["value"][1]) >= summary["requests_sent"]  # one first token per request the engine answered


# --- node loss -----------------------------------------------------------------------------------------------------

DRILL = {"drill": 1}
"""The resource of the nodes a node-loss test owns, so that its replica can only go to them."""


def _drill_spec(tmp_path: Path, documents: int, **engine: Any) -> tuple[Path, Path]:
    """A summarize job over ``documents`` short texts, two requests at a time (so it lasts long enough to lose a
    node in the middle), its replica on a ``drill`` node; returns (spec, output)."""
    src = tmp_path / "docs.jsonl"
    lines = [
        {"id": f"d{i}", "text": f"Report {i}. The river crossing at mile {i * 7} was rebuilt in {1990 + i} with steel "
         f"beams. Traffic doubled in the following year, and a second lane opened {i + 2} years later."}
        for i in range(documents)
    ]  # fmt: skip
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    spec = tmp_path / "job.yaml"
    settings = {"resources_per_replica": DRILL, "max_concurrent_requests": 2, **engine}
    job = {"input": "docs.jsonl", "output": str(out), "prompt": "summarize", "prompts_dir": str(PROMPTS)}
    spec.write_text(
        yaml.safe_dump({**job, "engine": {**ENGINE, **settings}, "sampling": {"reserved_output_tokens": 48}})
    )
    return spec, out


def _finished(out: Path) -> list[dict[str, Any]]:
    """The documents the running job has finished so far (its partial result log)."""
    partial = out / "results.partial.jsonl"
    if not partial.exists():
        return []
    return [json.loads(line) for line in partial.read_text().splitlines() if line.endswith("}")]


def _until(cluster: Cluster, submission: str, done: Any, seconds: float = JOB_S) -> str:
    """Poll until ``done()`` or the job ended; returns its last state."""
    deadline = time.monotonic() + seconds
    state = _job_state(cluster, submission)
    while state not in {"SUCCEEDED", "FAILED", "STOPPED"} and not done():
        assert time.monotonic() < deadline, f"still {state} after {seconds:.0f} s:\n{_logs(cluster, submission)}"
        time.sleep(1)
        state = _job_state(cluster, submission)
    return state


def test_a_lost_engine_node_is_replaced_and_every_document_comes_back_once(cluster: Cluster, tmp_path: Path) -> None:
    """The engine node dies after the job's first results; a replacement node joins. Ray restarts the replica there,
    the requests that were in flight are sent again, and the job succeeds with every document exactly once, served
    by both nodes. Prints how long the job took to produce its next result after the node was lost."""
    spec, out = _drill_spec(tmp_path, documents=8)
    with WorkerNode(cluster.head, num_cpus=1, resources=DRILL, first_port=29000) as first:
        submission = _submit(cluster, spec)
        state = _until(cluster, submission, lambda: len(_finished(out)) >= 1)
        assert state == "RUNNING", _status(cluster, submission)
        finished_before = len(_finished(out))
        first.kill()
        lost_at = time.monotonic()
    with WorkerNode(cluster.head, num_cpus=1, resources=DRILL, first_port=29500) as replacement:
        _until(cluster, submission, lambda: len(_finished(out)) > finished_before)
        recovered_s = time.monotonic() - lost_at
        state = _until(cluster, submission, lambda: False)
        logs = _logs(cluster, submission)
    assert state == "SUCCEEDED", f"{_status(cluster, submission)}\n{logs[-3000:]}"
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == [f"d{i}" for i in range(8)] and all(r["status"] == "ok" for r in results)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 8 and summary["errors"] == 0
    assert set(summary["requests_by_node"]) == {first.node_id, replacement.node_id}, summary["requests_by_node"]
    print(f"\nnode loss: next result {recovered_s:.0f} s after the engine node was killed (replacement joined, "
          f"model loaded again); job {summary['seconds']:.0f} s for 8 documents")  # fmt: skip


def test_without_a_replacement_the_job_goes_on_with_the_other_replica(cluster: Cluster, tmp_path: Path) -> None:
    """Two replicas on two engine nodes; one node dies mid-job and nothing replaces it. After
    engine.replica_lost_after_s its replica is given up (logged), the requests that waited on it go to the other
    replica, and the job succeeds with every document exactly once. Both replicas served requests (the pool spreads
    them by load). The job never hangs; had the lost replica been the only one, the job would have failed saying
    what a node needs (tests/test_vllm_pool.py)."""
    spec, out = _drill_spec(tmp_path, documents=10, replicas=2, replica_lost_after_s=15)
    with (
        WorkerNode(cluster.head, num_cpus=1, resources=DRILL, first_port=29000) as lost,
        WorkerNode(cluster.head, num_cpus=1, resources=DRILL, first_port=29500) as kept,
    ):
        submission = _submit(cluster, spec)
        state = _until(cluster, submission, lambda: len(_finished(out)) >= 3)
        assert state == "RUNNING", _status(cluster, submission)
        lost.kill()
        lost_at = time.monotonic()
        state = _until(cluster, submission, lambda: False)
        done_after = time.monotonic() - lost_at
        logs = _logs(cluster, submission)
    assert state == "SUCCEEDED", f"{_status(cluster, submission)}\n{logs[-3000:]}"
    assert "engine.replica_lost" in logs
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == [f"d{i}" for i in range(10)] and all(r["status"] == "ok" for r in results)
    by_node = json.loads((out / "summary.json").read_text())["requests_by_node"]
    assert set(by_node) == {lost.node_id, kept.node_id}, by_node
    print(f"\nnode loss without replacement, two replicas: job done {done_after:.0f} s after the node was killed")
