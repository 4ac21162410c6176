"""Completion webhooks: ``batch.completed|failed|cancelled|expired`` events, signed, delivered at least once.

Opt-in, for the whole service: ``mapreduce-llm serve --webhook-url URL [--webhook-secret-file FILE]``. Every batch
that ends is announced with one HTTP POST to URL of OpenAI's event shape::

    {"id": "evt_…", "object": "event", "type": "batch.completed", "created_at": 1719168000,
     "data": {"id": "batch_…"}}

``created_at`` is when the batch ended (its ``completed_at``, ``failed_at``, ``cancelled_at`` or ``expired_at``);
the receiver reads the batch itself with ``GET /v1/batches/{id}``.

**Signing** follows the Standard Webhooks spec, the scheme OpenAI's webhooks use: headers ``webhook-id`` (the
event id), ``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature`` =
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` with the secret's key. The secret has the form
``whsec_<base64 of the key>``: ``--webhook-secret-file``, else ``$MAPREDUCE_LLM_WEBHOOK_SECRET``, else one made
once into ``STATE/webhook-secret`` (mode 0600; its path is logged, never its value). Signatures are made with
the ``standardwebhooks`` package's ``Webhook.sign`` (the spec's reference implementation: no dependencies of
its own, typed), a runtime dependency. Receivers check with ``standardwebhooks.Webhook(secret).verify(body,
headers)`` or the OpenAI client's ``client.webhooks.unwrap(body, headers, secret=secret)``; both refuse a
timestamp more than 5 minutes off, so each attempt is signed anew with its own timestamp.

**Delivery** is at least once. When a batch ends, :meth:`WebhookSender.enqueue` (the ``Batches.on_finished``
hook, called before the batch's terminal record is saved) writes the event atomically into
``STATE/webhooks/outbox/evt_….json`` — a small file, no network. The event id is derived from the batch id and
its status, so a finish repeated after a crash leaves one event with the same id. A daemon thread, started and
stopped with ``serve``, posts each event; a 2xx answer is delivery (the file is deleted), anything else (another
status, a refused connection, ``timeout_s`` without an answer) is retried after an exponential backoff with
jitter, with the same ``webhook-id`` and the same body, so receivers de-duplicate by ``webhook-id``. After
``max_attempts`` attempts, or once an event is ``max_age_s`` old, it is given up and logged as
``webhook.gave_up``. Events still in the outbox when the service stops are sent after the next start. Nothing
here runs on the HTTP handlers' or the batch ticker's threads except the file write.

Why not tenacity (used by the OpenAI engine's client): its retry loop sleeps in the calling thread and keeps its
attempt count in memory. Here the attempt count and the next attempt's time are kept in the event's outbox file,
so a restart neither forgets nor restarts the schedule, one event waiting for its retry never holds up another,
and ``stop()`` is not stuck behind a backoff sleep; what is left of tenacity is one line of arithmetic
(:meth:`WebhookPolicy.delay`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from standardwebhooks import Webhook

from mapreduce_llm.atomic import write_atomic
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.service.formats import Batch

log = structlog.get_logger("mapreduce_llm.service")

EVENT_TYPES = {status: f"batch.{status}" for status in ("completed", "failed", "cancelled", "expired")}
"""The event of each terminal batch status."""
SECRET_ENV = "MAPREDUCE_LLM_WEBHOOK_SECRET"  # noqa: S105 - a variable name, not a secret
SECRET_FILE = "webhook-secret"  # noqa: S105 - a file name
"""The generated secret, in the state folder."""
OUTBOX = Path("webhooks") / "outbox"
"""Events not delivered yet, in the state folder."""
MIN_KEY_BYTES = 16
IDLE_WAIT_S = 60.0
"""Longest sleep of the sender thread (it is woken at once by a new event; this picks up files put back by hand)."""


@dataclass(frozen=True)
class WebhookPolicy:
    """How an event is retried."""

    max_attempts: int = 16
    """Attempts at most; then the event is given up (``webhook.gave_up``)."""
    max_age_s: float = 86400.0
    """An event that has failed and is older than this (since it was queued) is given up."""
    first_delay_s: float = 5.0
    """Wait after the first failed attempt; doubled after each further one, up to ``max_delay_s``."""
    max_delay_s: float = 3600.0
    timeout_s: float = 10.0
    """One attempt without an answer for this long failed."""

    def delay(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones (jittered: 80-100 % of the step)."""
        step = min(self.first_delay_s * 2.0 ** min(attempts - 1, 40), self.max_delay_s)
        return step * random.uniform(0.8, 1.0)


class PendingEvent(BaseModel):
    """An event in the outbox: what is sent, and where its retries stand."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: str
    batch_id: str
    body: str
    """The JSON body, fixed when the event is made: every attempt sends the same bytes."""
    queued_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None


def make_event(batch: Batch, now: float) -> PendingEvent:
    """The event announcing that ``batch`` ended (ValueError for a batch that has not)."""
    kind = EVENT_TYPES.get(batch.status)
    if kind is None:
        raise ValueError(f"batch {batch.id} is {batch.status}, not finished")
    event_id = "evt_" + hashlib.sha256(f"{batch.id}/{kind}".encode()).hexdigest()[:32]
    ended = getattr(batch, f"{batch.status}_at", None)
    event = {"id": event_id, "object": "event", "type": kind, "created_at": ended or int(now), "data": {"id": batch.id}}
    body = json.dumps(event, separators=(",", ":"))
    return PendingEvent(id=event_id, type=kind, batch_id=batch.id, body=body, queued_at=now)


# --- configuration ---------------------------------------------------------------------------------------


def new_secret() -> str:
    """A random secret in the ``whsec_`` form (32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str, source: str) -> str:
    """``secret`` when it is ``whsec_`` (optional) and the base64 of at least 16 bytes; ConfigError otherwise."""
    raw = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"the webhook secret ({source}) must be whsec_ followed by the base64 of at least {MIN_KEY_BYTES} random "
            "bytes; make one with `python -c 'import base64, secrets; "
            'print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\'`',
            parameter="webhook_secret_file",
        )
    return secret.strip()


def load_secret(secret_file: Path | None, state: Path) -> tuple[str, str]:
    """The signing secret and where it came from (a path or the variable's name, for the log; never the value)."""
    if secret_file is not None:
        try:
            secret, source = secret_file.read_text(encoding="utf-8").strip(), str(secret_file)
        except OSError as exc:
            raise ConfigError(
                f"cannot read the webhook secret file {secret_file}: {exc.strerror or exc}",
                parameter="webhook_secret_file",
            ) from None
    elif os.environ.get(SECRET_ENV, "").strip():
        secret, source = os.environ[SECRET_ENV], f"${SECRET_ENV}"
    else:
        path = state / SECRET_FILE
        source = str(path)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(new_secret() + "\n")
            source = f"{path} (generated)"
        secret = path.read_text(encoding="utf-8")
    return check_secret(secret, source), source


def check_url(url: str) -> str:
    """``url`` when it is an http(s) URL with a host; ConfigError otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"the webhook URL must be an http(s) URL, got {url!r}", parameter="webhook_url", value=url)
    return url


def display_url(url: str) -> str:
    """``url`` without credentials or query, for logs (either may hold a token of the receiver)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, fragment=None, username=None, password=None))


# --- delivery --------------------------------------------------------------------------------------------


class WebhookSender:
    """The outbox of one state folder and the thread that empties it (see the module docs).

    ``client`` and ``clock`` are for tests (the clock must be the real time for receivers that check the
    timestamp); a client given here is not closed by :meth:`stop`.
    """

    def __init__(
        self,
        state: Path,
        url: str,
        secret: str,
        policy: WebhookPolicy | None = None,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = state / OUTBOX
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.url = check_url(url)
        self.policy = policy or WebhookPolicy()
        self.clock = clock
        self._signer = Webhook(check_secret(secret, "the secret given"))
        self._own_client = client is None
        self._client = client or httpx.Client(
            timeout=self.policy.timeout_s, follow_redirects=False, headers={"user-agent": "mapreduce-llm-webhooks"}
        )
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the producer side: Batches.on_finished ---

    def enqueue(self, batch: Batch) -> None:
        """Queue the event of a batch that ended: one small file written atomically, no network. The same batch
        and status give the same event, so a finish repeated after a crash queues nothing new. A failure is logged
        and swallowed: the batch ends whatever happens to its webhook."""
        try:
            event = make_event(batch, self.clock())
            path = self._path(event.id)
            if path.exists():
                return
            write_atomic(path, event.model_dump_json() + "\n")
        except (OSError, ValueError):
            log.exception("webhook.queue_failed", batch_id=batch.id, status=batch.status)
            return
        log.info("webhook.queued", event_id=event.id, type=event.type, batch_id=batch.id)
        self._wake.set()

    def pending(self) -> list[PendingEvent]:
        """The events waiting in the outbox, oldest first. A file that cannot be read is renamed ``….unreadable``
        (kept for the operator, skipped from then on)."""
        events = []
        for path in self.outbox.glob("evt_*.json"):
            try:
                events.append(PendingEvent.model_validate_json(path.read_bytes()))
            except FileNotFoundError:
                continue  # delivered meanwhile
            except (OSError, ValidationError):
                log.exception("webhook.unreadable_event", path=str(path))
                path.replace(path.with_name(path.name + ".unreadable"))
        return sorted(events, key=lambda e: (e.queued_at, e.id))

    # --- the sender thread ---

    def start(self) -> None:
        """Start sending (events left by an earlier run first)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="webhook-sender", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread, waiting at most ``timeout`` s (default: one attempt's timeout and 5 s). Events not
        delivered stay in the outbox for the next start."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.policy.timeout_s + 5 if timeout is None else timeout)
            if thread.is_alive():
                log.warning("webhook.sender_still_running")  # a daemon thread: it does not hold the process
                return
        if self._own_client:
            self._client.close()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                wait = self.send_due()
            except Exception:  # the thread must outlive any fault; the outbox is retried on the next round
                log.exception("webhook.sender_failed")
                wait = self.policy.first_delay_s
            self._wake.wait(IDLE_WAIT_S if wait is None else min(max(wait, 0.0), IDLE_WAIT_S))

    def send_due(self) -> float | None:
        """Attempt each event that is due once; seconds until the next one is due (None: the outbox is empty)."""
        soonest: float | None = None
        for event in self.pending():
            if self._stopping.is_set():
                return None
            due_in: float | None = event.next_attempt_at - self.clock()
            if due_in is not None and due_in <= 0:
                due_in = self._attempt(event)
            if due_in is not None:
                soonest = due_in if soonest is None else min(soonest, due_in)
        return soonest

    def _attempt(self, event: PendingEvent) -> float | None:
        """One POST of ``event``; None when it is done with (delivered or given up), else seconds to its next try."""
        now = self.clock()
        stamp = int(now)
        headers = {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": self._signer.sign(event.id, datetime.fromtimestamp(stamp, tz=UTC), event.body),
        }
        event.attempts += 1
        error: str | None
        try:
            response = self._client.post(self.url, content=event.body.encode(), headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        path = self._path(event.id)
        fields = {"event_id": event.id, "type": event.type, "batch_id": event.batch_id, "attempts": event.attempts}
        if error is None:
            path.unlink(missing_ok=True)
            log.info("webhook.delivered", **fields)
            return None
        age = now - event.queued_at
        if event.attempts >= self.policy.max_attempts or age >= self.policy.max_age_s:
            path.unlink(missing_ok=True)
            log.error("webhook.gave_up", **fields, age_s=round(age), error=error, url=display_url(self.url))
            return None
        delay = self.policy.delay(event.attempts)
        event.next_attempt_at, event.last_error = now + delay, error
        write_atomic(path, event.model_dump_json() + "\n")
        log.warning("webhook.retrying", **fields, retry_in_s=round(delay, 1), error=error)
        return delay

    def _path(self, event_id: str) -> Path:
        return self.outbox / f"{event_id}.json"


def open_webhooks(
    state: Path, url: str | None, secret_file: Path | None, policy: WebhookPolicy | None = None
) -> WebhookSender | None:
    """The sender ``serve`` runs (None: no URL, webhooks off). A bad URL or secret raises ConfigError, before
    anything starts."""
    if url is None:
        if secret_file is not None:
            raise ConfigError("a webhook secret file was given without a webhook URL", parameter="webhook_secret_file")
        return None
    check_url(url)
    secret, source = load_secret(secret_file, state)
    sender = WebhookSender(state, url, secret, policy)
    log.info("webhook.configured", url=display_url(url), secret=source, pending=len(sender.pending()))
    return sender
