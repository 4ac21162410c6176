"""A submitted job monitored through its spec: a real token-auth Ray head, a real Pushgateway, everything on loopback.

The job spec's ``monitoring:`` section asks for /metrics on a free port, a push to the Pushgateway at the end and
drift against a baseline made here (sent along by ``submit``); the cluster runs ``mapreduce-llm run spec.yaml``
with no monitoring flag. The Ray head is the one of ``test_cluster.py`` (same fixture); the Pushgateway is
Debian's ``prometheus-pushgateway``, stopped by process id at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mapreduce_llm.monitoring.baselines import BaselineStore
from mapreduce_llm.monitoring.drift import build_baseline
from mapreduce_llm.monitoring.profiles import DocumentProfile
from mapreduce_llm.service.ray_head import free_ports
from tests.conftest import PROMPTS
from tests.integration.test_cluster import JOB_S, Cluster, _cli, cluster  # noqa: F401 - cluster: a fixture
from tests.integration.test_monitoring_stack import _wait_ready

JOB_ID = "cluster-monitored"


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Pushgateway on a free loopback port, holding what is pushed in memory only; yields its URL."""
    if shutil.which("prometheus-pushgateway") is None:
        pytest.fail("prometheus-pushgateway is not installed: `apt-get install prometheus-pushgateway`")
    (port,) = free_ports(28100, 1)  # below Ray's worker ports (33000-33999 for the test head)
    log = tmp_path_factory.mktemp("pushgateway") / "pushgateway.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            # Memory only: Debian's default --persistence.file is shared by every Pushgateway on the machine.
            ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{port}/-/ready", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _pushed(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample the Pushgateway holds for this test's job: (name, labels without job/instance) → value."""
    body = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return {
        (s.name, frozenset((k, v) for k, v in s.labels.items() if k not in {"job", "instance"})): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.labels.get("job") == JOB_ID
    }


def _scrape(port: int) -> str | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None


def test_a_submitted_job_exports_to_the_pushgateway(cluster: Cluster, pushgateway: str, tmp_path: Path) -> None:  # noqa: F811
    """A real job with the embedded model, submitted with the token and monitoring in its spec: it succeeds and
    writes its results, `cluster status|logs|list` show it, it serves /metrics while it runs, scores drift against
    the uploaded baseline (printed, and in summary.json) and leaves its figures, drift gauges included, in the
    Pushgateway group of its job id and task. (One job for both: each job starts an engine on the cluster.)"""
    baselines = tmp_path / "baselines"
    reference = [
        DocumentProfile(id=f"b{i}", task="qa", version="1.0.0", document_tokens=4000, map_prompt_tokens=[900] * 4)
        for i in range(5)
    ]
    BaselineStore(baselines).save(build_baseline("meeting-notes", reference, "test"))
    src = tmp_path / "questions.jsonl"
    text = "The meeting notes. The access code for the archive room is 4721. The room is on the third floor."
    src.write_text(json.dumps({"id": "n", "text": text, "question": "What is the access code for the archive room?"}))
    out = tmp_path / "out"
    (metrics_port,) = free_ports(28200, 1)
    spec = tmp_path / "job.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "input": "questions.jsonl",  # relative: sent along with the job
                "output": str(out),  # a path on the cluster (here the same machine)
                "job_id": JOB_ID,
                "prompt": "qa@1.0.0",
                "prompts_dir": str(PROMPTS),
                "engine": {"max_model_len": 1024, "kv_cache_space_gib": 1, "engine_kwargs": {"enforce_eager": True}},
                "sampling": {"reserved_output_tokens": 32},
                "monitoring": {
                    "metrics_port": metrics_port,
                    "pushgateway": pushgateway,
                    "embed": False,
                    "baseline": "meeting-notes",
                    "baselines_dir": str(baselines),
                    "drift_min_documents": 1,  # one document against five: scored, not withheld as insufficient
                    "drift_min_chunks": 1,
                },
            }
        )
    )
    submitted = _cli(cluster.env, "cluster", "submit", str(spec), "--address", cluster.address)
    assert submitted.returncode == 0, submitted.stderr
    submission = submitted.stdout.strip().splitlines()[-1]

    served: str | None = None
    deadline = time.monotonic() + JOB_S
    state = ""
    while time.monotonic() < deadline:
        status = _cli(cluster.env, "cluster", "status", submission, "--address", cluster.address)
        assert status.returncode == 0, status.stderr
        state = status.stdout.split(":", 1)[1].split()[0]
        if state in {"SUCCEEDED", "FAILED", "STOPPED"}:
            break
        if served is None and state == "RUNNING":
            served = _scrape(metrics_port)
        time.sleep(2)
    logs = _cli(cluster.env, "cluster", "logs", submission, "--address", cluster.address).stdout
    assert state == "SUCCEEDED", f"{status.stdout}\n{logs[-3000:]}"
    assert "task: qa" in status.stdout and "prompt_versions: 1.0.0" in status.stdout
    assert "1 ok, 0 errors of 1 documents" in logs
    (result,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert result["status"] == "ok" and result["output"].strip() and result["prompt"]["version"] == "1.0.0"
    listed = _cli(cluster.env, "cluster", "list", "--address", cluster.address)
    assert submission in listed.stdout and "SUCCEEDED" in listed.stdout
    assert served is not None and "mapreduce_llm_job_running 1.0" in served, "no /metrics while the job ran"
    assert _scrape(metrics_port) is None  # served for the job's duration only

    summary = json.loads((out / "summary.json").read_text())
    assert summary["job_id"] == JOB_ID
    judged = summary["drift"]["qa@1.0.0"]
    drift = judged["scores"]
    assert judged["status"] == "scored" and set(drift) == {"document_length", "prompt_class"}  # no embeddings
    assert judged["mmd_p_value"] is None
    assert "drift qa@1.0.0" in logs and "document_length" in logs

    pushed = _pushed(pushgateway)
    task = {("task", "qa")}
    assert pushed[("mapreduce_llm_job_documents", frozenset({*task, ("status", "ok")}))] == 1
    assert pushed[("mapreduce_llm_job_last_success_timestamp_seconds", frozenset(task))] == summary["finished_at"]
    assert pushed[("mapreduce_llm_job_running", frozenset(task))] == 0
    for signal, score in drift.items():
        labels = frozenset({*task, ("version", "1.0.0"), ("signal", signal)})
        assert pushed[("mapreduce_llm_drift_score", labels)] == pytest.approx(score)
    assert pushed[("mapreduce_llm_drift_insufficient", frozenset({*task, ("version", "1.0.0")}))] == 0
    requests = [v for (name, _), v in pushed.items() if name == "mapreduce_llm_engine_requests_total"]
    assert sum(requests) == sum(summary["requests"].values())
