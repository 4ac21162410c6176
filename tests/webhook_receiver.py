"""A webhook endpoint on 127.0.0.1 that verifies every delivery with ``standardwebhooks`` (shared by the webhook
unit tests and the service's integration test)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

WAIT_S = 15.0


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class Receiver:
    """A webhook endpoint: answers the first ``fail_first`` attempts 500, then verifies each delivery with
    ``standardwebhooks`` (400 when it does not verify) and answers 200."""

    def __init__(self, secret: str, fail_first: int = 0) -> None:
        self.webhook = Webhook(secret)
        self.fail_first = fail_first
        self.attempt_ids: list[str] = []
        self.deliveries: list[Delivery] = []
        self.rejected: list[str] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {key.lower(): value for key, value in self.headers.items()}
                self.send_response(receiver.record(headers, body))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks?team=docs"

    def record(self, headers: dict[str, str], body: bytes) -> int:
        with self.changed:
            self.attempt_ids.append(headers.get("webhook-id", ""))
            self.changed.notify_all()
            if len(self.attempt_ids) <= self.fail_first:
                return 500
            try:
                self.webhook.verify(body, headers)
            except WebhookVerificationError as exc:
                self.rejected.append(str(exc))
                return 400
            self.deliveries.append(Delivery(headers, body))
            self.changed.notify_all()
            return 200

    def wait(self, until: Callable[[], bool], timeout: float = WAIT_S) -> None:
        with self.changed:
            assert self.changed.wait_for(until, timeout=timeout), (self.attempt_ids, self.rejected)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
