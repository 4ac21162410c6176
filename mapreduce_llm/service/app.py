"""The HTTP API: OpenAI's Files and Batches endpoints over :class:`~mapreduce_llm.service.batches.Batches`.

Why FastAPI + uvicorn rather than Ray Serve: the service is a small control plane — it stores files, keeps
batch records and submits Ray jobs — and does no inference itself, so it gains nothing from Serve's replicas
and autoscaling. It must also run where no Ray cluster runs yet (it starts its own head when given none) and
stay up while clusters come and go; as a Serve app it would live and die with one cluster. FastAPI gives the
pydantic models at the boundary, multipart uploads and a test client with no server.

Every route needs ``Authorization: Bearer <token>`` (401 otherwise, checked before anything else, unknown
paths included). Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, so the
official client raises its usual exceptions (``AuthenticationError``, ``NotFoundError``, ``BadRequestError``).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

import structlog
from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from mapreduce_llm.jsonl import count_lines
from mapreduce_llm.service.auth import authorized
from mapreduce_llm.service.batches import Batches
from mapreduce_llm.service.formats import Batch, BatchCreate, FileObject
from mapreduce_llm.service.limits import ApiError

log = structlog.get_logger("mapreduce_llm.service")

_TYPES = {401: "authentication_error", 404: "invalid_request_error", 409: "invalid_request_error"}


def _error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}  # fmt: skip
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


class Ticker:
    """Calls ``batches.tick()`` every ``interval`` seconds in one thread until stopped (never two at once)."""

    def __init__(self, batches: Batches, interval: float) -> None:
        self.batches = batches
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batch-ticker", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.batches.tick()
            except Exception:  # logged, and tried again next interval: the service stays up
                log.exception("service.tick_failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def create_app(
    batches: Batches,
    tokens: Sequence[str],
    *,
    tick_interval: float | None = None,
    middleware: Sequence[Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]] = (),
) -> FastAPI:
    """The API over ``batches``; with ``tick_interval`` the lifecycle runs in a thread for the app's lifetime
    (tests leave it None and call ``batches.tick()`` themselves)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ticker = Ticker(batches, tick_interval) if tick_interval else None
        if ticker is not None:
            ticker.start()
        try:
            yield
        finally:
            if ticker is not None:
                ticker.stop()

    app = FastAPI(title="mapreduce-llm batch service", lifespan=lifespan, docs_url=None, redoc_url=None)
    store, limits = batches.store, batches.limits

    @app.middleware("http")
    async def require_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not authorized(request.headers.get("authorization"), tokens):
            return _error(401, "missing or wrong bearer token; send Authorization: Bearer <token>", "invalid_api_key")
        return await call_next(request)

    for extra in middleware:  # added last = runs first: e.g. metrics see the 401s too
        app.middleware("http")(extra)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
        return _error(400, f"{param or 'request'}: {first['msg']}", "invalid_request", param or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    # --- files ---------------------------------------------------------------------------------------

    @app.post("/v1/files")
    async def upload(request: Request) -> FileObject:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_upload_bytes + 65536:
            raise ApiError(
                413,
                f"the upload is {int(declared):,} bytes, over this service's limit of {limits.max_upload_bytes:,}; "
                "split the requests into several files",
                code="file_too_large",
            )
        form = await request.form(max_files=1, max_fields=8)
        purpose, file = form.get("purpose"), form.get("file")
        if purpose != "batch":
            raise ApiError(400, f"purpose must be 'batch', got {purpose!r}", code="invalid_purpose", param="purpose")
        if not isinstance(file, UploadFile):
            raise ApiError(400, "no file: send the JSONL file as the multipart field 'file'", param="file")
        seconds = form.get("expires_after[seconds]")
        file_id = store.new_file_id()
        path = store.content_path(file_id)
        size = 0
        with path.open("wb") as out:
            while block := await file.read(1 << 20):
                size += len(block)
                if size > limits.max_upload_bytes:
                    break
                out.write(block)
        problem = None
        if size > limits.max_upload_bytes:
            problem = (413, f"the file is over this service's limit of {limits.max_upload_bytes:,} bytes; "
                       "split the requests into several files", "file_too_large")  # fmt: skip
        elif (lines := await run_in_threadpool(count_lines, path)) > limits.max_lines:
            problem = (400, f"the file has {lines:,} requests, over this service's limit of {limits.max_lines:,} per "
                       "batch; split it into several files", "too_many_requests")  # fmt: skip
        if problem is not None:
            path.unlink(missing_ok=True)
            raise ApiError(problem[0], problem[1], code=problem[2], param="file")
        now = batches.now()
        keep = int(seconds) if isinstance(seconds, str) and seconds.isdigit() else limits.retention_s
        obj = FileObject(
            id=file_id, bytes=size, created_at=now, filename=file.filename or "input.jsonl", purpose="batch",
            expires_at=now + min(keep, limits.retention_s),
        )  # fmt: skip
        store.save_file(obj)
        log.info("file.uploaded", file_id=file_id, bytes=size)
        return obj

    def _file(file_id: str) -> FileObject:
        found = store.get_file(file_id)
        if found is None:
            raise ApiError(404, f"no file {file_id!r}", code="not_found", param="file_id")
        return found

    @app.get("/v1/files")
    def list_files() -> dict[str, Any]:
        files = sorted(store.list_files(), key=lambda f: (f.created_at, f.id), reverse=True)
        return {"object": "list", "data": [f.model_dump() for f in files], "has_more": False}

    @app.get("/v1/files/{file_id}")
    def get_file(file_id: str) -> FileObject:
        return _file(file_id)

    @app.get("/v1/files/{file_id}/content")
    def file_content(file_id: str) -> FileResponse:
        found = _file(file_id)
        return FileResponse(store.content_path(found.id), media_type="application/jsonl", filename=found.filename)

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str) -> dict[str, Any]:
        with batches.lock:
            if not store.delete_file(file_id):
                raise ApiError(404, f"no file {file_id!r}", code="not_found", param="file_id")
        return {"id": file_id, "object": "file", "deleted": True}

    # --- batches -------------------------------------------------------------------------------------

    @app.post("/v1/batches")
    def create_batch(
        request: BatchCreate, idempotency_key: Annotated[str | None, Header(max_length=255)] = None
    ) -> Batch:
        return batches.create(request, idempotency_key)

    @app.get("/v1/batches/{batch_id}")
    def get_batch(batch_id: str) -> Batch:
        return batches.get(batch_id)

    @app.get("/v1/batches")
    def list_batches(after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
        page, more = batches.page(after, limit)
        return {
            "object": "list",
            "data": [b.model_dump() for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": more,
        }

    @app.post("/v1/batches/{batch_id}/cancel")
    def cancel_batch(batch_id: str) -> Batch:
        return batches.cancel(batch_id)

    return app
