"""The batch service for real: `mapreduce-llm serve` on loopback with its own token-auth Ray head, driven by the
official `openai` client, each batch a real Ray job on the embedded model.

One service for the module (started as a subprocess with a token file and a job spec for a quick CPU engine:
eager, 1024-token context, one document at a time so that counts move visibly), with its /metrics on a free port
and completion webhooks to a receiver on loopback that verifies every signature. Every wait is bounded. The
service is stopped with SIGTERM, which also stops its Ray head.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from mapreduce_llm.service.ray_head import free_ports
from mapreduce_llm.service.webhooks import new_secret
from tests.conftest import PROMPTS, ROOT
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
STARTUP_S = 240
BATCH_S = 600
TERMINAL = {"completed", "failed", "cancelled", "expired"}
SENTENCES = [
    "Ray schedules tasks and actors across the nodes of a cluster.",
    "vLLM keeps the key-value cache in pages, which lets it batch many requests.",
    "A map step summarizes every chunk; a reduce step merges the partial summaries.",
    "Prometheus scrapes metrics over HTTP and stores them as time series.",
]


@dataclass
class Service:
    url: str
    token: str
    metrics_url: str
    webhooks: Receiver
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self, token: str | None = None) -> OpenAI:
        return OpenAI(base_url=f"{self.url}/v1", api_key=token or self.token, max_retries=0, timeout=60)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"{self.url}/v1/batches", headers={"Authorization": f"Bearer {self.token}"})
                if answer.status_code == 200:
                    return
            time.sleep(1)
        pytest.fail(f"serve did not answer within {STARTUP_S} s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM: the service stops its Ray head (and the job on it) and exits."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"serve did not stop within 120 s of SIGTERM:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    token = secrets.token_urlsafe(32)
    (root / "token").write_text(token + "\n")
    spec = {
        "prompts_dir": str(PROMPTS),
        "engine": {"max_model_len": 1024, "kv_cache_space_gib": 1, "engine_kwargs": {"enforce_eager": True}},
        "sampling": {"reserved_output_tokens": 24},
        "limits": {"max_documents_in_flight": 1},
        "cache": {"enabled": False},
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    secret = new_secret()
    (root / "webhook-secret").write_text(secret + "\n")
    receiver = Receiver(secret)
    port, metrics_port = free_ports(28500, 2)
    command = [
        str(BIN / "mapreduce-llm"), "serve", "--port", str(port), "--state", str(root / "state"),
        "--token-file", str(root / "token"), "--spec", str(root / "spec.yaml"), "--poll-interval", "1",
        "--num-cpus", "2", "--max-upload-bytes", "200000", "--max-lines", "100", "--metrics-port", str(metrics_port),
        "--webhook-url", receiver.url, "--webhook-secret-file", str(root / "webhook-secret"),
    ]  # fmt: skip
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(key, None)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    running = Service(f"http://127.0.0.1:{port}", token, metrics_url, receiver, command, env, root / "serve.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()
        receiver.close()


def _line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/mapreduce",
        "body": {"prompt": "summarize@1.0.0", "text": text, **body},
    }


def _documents(count: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` short documents (a few hundred tokens each: a second or two of engine time)."""
    return [_line(f"{prefix}-{i}", " ".join(SENTENCES[(i + k) % 4] for k in range(12))) for i in range(count)]


def _upload(client: OpenAI, tmp_path: Path, lines: list[dict[str, Any] | str]) -> str:
    path = tmp_path / "batch.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    with path.open("rb") as fh:
        return client.files.create(file=fh, purpose="batch").id


def _wait(service: Service, batch_id: str, until: Any, seconds: float = BATCH_S) -> Any:
    """Poll the batch (with a fresh client: the service may be restarting) until ``until(batch)`` or fail."""
    deadline = time.monotonic() + seconds
    batch = None
    while time.monotonic() < deadline:
        with contextlib.suppress(openai.APIConnectionError):
            batch = service.client().batches.retrieve(batch_id)
            if until(batch):
                return batch
            if batch.status in TERMINAL:
                pytest.fail(f"batch ended {batch.status} ({batch.errors}):\n{service.tail()}")
        time.sleep(0.5)
    pytest.fail(f"batch not there within {seconds} s (last: {batch}):\n{service.tail()}")


def _lines(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_without_the_token_every_call_is_refused(service: Service) -> None:
    """A wrong key: the client raises AuthenticationError (401)."""
    stranger = service.client("not-the-token-0123456789")
    with pytest.raises(openai.AuthenticationError):
        stranger.batches.list()
    with pytest.raises(openai.AuthenticationError):
        stranger.files.retrieve("file-000000000000000000000000")


def test_over_limit_and_malformed_uploads(service: Service, tmp_path: Path) -> None:
    """An upload over the size limit is refused (413); a file with more lines than allowed too (400)."""
    client = service.client()
    with pytest.raises(openai.APIStatusError) as big:
        _upload(client, tmp_path, ["x" * 1000] * 300)
    assert big.value.status_code == 413 and "200,000" in str(big.value)
    with pytest.raises(openai.BadRequestError, match="limit of 100"):
        _upload(client, tmp_path, ["{}"] * 101)


def test_a_batch_end_to_end_across_a_restart(service: Service, tmp_path: Path) -> None:
    """upload → create → counts move → restart mid-batch → completed → every line back once; one webhook event."""
    client = service.client()
    lines: list[dict[str, Any] | str] = [*_documents(10, "doc"), "{not json", _line("other", "t") | {"url": "/v1/x"}]
    file_id = _upload(client, tmp_path, lines)
    started = time.monotonic()
    # the client types `endpoint` as OpenAI's own endpoints; any string goes over the wire unchanged
    batch = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/mapreduce",  # type: ignore[arg-type]
        completion_window="24h",
    )
    assert batch.status == "validating"
    batch = _wait(service, batch.id, lambda b: b.request_counts.completed >= 1)
    first_counts = batch.request_counts
    assert batch.status == "in_progress" and first_counts.total == 12 and first_counts.failed == 2
    assert first_counts.completed < 10, "the job finished before the restart: give it more documents"
    first_done = time.monotonic() - started

    service.stop()
    service.start()
    batch = _wait(service, batch.id, lambda b: b.status == "completed")
    elapsed = time.monotonic() - started
    print(f"\nbatch of 10 documents: first result after {first_done:.0f} s, completed after {elapsed:.0f} s "
          f"(restart included)")  # fmt: skip

    assert batch.request_counts.model_dump() == {"total": 12, "completed": 10, "failed": 2}
    assert batch.errors is not None and batch.errors.data is not None
    assert {e.code for e in batch.errors.data} == {"malformed_json", "invalid_url"}
    client = service.client()
    outputs, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    assert sorted(o["custom_id"] for o in outputs) == sorted(f"doc-{i}" for i in range(10))
    assert all(o["response"]["status_code"] == 200 and o["response"]["body"]["output"].strip() for o in outputs)
    assert sorted(str(e["custom_id"]) for e in errors) == ["None", "other"]
    assert len(outputs) + len(errors) == len(lines)
    # one signed batch.completed event reached the receiver, although the service restarted mid-batch
    service.webhooks.wait(lambda: any(d.event["data"]["id"] == batch.id for d in service.webhooks.deliveries), 60)
    events = [d.event for d in service.webhooks.deliveries if d.event["data"]["id"] == batch.id]
    assert [e["type"] for e in events] == ["batch.completed"] and not service.webhooks.rejected
    # the service's own metrics count the batch (a restarted service reads the figures from its state folder)
    samples = {
        (s.name, s.labels.get("status"), s.labels.get("route")): s.value
        for family in text_string_to_metric_families(httpx.get(service.metrics_url, timeout=10).text)
        for s in family.samples
    }
    assert samples[("mapreduce_llm_service_batches", "completed", None)] >= 1
    latency = "mapreduce_llm_service_http_request_duration_seconds_count"
    assert samples[(latency, "200", "/v1/batches/{batch_id}")] >= 1


def test_cancel_mid_batch_keeps_finished_documents(service: Service, tmp_path: Path) -> None:
    """Idempotent create; cancel after the first results: they are in the output file, the rest batch_cancelled;
    one batch.cancelled event."""
    client = service.client()
    lines: list[dict[str, Any] | str] = list(_documents(30, "c"))
    file_id = _upload(client, tmp_path, lines)
    create: dict[str, Any] = {"input_file_id": file_id, "endpoint": "/v1/mapreduce", "completion_window": "24h"}
    batch = client.batches.create(**create, extra_headers={"Idempotency-Key": "cancel-test"})
    again = client.batches.create(**create, extra_headers={"Idempotency-Key": "cancel-test"})
    assert again.id == batch.id
    _wait(service, batch.id, lambda b: b.request_counts.completed >= 1)
    assert client.batches.cancel(batch.id).status == "cancelling"
    batch = _wait(service, batch.id, lambda b: b.status == "cancelled", seconds=180)
    outputs, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    assert 1 <= len(outputs) < 30 and batch.request_counts.completed == len(outputs)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    ids = sorted([o["custom_id"] for o in outputs] + [e["custom_id"] for e in errors])
    assert ids == sorted(f"c-{i}" for i in range(30))
    service.webhooks.wait(lambda: any(d.event["data"]["id"] == batch.id for d in service.webhooks.deliveries), 60)
    events = [d.event for d in service.webhooks.deliveries if d.event["data"]["id"] == batch.id]
    assert [e["type"] for e in events] == ["batch.cancelled"]


def test_the_readme_session_runs_a_batch_end_to_end(
    service: Service, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """README's Python session, as printed there (this service's URL and token file swapped in), completes a batch."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The batch service") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    assert code.count("\n") <= 16, "README's session should stay short"
    token_file = tmp_path / "token"
    token_file.write_text(service.token + "\n")
    code = code.replace("http://127.0.0.1:8090/v1", f"{service.url}/v1").replace("out/service/token", str(token_file))
    exec(compile(code.replace("time.sleep(5)", "time.sleep(1)"), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    statuses = [line for line in printed if not line.startswith("doc-")]
    outputs = sorted(line.split(maxsplit=1) for line in printed if line.startswith("doc-"))
    assert statuses[-1].startswith("completed") and "completed=2" in statuses[-1], statuses
    assert [o[0] for o in outputs] == ["doc-0", "doc-1"] and all(len(o) == 2 for o in outputs), outputs
