"""A tiny OpenAI-compatible server for tests: scripted failures first, then canned completions.

Completions are answered as vLLM does: streamed as server-sent events when the request says ``stream``, with
the usage in a last event, else as one JSON answer. Two ways to reach it: :func:`serve` listens on a loopback
port (real HTTP, no delays), :meth:`FakeOpenAIServer.transport` mounts it into an httpx client in-process, where
streams can be slow, stall, or wait for a free slot. It lives under tests/ (the package has no fakes).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

Payload = dict[str, Any] | list[dict[str, Any]]
"""A JSON answer, or the events of a stream."""


class FakeOpenAIServer:
    """Answers ``GET /v1/models`` and ``POST /v1/completions`` with ``tokens`` tokens of "ok ".

    ``failures``: HTTP statuses returned, in order, to the first completion requests (e.g. ``[429, 503]``).
    Through :meth:`transport` only: each streamed token takes ``token_delay_s``; a stream stops for good after
    ``stall_after`` tokens (None: never); at most ``running`` streams are served at once, the others wait for
    a slot without receiving a byte (None: no limit), as requests queue in a busy vLLM.

    Every completion request body is kept in ``requests``, answer statuses in ``statuses``; ``closed_early``
    counts streams the client closed before their end.
    """

    def __init__(
        self,
        failures: list[int] | None = None,
        max_model_len: int = 1024,
        tokens: int = 3,
        token_delay_s: float = 0.0,
        stall_after: int | None = None,
        running: int | None = None,
        cached_tokens: int | None = None,
    ) -> None:
        self.failures = list(failures or [])
        self.max_model_len = max_model_len
        self.tokens = tokens
        self.token_delay_s = token_delay_s
        self.stall_after = stall_after
        self.running = running
        self.cached_tokens = cached_tokens
        self.down = False
        """Through :meth:`transport`: refuse connections, as a server that has gone away."""
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.closed_early = 0
        self._lock = threading.Lock()
        self._slots: asyncio.Semaphore | None = None

    def handle(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Payload]:
        if method == "GET" and path == "/v1/models":
            return 200, {"data": [{"id": "fake-model", "max_model_len": self.max_model_len}]}
        if method == "POST" and path == "/v1/completions" and body is not None:
            with self._lock:
                self.requests.append(body)
                status = self.failures.pop(0) if self.failures else 200
                self.statuses.append(status)
            if status != 200:
                return status, {"error": {"message": "busy, try again", "code": status}}
            n = min(self.tokens, int(body["max_tokens"]))
            usage: dict[str, Any] = {"prompt_tokens": len(body["prompt"]), "completion_tokens": n}
            if self.cached_tokens is not None:
                usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
            if body.get("stream"):
                return 200, self._events(n, usage)
            logprobs = {"tokens": ["ok "] * n, "token_logprobs": [-0.5] * n}
            return 200, {
                "choices": [{"text": "ok " * n, "finish_reason": "length", "logprobs": logprobs}],
                "usage": usage,
            }
        return 404, {"error": {"message": f"no route {method} {path}"}}

    @staticmethod
    def _events(n: int, usage: dict[str, Any]) -> list[dict[str, Any]]:
        """One event per token (as vLLM streams), then the usage event."""
        events: list[dict[str, Any]] = [
            {
                "choices": [
                    {
                        "index": 0,
                        "text": "ok ",
                        "logprobs": {"tokens": ["ok "], "token_logprobs": [-0.5]},
                        "finish_reason": "length" if i == n - 1 else None,
                    }
                ]
            }
            for i in range(n)
        ]
        events.append({"choices": [], "usage": usage})
        return events

    def transport(self) -> httpx.AsyncBaseTransport:
        """This server as an httpx transport (``OpenAIEngine(config, transport=...)``), with timed streams."""
        return _Transport(self)

    async def stream(self, events: list[dict[str, Any]]) -> AsyncGenerator[bytes, None]:
        """The bytes of a stream of ``events``, paced as configured."""
        if self.running is not None and self._slots is None:
            self._slots = asyncio.Semaphore(self.running)
        finished = False
        try:
            if self._slots is not None:
                await self._slots.acquire()
            try:
                for i, event in enumerate(events):
                    if event["choices"]:
                        if self.stall_after is not None and i >= self.stall_after:
                            await asyncio.Event().wait()  # a stream that stops and never ends
                        await asyncio.sleep(self.token_delay_s)
                    yield f"data: {json.dumps(event)}\n\n".encode()
                finished = True  # all sent; the client may close the stream at [DONE]
                yield b"data: [DONE]\n\n"
            finally:
                if self._slots is not None:
                    self._slots.release()
        finally:
            if not finished:
                self.closed_early += 1


class _Transport(httpx.AsyncBaseTransport):
    def __init__(self, fake: FakeOpenAIServer) -> None:
        self.fake = fake

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.fake.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        content = await request.aread()
        body = json.loads(content) if content else None
        status, payload = self.fake.handle(request.method, request.url.path, body)
        if isinstance(payload, list):
            headers = {"content-type": "text/event-stream"}
            return httpx.Response(status, headers=headers, stream=_Body(self.fake.stream(payload)))
        return httpx.Response(status, json=payload)


class _Body(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncGenerator[bytes, None]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        await self._chunks.aclose()


@contextmanager
def serve(fake: FakeOpenAIServer) -> Iterator[str]:
    """Run ``fake`` on a free loopback port; yields its API root (``http://127.0.0.1:PORT/v1``)."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, payload = fake.handle(method, self.path, body)
            if isinstance(payload, list):  # a stream, sent at once
                data = b"".join(f"data: {json.dumps(event)}\n\n".encode() for event in payload) + b"data: [DONE]\n\n"
                content_type = "text/event-stream"
            else:
                data = json.dumps(payload).encode()
                content_type = "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
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
