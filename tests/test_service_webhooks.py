"""Completion webhooks (mapreduce_llm.service.webhooks): a real receiver on 127.0.0.1 checks every delivery with
``standardwebhooks``; batches are driven with the fake job runner and clock. Every wait is bounded."""

from __future__ import annotations

import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from openai import OpenAI
from structlog.testing import capture_logs

from mapreduce_llm.cli import cli
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.service.app import create_app
from mapreduce_llm.service.formats import Batch
from mapreduce_llm.service.webhooks import (
    SECRET_ENV,
    WebhookPolicy,
    WebhookSender,
    load_secret,
    new_secret,
    open_webhooks,
)
from tests.service_helpers import Service, line, make_service
from tests.webhook_receiver import WAIT_S, Receiver

TOKEN = "test-token-0123456789abcdef"
FAST = WebhookPolicy(max_attempts=50, first_delay_s=0.05, max_delay_s=0.2, timeout_s=2.0)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return make_service(tmp_path)


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def started(service: Service, secret: str) -> Iterator[Callable[..., tuple[Receiver, WebhookSender]]]:
    """Starts a receiver and a sender over the service's state folder; both are stopped afterwards."""
    made: list[tuple[Receiver, WebhookSender]] = []

    def start(fail_first: int = 0, policy: WebhookPolicy = FAST) -> tuple[Receiver, WebhookSender]:
        receiver = Receiver(secret, fail_first)
        sender = WebhookSender(service.store.root, receiver.url, secret, policy)
        service.batches.on_finished = sender.enqueue
        sender.start()
        made.append((receiver, sender))
        return receiver, sender

    yield start
    for receiver, sender in made:
        sender.stop(timeout=WAIT_S)
        receiver.close()


def complete(service: Service) -> str:
    batch_id = service.create([line("a")])
    service.batches.tick()
    service.runner.succeed()
    service.batches.tick()
    return batch_id


def fail(service: Service) -> str:
    batch_id = service.create([line("a")])
    service.batches.tick()
    service.runner.fail()
    service.batches.tick()
    return batch_id


def cancel(service: Service) -> str:
    batch_id = service.create([line("a"), line("b")])
    service.batches.tick()
    service.runner.finish(1)
    service.batches.cancel(batch_id)
    service.batches.tick()
    return batch_id


def expire(service: Service) -> str:
    batch_id = service.create([line("a")], completion_window="1h")
    service.batches.tick()
    service.clock.advance(3601)
    service.batches.tick()
    return batch_id


@pytest.mark.parametrize(
    ("drive", "status"), [(complete, "completed"), (fail, "failed"), (cancel, "cancelled"), (expire, "expired")]
)
def test_each_ending_sends_one_signed_event_of_its_type(
    service: Service,
    started: Callable[..., tuple[Receiver, WebhookSender]],
    drive: Callable[[Service], str],
    status: str,
) -> None:
    """A batch that ends completed/failed/cancelled/expired is announced once, signed, in OpenAI's event shape."""
    receiver, sender = started()
    batch_id = drive(service)
    batch = service.batches.get(batch_id)
    assert batch.status == status
    receiver.wait(lambda: len(receiver.deliveries) == 1)
    wait_until(lambda: sender.pending() == [])
    (delivery,) = receiver.deliveries
    event = delivery.event
    assert event == {
        "id": delivery.headers["webhook-id"],
        "object": "event",
        "type": f"batch.{status}",
        "created_at": getattr(batch, f"{status}_at"),
        "data": {"id": batch_id},
    }
    assert event["id"].startswith("evt_") and delivery.headers["content-type"] == "application/json"
    assert receiver.attempt_ids == [event["id"]] and receiver.rejected == []


def test_the_openai_client_reads_the_events(
    service: Service, secret: str, started: Callable[..., tuple[Receiver, WebhookSender]]
) -> None:
    """OpenAI's own client verifies the signature and parses the event into its BatchCompletedWebhookEvent."""
    receiver, _ = started()
    batch_id = complete(service)
    receiver.wait(lambda: len(receiver.deliveries) == 1)
    (delivery,) = receiver.deliveries
    event = OpenAI(api_key="unused", webhook_secret=secret).webhooks.unwrap(delivery.body, delivery.headers)
    assert type(event).__name__ == "BatchCompletedWebhookEvent"
    assert event.type == "batch.completed" and event.data.id == batch_id


def test_a_failing_receiver_gets_the_event_after_retries_with_the_same_id(
    service: Service, started: Callable[..., tuple[Receiver, WebhookSender]]
) -> None:
    """500 twice, then 200: three attempts, all with one webhook-id (receivers de-duplicate), delivered once."""
    receiver, sender = started(fail_first=2)
    complete(service)
    receiver.wait(lambda: len(receiver.deliveries) == 1)
    wait_until(lambda: sender.pending() == [])
    assert len(receiver.attempt_ids) == 3 and len(set(receiver.attempt_ids)) == 1
    assert receiver.deliveries[0].event["id"] == receiver.attempt_ids[0]


@pytest.mark.parametrize(
    ("policy", "attempts"),
    [
        (WebhookPolicy(max_attempts=3, first_delay_s=0.01, max_delay_s=0.05, timeout_s=2.0), 3),
        (WebhookPolicy(max_attempts=50, max_age_s=0.0, first_delay_s=0.01, timeout_s=2.0), 1),
    ],
    ids=["max_attempts", "max_age"],
)
def test_an_event_is_given_up_after_its_attempts_or_its_age(
    service: Service,
    secret: str,
    started: Callable[..., tuple[Receiver, WebhookSender]],
    policy: WebhookPolicy,
    attempts: int,
) -> None:
    """A receiver that always fails: after max_attempts, or once the event is max_age_s old, it is dropped from the
    outbox and logged as webhook.gave_up (and the secret is never logged)."""
    with capture_logs() as logs:
        receiver, sender = started(fail_first=1000, policy=policy)
        complete(service)
        wait_until(lambda: any(entry["event"] == "webhook.gave_up" for entry in logs))
    assert sender.pending() == [] and len(receiver.attempt_ids) == attempts
    (gave_up,) = [entry for entry in logs if entry["event"] == "webhook.gave_up"]
    assert gave_up["attempts"] == attempts and gave_up["error"] == "HTTP 500"
    assert gave_up["event_id"] == receiver.attempt_ids[0] and "team=docs" not in gave_up["url"]
    assert secret not in repr(logs) and secret.removeprefix("whsec_") not in repr(logs)


def test_an_unreachable_receiver_blocks_nothing_and_the_events_wait_for_a_restart(
    service: Service, secret: str, tmp_path: Path
) -> None:
    """A receiver that accepts connections but never answers: tick() and the HTTP API stay quick while the sender
    waits; the events stay in the outbox through a stop and a new sender over the same state delivers them."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    hole.settimeout(WAIT_S)
    slow = WebhookPolicy(max_attempts=50, first_delay_s=0.05, timeout_s=3.0)
    sender = WebhookSender(service.store.root, f"http://127.0.0.1:{hole.getsockname()[1]}/", secret, slow)
    service.batches.on_finished = sender.enqueue
    sender.start()
    receiver = held = None
    try:
        first = complete(service)
        held, _ = hole.accept()  # the sender's POST of the first event: never answered, it waits for its timeout
        with TestClient(create_app(service.batches, [TOKEN])) as client:
            started_at = time.monotonic()
            second = complete(service)  # the sender is waiting on the first event meanwhile
            answer = client.get(f"/v1/batches/{second}", headers={"Authorization": f"Bearer {TOKEN}"})
            assert time.monotonic() - started_at < slow.timeout_s / 2
        assert answer.status_code == 200 and answer.json()["status"] == "completed"
        sender.stop(timeout=WAIT_S)
        waiting = sender.pending()
        assert sorted(event.batch_id for event in waiting) == sorted([first, second])

        receiver = Receiver(secret)
        restarted = WebhookSender(service.store.root, receiver.url, secret, FAST)
        restarted.start()
        try:
            receiver.wait(lambda: len(receiver.deliveries) == 2)
            wait_until(lambda: restarted.pending() == [])
        finally:
            restarted.stop(timeout=WAIT_S)
        assert sorted(d.event["id"] for d in receiver.deliveries) == sorted(event.id for event in waiting)
    finally:
        sender.stop(timeout=WAIT_S)
        if held is not None:
            held.close()
        hole.close()
        if receiver is not None:
            receiver.close()


def test_a_finish_repeated_after_a_crash_queues_one_event(service: Service, secret: str) -> None:
    """The hook runs before the terminal record is saved: a crash there finishes the batch again on the next tick,
    and the event (its id derived from batch and status) is queued once."""
    sender = WebhookSender(service.store.root, "http://127.0.0.1:9/", secret, FAST)  # not started
    calls: list[Batch] = []

    def crash_once(batch: Batch) -> None:
        sender.enqueue(batch)
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("the process died here")

    service.batches.on_finished = crash_once
    batch_id = complete(service)
    assert service.batches.get(batch_id).status != "completed"  # not saved: the crash came first
    service.batches.tick()
    assert service.batches.get(batch_id).status == "completed" and len(calls) == 2
    (event,) = sender.pending()
    assert event.batch_id == batch_id and event.type == "batch.completed" and event.attempts == 0


def test_the_secret_comes_from_the_file_the_environment_or_is_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file wins over $MAPREDUCE_LLM_WEBHOOK_SECRET, which wins over STATE/webhook-secret, made once (0600)."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    state = tmp_path / "state"
    made, source = load_secret(None, state)
    path = state / "webhook-secret"
    assert made.startswith("whsec_") and source == f"{path} (generated)"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(None, state) == (made, str(path))
    other = new_secret()
    monkeypatch.setenv(SECRET_ENV, other)
    assert load_secret(None, state) == (other, f"${SECRET_ENV}")
    given = tmp_path / "secret"
    third = new_secret()
    given.write_text(third + "\n", encoding="utf-8")
    assert load_secret(given, state) == (third, str(given))


def test_bad_configuration_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """A secret that is not whsec_ + base64 of 16+ bytes (not echoed), a non-http URL, a secret file without a
    URL: ConfigError; no URL: no sender. The CLI refuses a bad --webhook-url as a bad parameter."""
    short = tmp_path / "short"
    short.write_text("whsec_c2hvcnQ=", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        open_webhooks(tmp_path, "http://127.0.0.1:9/", short)
    assert "c2hvcnQ" not in str(refused.value)
    with pytest.raises(ConfigError):
        open_webhooks(tmp_path, "ftp://example.com/", None)
    with pytest.raises(ConfigError):
        open_webhooks(tmp_path, None, short)
    assert open_webhooks(tmp_path, None, None) is None
    result = CliRunner().invoke(cli, ["serve", "--state", str(tmp_path), "--webhook-url", "not a url"])
    assert result.exit_code == 2 and "--webhook-url" in result.output
