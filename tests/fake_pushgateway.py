"""A stand-in for the Prometheus Pushgateway: records every push (the real one is in tests/integration)."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Push:
    """One push: the HTTP method (PUT replaces a group, POST updates it), the group's path and the body."""

    method: str
    path: str
    body: str

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The pushed samples by (name, labels)."""
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(self.body)
            for s in family.samples
        }

    def names(self) -> set[str]:
        """The pushed sample names."""
        return {name for name, _ in self.samples()}


class FakePushgateway:
    """An HTTP server on a free loopback port that accepts PUT and POST and keeps them in :attr:`pushes`; use it
    as a context manager (:attr:`url` is valid inside)."""

    def __init__(self) -> None:
        self.pushes: list[Push] = []
        pushes = self.pushes

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                pushes.append(Push(self.command, self.path, body))
                self.send_response(200)
                self.end_headers()

            do_PUT = do_POST = _record

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakePushgateway:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
