"""A tiny OpenAI-compatible HTTP server for tests: scripted failures first, then canned completions.

It listens on 127.0.0.1 only and lives under tests/ (the package has no fakes).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAIServer:
    """Answers ``GET /v1/models`` and ``POST /v1/completions``.

    ``failures``: HTTP statuses returned, in order, to the first completion requests (e.g. ``[429, 503]``).
    Every completion request body is kept in ``requests``.
    """

    def __init__(self, failures: list[int] | None = None, max_model_len: int = 1024) -> None:
        self.failures = list(failures or [])
        self.max_model_len = max_model_len
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()

    def handle(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        if method == "GET" and path == "/v1/models":
            return 200, {"data": [{"id": "fake-model", "max_model_len": self.max_model_len}]}
        if method == "POST" and path == "/v1/completions" and body is not None:
            with self._lock:
                self.requests.append(body)
                status = self.failures.pop(0) if self.failures else 200
                self.statuses.append(status)
            if status != 200:
                return status, {"error": {"message": "busy, try again", "code": status}}
            n = min(3, int(body["max_tokens"]))
            return 200, {
                "choices": [
                    {
                        "text": "ok " * n,
                        "finish_reason": "length",
                        "logprobs": {"token_logprobs": [-0.5] * n},
                    }
                ],
                "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": n},
            }
        return 404, {"error": {"message": f"no route {method} {path}"}}


@contextmanager
def serve(fake: FakeOpenAIServer) -> Iterator[str]:
    """Run ``fake`` on a free loopback port; yields its API root (``http://127.0.0.1:PORT/v1``)."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, payload = fake.handle(method, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply("GET")

        def do_POST(self) -> None:
            self._reply("POST")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
