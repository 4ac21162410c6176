"""A batch's life: validate its file, run its jobs one after another, count, finish, cancel, expire.

``validating``: every line of the input file is checked (:func:`~mapreduce_llm.service.formats.read_input_file`);
rejected lines become ``errors`` entries (``code``, ``line``, ``message``, ``param``) and error-file lines,
the others are grouped by prompt reference and per-request settings — a job spec has one prompt, so a file
with two prompts runs as two jobs, one after the other (one engine on the cluster at a time). A file with no
line that can run fails, as OpenAI's does. ``in_progress``: each job runs as a Ray job; ``request_counts``
follow the jobs' output folders while they run. ``finalizing``: the output and error files are written, every
input line getting exactly one line back. Then ``completed``, or ``failed`` when a job failed (finished
documents are kept). ``cancelling`` stops the running job and keeps what finished; past ``completion_window``
the batch ends ``expired`` the same way, its unfinished lines in the error file as ``batch_expired``.

:meth:`Batches.tick` does all of this; the service calls it every ``poll_interval_s`` from one thread, tests call
it directly with a fake job runner and a fake clock.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from mapreduce_llm.service import formats
from mapreduce_llm.service.batch_files import split_input, write_output_files
from mapreduce_llm.service.formats import Batch, BatchCreate, BatchError, BatchErrors, FileObject, RequestCounts
from mapreduce_llm.service.jobs import ACTIVE, JobRunner, JobState, ProgressReader
from mapreduce_llm.service.limits import ApiError, ServiceLimits, parse_duration
from mapreduce_llm.service.specs import SpecTemplate
from mapreduce_llm.service.store import BatchRecord, IdempotencyEntry, Part, Store

log = structlog.get_logger("mapreduce_llm.service")

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
MAX_ERRORS_SHOWN = 1000
"""Rejected lines listed in a batch's ``errors`` (all of them are in its error file)."""


class Batches:
    """Every batch of the service: create, read, list, cancel, and :meth:`tick` (the lifecycle)."""

    def __init__(
        self,
        store: Store,
        runner: JobRunner,
        template: SpecTemplate,
        limits: ServiceLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.runner = runner
        self.template = template
        self.limits = limits or ServiceLimits()
        self.clock = clock
        self.lock = threading.RLock()
        """Held while a batch record is read and changed (routes and :meth:`tick`)."""
        self.progress = ProgressReader()
        self.on_finished: Callable[[Batch], None] | None = None
        """Called with each batch that reached a terminal status, just before that is saved, so at least once
        (webhooks); it must be quick and idempotent."""

    def now(self) -> int:
        return int(self.clock())

    # --- the API -------------------------------------------------------------------------------------

    def create(self, request: BatchCreate, idempotency_key: str | None = None) -> Batch:
        """A new batch in ``validating`` (or the batch created earlier with the same Idempotency-Key)."""
        request_hash = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
        with self.lock:
            if idempotency_key:
                entry = self.store.idempotent(idempotency_key)
                if entry is not None and (earlier := self.store.get_batch(entry.batch_id)) is not None:
                    if entry.request_hash != request_hash:
                        raise ApiError(
                            409,
                            "this Idempotency-Key was used for a batch with other parameters; use a new key",
                            code="idempotency_key_reused",
                        )
                    return earlier.batch
            if request.endpoint != formats.ENDPOINT:
                raise ApiError(
                    400,
                    f"endpoint {request.endpoint!r} is not served here; use {formats.ENDPOINT!r}",
                    code="invalid_endpoint",
                    param="endpoint",
                )
            try:
                window = parse_duration(request.completion_window)
            except ValueError as exc:
                raise ApiError(400, str(exc), code="invalid_completion_window", param="completion_window") from None
            if window > self.limits.max_completion_window_s:
                raise ApiError(
                    400,
                    f"completion_window {request.completion_window} is longer than this service allows "
                    f"({self.limits.max_completion_window_s // 3600}h)",
                    code="invalid_completion_window",
                    param="completion_window",
                )
            file = self.store.get_file(request.input_file_id)
            if file is None or file.purpose != "batch":
                raise ApiError(
                    400 if file else 404,
                    f"input_file_id {request.input_file_id!r} is not an uploaded file with purpose 'batch'",
                    code="invalid_input_file",
                    param="input_file_id",
                )
            now = self.now()
            batch = Batch(
                id=self.store.new_batch_id(),
                endpoint=request.endpoint,
                input_file_id=file.id,
                completion_window=request.completion_window,
                status="validating",
                created_at=now,
                expires_at=now + window,
                metadata=request.metadata,
            )
            expires_after = request.output_expires_after.seconds if request.output_expires_after else None
            self.store.save_batch(BatchRecord(batch=batch, output_expires_after=expires_after))
            if idempotency_key:
                self.store.remember(idempotency_key, IdempotencyEntry(batch_id=batch.id, request_hash=request_hash))
            log.info("batch.created", batch_id=batch.id, input_file_id=file.id)
            return batch

    def get(self, batch_id: str) -> Batch:
        record = self.store.get_batch(batch_id)
        if record is None:
            raise ApiError(404, f"no batch {batch_id!r}", code="not_found")
        return record.batch

    def page(self, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        """Batches newest first, those after the batch ``after`` (the previous page's last id); (page, has_more)."""
        batches = [record.batch for record in self.store.list_batches()]
        if after:
            ids = [batch.id for batch in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        return batches[:limit], len(batches) > limit

    def cancel(self, batch_id: str) -> Batch:
        """Start cancelling: the running job is stopped on the next tick; finished documents are kept."""
        with self.lock:
            record = self.store.get_batch(batch_id)
            if record is None:
                raise ApiError(404, f"no batch {batch_id!r}", code="not_found")
            status = record.batch.status
            if status in ("cancelling", "cancelled"):
                return record.batch
            if status not in ("validating", "in_progress"):
                raise ApiError(409, f"batch {batch_id} is {status} and cannot be cancelled", code="invalid_state")
            now = self.now()
            record.batch.status, record.batch.cancelling_at = "cancelling", now
            record.ending, record.stop_requested_at = "cancelled", now
            self.store.save_batch(record)
            log.info("batch.cancelling", batch_id=batch_id)
            return record.batch

    # --- the lifecycle -------------------------------------------------------------------------------

    def tick(self) -> None:
        """Move every unfinished batch on by one step, then delete what is past its retention."""
        for record in self.store.list_batches():
            if record.batch.status in TERMINAL:
                continue
            try:
                self._advance(record.batch.id)
            except Exception:  # one batch's fault must not stop the others; it is retried next tick
                log.exception("batch.tick_failed", batch_id=record.batch.id)
        try:
            self.sweep()
        except OSError:
            log.exception("service.sweep_failed")

    def _advance(self, batch_id: str) -> None:
        record = self.store.get_batch(batch_id)
        if record is None:
            return
        if record.batch.status == "validating" and record.ending is None:
            self._validate(record)  # without the lock: a large file takes a while; then on to the first job
        with self.lock:
            record = self.store.get_batch(batch_id)
            if record is None or record.batch.status in TERMINAL:
                return
            now = self.now()
            batch = record.batch
            if record.ending is None and batch.expires_at is not None and now >= batch.expires_at:
                record.ending, record.stop_requested_at = "expired", now
                log.info("batch.expiring", batch_id=batch_id)
            if batch.status == "validating" and record.ending is None:
                return  # validation could not finish (the input file went away): tried again next tick
            if batch.status == "finalizing":
                self._finalize(record)
            elif record.ending is not None:
                self._stop(record)
            else:
                self._run(record)

    def _validate(self, record: BatchRecord) -> None:
        """Check every line, write each job's documents; then ``in_progress`` (or ``failed``: nothing can run)."""
        batch = record.batch
        split = split_input(self.store, self.template, batch)
        total, errors, groups = split.total, split.errors, split.parts
        with self.lock:
            current = self.store.get_batch(batch.id)
            if current is None:
                return
            record, batch = current, current.batch  # cancel may have changed it meanwhile
            record.parts = groups
            record.rejected = sum(1 for e in errors if e.line is not None)
            batch.request_counts = RequestCounts(total=total, failed=record.rejected)
            if errors:
                batch.errors = BatchErrors(data=errors[:MAX_ERRORS_SHOWN])
            if total > self.limits.max_lines:
                message = f"the file has {total:,} requests, over this service's limit of {self.limits.max_lines:,}"
                batch.errors = BatchErrors(data=[BatchError(code="too_many_requests", message=message)])
                record.parts = []
            if total == 0 and not errors:
                batch.errors = BatchErrors(data=[BatchError(code="empty_file", message="the input file has no lines")])
            if batch.status != "validating" or record.ending is not None:
                self.store.save_batch(record)  # cancelled meanwhile: the next tick ends it
                return
            if not record.parts:
                self._finalize(record)
                return
            batch.status, batch.in_progress_at = "in_progress", self.now()
            self.store.save_batch(record)
            log.info(
                "batch.validated", batch_id=batch.id, lines=total, rejected=record.rejected, jobs=len(record.parts)
            )

    def _run(self, record: BatchRecord) -> None:
        """Follow the running job; when it ends, start the next one, or go to ``finalizing`` when none is left."""
        while True:
            part = next((p for p in record.parts if p.status in ("waiting", "running")), None)
            if part is None:
                self._count(record)
                self._enter_finalizing(record)
                return
            if part.status == "waiting" or part.submission_id is None:
                self._submit(record, part)
            else:
                self._follow(record, part, self.runner.state(part.submission_id))
            if part.status == "running":
                break
        self._count(record)
        self.store.save_batch(record)

    def _submit(self, record: BatchRecord, part: Part) -> None:
        if part.attempts >= self.limits.max_submissions:
            part.status, part.message = "failed", part.message or "the job could not be run"
            self._job_failed(record, part)
            return
        part_dir = self.store.part_dir(record.batch.id, part.index)
        spec = self.template.build(
            input=part_dir / "input.jsonl",
            output=part_dir / "out",
            prompt=part.prompt,
            job_id=f"{record.batch.id}-{part.index}",
            settings=part.settings,
        )
        part.attempts += 1
        wanted = f"{record.batch.id}-{part.index}-{part.attempts}"
        part.submission_id = self.runner.submit(spec, wanted)
        part.status = "running"
        log.info("batch.job_submitted", batch_id=record.batch.id, part=part.index, submission_id=part.submission_id)

    def _follow(self, record: BatchRecord, part: Part, state: JobState) -> None:
        if state.status in ACTIVE:
            return
        if state.status == "succeeded":
            part.status = "succeeded"
            log.info("batch.job_succeeded", batch_id=record.batch.id, part=part.index)
        elif state.status == "missing":
            log.warning("batch.job_missing", batch_id=record.batch.id, part=part.index, submission=part.submission_id)
            part.status, part.message = "waiting", state.message  # sent again; it resumes from its output folder
        else:
            part.status, part.message = "failed", state.message or f"the Ray job ended {state.status}"
            self._job_failed(record, part)

    def _job_failed(self, record: BatchRecord, part: Part) -> None:
        message = f"job {part.index} (prompt {part.prompt}, {part.lines} requests) failed: {part.message}"
        errors = record.batch.errors or BatchErrors()
        errors.data.append(BatchError(code="job_failed", message=message))
        record.batch.errors = errors
        for later in record.parts:
            if later.status == "waiting":
                later.status, later.message = "stopped", "not run: an earlier job of the batch failed"
        log.warning("batch.job_failed", batch_id=record.batch.id, part=part.index, message=part.message)

    def _stop(self, record: BatchRecord) -> None:
        """Cancelling or expired: stop the running job; once it has stopped (or the wait is over), finish."""
        running = [p for p in record.parts if p.status == "running" and p.submission_id]
        waited = self.now() - (record.stop_requested_at or self.now())
        for part in running:
            submission_id = str(part.submission_id)
            if self.runner.state(submission_id).status in ACTIVE and waited < self.limits.stop_timeout_s:
                self.runner.stop(submission_id)
                if self.runner.state(submission_id).status in ACTIVE:
                    self._count(record)
                    self.store.save_batch(record)
                    return
            part.status = "stopped"
        for part in record.parts:
            if part.status == "waiting":
                part.status = "stopped"
        self._enter_finalizing(record)

    def _enter_finalizing(self, record: BatchRecord) -> None:
        if record.ending is None:
            record.batch.status, record.batch.finalizing_at = "finalizing", self.now()
        self.store.save_batch(record)
        self._finalize(record)

    def _count(self, record: BatchRecord) -> None:
        ok = failed = 0
        for part in record.parts:
            done = self.progress.counts(self.store.part_dir(record.batch.id, part.index) / "out")
            ok, failed = ok + done[0], failed + done[1]
        record.batch.request_counts = RequestCounts(
            total=record.batch.request_counts.total, completed=ok, failed=record.rejected + failed
        )

    def _finalize(self, record: BatchRecord) -> None:
        """Write the output and error files (every input line gets exactly one line) and end the batch."""
        batch = record.batch
        out_path, err_path, completed = write_output_files(self.store, batch.id, record.parts, record.ending)
        batch.output_file_id = self._publish(record, out_path, "output")
        batch.error_file_id = self._publish(record, err_path, "errors")
        total = batch.request_counts.total
        batch.request_counts = RequestCounts(total=total, completed=completed, failed=total - completed)
        failed = not record.parts or any(p.status == "failed" for p in record.parts)
        self._finish(record, record.ending or ("failed" if failed else "completed"))

    def _publish(self, record: BatchRecord, path: Path, kind: str) -> str | None:
        """Make ``path`` a file of purpose ``batch_output`` (None when it is empty); its id is derived from the
        batch's, so a finalizing step repeated after a restart writes the same file."""
        size = path.stat().st_size
        if size == 0:
            path.unlink()
            return None
        batch = record.batch
        file_id = "file-" + hashlib.sha256(f"{batch.id}/{kind}".encode()).hexdigest()[:24]
        path.replace(self.store.content_path(file_id))
        now = self.now()
        keep = record.output_expires_after or self.limits.retention_s
        self.store.save_file(
            FileObject(
                id=file_id,
                bytes=size,
                created_at=now,
                filename=f"{batch.id}_{kind}.jsonl",
                purpose="batch_output",
                expires_at=now + keep,
            )
        )
        return file_id

    def _finish(self, record: BatchRecord, status: formats.Status) -> None:
        now = self.now()
        batch = record.batch
        stamp = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at"}
        batch.status = status
        setattr(batch, stamp.get(status, "expired_at"), now)
        record.finished_at = now
        if self.on_finished is not None:  # before the save: a crash in between ends the batch (and calls it) again
            self.on_finished(batch)
        self.store.save_batch(record)
        log.info("batch.finished", batch_id=batch.id, status=status, **batch.request_counts.model_dump())

    # --- retention -----------------------------------------------------------------------------------

    def sweep(self) -> None:
        """Delete files past their ``expires_at`` and finished batches older than the retention."""
        now = self.now()
        with self.lock:
            for file in self.store.list_files():
                if file.expires_at is not None and file.expires_at <= now:
                    self.store.delete_file(file.id)
                    log.info("file.expired", file_id=file.id)
            gone = set()
            for record in self.store.list_batches():
                if record.finished_at is not None and record.finished_at + self.limits.retention_s <= now:
                    self.store.delete_batch(record.batch.id)
                    self.progress.forget_under(self.store.batch_dir(record.batch.id))
                    gone.add(record.batch.id)
            if gone:
                self.store.forget_keys_of(gone)
