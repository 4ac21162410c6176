"""The HTTP API (mapreduce_llm.service.app) with FastAPI's TestClient, over a fake job runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mapreduce_llm.service.app import create_app
from mapreduce_llm.service.limits import ServiceLimits
from tests.service_helpers import Service, line, make_service

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return make_service(tmp_path, ServiceLimits(max_upload_bytes=100_000, max_lines=10))


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    with TestClient(create_app(service.batches, [TOKEN, "second-token-0123456789"])) as test_client:
        yield test_client


def upload(client: TestClient, lines: list[dict[str, object]], **headers: str) -> dict[str, object]:
    content = "".join(json.dumps(item) + "\n" for item in lines).encode()
    answer = client.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers={**AUTH, **headers}
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/files"),
        ("get", "/v1/files/file-000000000000000000000000"),
        ("get", "/v1/files/file-000000000000000000000000/content"),
        ("delete", "/v1/files/file-000000000000000000000000"),
        ("post", "/v1/batches"),
        ("get", "/v1/batches"),
        ("get", "/v1/batches/batch_000000000000000000000000"),
        ("post", "/v1/batches/batch_000000000000000000000000/cancel"),
        ("get", "/no/such/route"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", "Basic " + TOKEN, TOKEN])
def test_every_route_needs_the_token(client: TestClient, method: str, path: str, header: str | None) -> None:
    """No token, a wrong one, another scheme: 401 in OpenAI's error shape, before anything else happens."""
    headers = {"Authorization": header} if header else {}
    answer = client.request(method, path, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["error"]["code"] == "invalid_api_key"


def test_a_second_token_works_too(client: TestClient) -> None:
    """Several tokens (rotation): each is accepted."""
    answer = client.get("/v1/batches", headers={"Authorization": "Bearer second-token-0123456789"})
    assert answer.status_code == 200 and answer.json()["data"] == []


def test_upload_create_poll_download(client: TestClient, service: Service) -> None:
    """The whole flow over HTTP: file object, batch object, counts, output file content, list, delete."""
    file = upload(client, [line("a"), line("b")])
    assert file["object"] == "file" and file["purpose"] == "batch" and file["bytes"] > 0
    assert file["expires_at"] is not None
    assert client.get(f"/v1/files/{file['id']}", headers=AUTH).json() == file
    request = {"input_file_id": file["id"], "endpoint": "/v1/mapreduce", "completion_window": "24h"}
    batch = client.post("/v1/batches", json=request, headers=AUTH).json()
    assert batch["object"] == "batch" and batch["status"] == "validating"
    service.batches.tick()
    service.runner.finish(1)
    service.batches.tick()
    batch = client.get(f"/v1/batches/{batch['id']}", headers=AUTH).json()
    assert batch["status"] == "in_progress" and batch["request_counts"] == {"total": 2, "completed": 1, "failed": 0}
    service.runner.succeed()
    service.batches.tick()
    batch = client.get(f"/v1/batches/{batch['id']}", headers=AUTH).json()
    assert batch["status"] == "completed"
    output = client.get(f"/v1/files/{batch['output_file_id']}", headers=AUTH).json()
    assert output["purpose"] == "batch_output"
    content = client.get(f"/v1/files/{batch['output_file_id']}/content", headers=AUTH).text
    assert sorted(json.loads(x)["custom_id"] for x in content.splitlines()) == ["a", "b"]
    listed = client.get("/v1/batches", params={"limit": 1}, headers=AUTH).json()
    assert listed["object"] == "list" and listed["first_id"] == batch["id"] and listed["has_more"] is False
    deleted = client.delete(f"/v1/files/{file['id']}", headers=AUTH).json()
    assert deleted == {"id": file["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{file['id']}", headers=AUTH).status_code == 404


def test_idempotency_key_header_returns_the_same_batch(client: TestClient) -> None:
    """Create twice with one Idempotency-Key: one batch."""
    file = upload(client, [line("a")])
    request = {"input_file_id": file["id"], "endpoint": "/v1/mapreduce", "completion_window": "24h"}
    first = client.post("/v1/batches", json=request, headers={**AUTH, "Idempotency-Key": "k1"}).json()
    second = client.post("/v1/batches", json=request, headers={**AUTH, "Idempotency-Key": "k1"}).json()
    assert first["id"] == second["id"]
    assert len(client.get("/v1/batches", headers=AUTH).json()["data"]) == 1


def test_cancel_over_http(client: TestClient, service: Service) -> None:
    """POST /cancel answers cancelling; the batch ends cancelled with what finished."""
    file = upload(client, [line("a"), line("b")])
    request = {"input_file_id": file["id"], "endpoint": "/v1/mapreduce"}
    batch = client.post("/v1/batches", json=request, headers=AUTH).json()
    service.batches.tick()
    service.runner.finish(1)
    assert client.post(f"/v1/batches/{batch['id']}/cancel", headers=AUTH).json()["status"] == "cancelling"
    service.batches.tick()
    batch = client.get(f"/v1/batches/{batch['id']}", headers=AUTH).json()
    assert batch["status"] == "cancelled" and batch["request_counts"]["completed"] == 1


def test_an_upload_over_the_size_limit_is_refused(client: TestClient) -> None:
    """413 with a message saying the limit and what to do; nothing is kept."""
    content = b'{"custom_id": "a"}\n' * 6000
    answer = client.post("/v1/files", files={"file": ("big.jsonl", content)}, data={"purpose": "batch"}, headers=AUTH)
    assert answer.status_code == 413
    error = answer.json()["error"]
    assert error["code"] == "file_too_large" and "100,000" in error["message"] and "split" in error["message"]
    assert client.get("/v1/files", headers=AUTH).json()["data"] == []


def test_an_upload_with_too_many_lines_is_refused(client: TestClient) -> None:
    """400 too_many_requests past max_lines."""
    content = "".join(json.dumps(line(str(i))) + "\n" for i in range(11)).encode()
    answer = client.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=AUTH)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "too_many_requests"


def test_only_purpose_batch_is_accepted(client: TestClient) -> None:
    """Another purpose: 400 naming the parameter."""
    answer = client.post("/v1/files", files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "fine-tune"}, headers=AUTH)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "purpose"


def test_errors_have_openais_shape(client: TestClient) -> None:
    """Unknown ids: 404; a body missing a field: 400 naming it."""
    missing = client.get("/v1/batches/batch_000000000000000000000000", headers=AUTH)
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    assert client.get("/v1/files/../../etc/passwd", headers=AUTH).status_code == 404
    invalid = client.post("/v1/batches", json={"endpoint": "/v1/mapreduce"}, headers=AUTH)
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "input_file_id"
