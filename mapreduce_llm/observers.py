"""Who hears what a job does, as it happens: metrics exporters, profilers, a progress display.

A :class:`JobObserver` is told about every engine request that finished, every document that finished and the
end of the job. It is also a :class:`~mapreduce_llm.engines.client.RequestObserver` (the same ``request_done``),
so the job hands it to its engine client as is. :class:`Observers` makes several observers one.

Progress is shown by :class:`ProgressObserver` (tqdm bars, on a terminal) or :class:`ProgressLogObserver` (a log
line at a steady interval, off a terminal: CI, ``ray job logs``, a RayJob pod).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import structlog

if TYPE_CHECKING:
    from mapreduce_llm.engines.base import EngineOutput, EngineRequest
    from mapreduce_llm.planning import DocumentPlan
    from mapreduce_llm.prompts import PromptRef
    from mapreduce_llm.results import DocumentResult, JobSummary

log = structlog.get_logger(__name__)


class JobObserver(Protocol):
    """Receives what a job does, as it happens (metrics exporters implement this)."""

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        """An engine request finished (``output`` None: it failed)."""

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        """A document computed by this run finished, successfully or not (``plan`` None when it failed before
        planning). Results reused from an earlier run are not reported here."""

    def job_done(self, summary: JobSummary) -> None:
        """The job finished or failed."""


class NoObserver:
    """Hears everything and does nothing: the job's observer when none is given."""

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        """Ignored."""

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        """Ignored."""

    def job_done(self, summary: JobSummary) -> None:
        """Ignored."""


class Observers:
    """Several observers as one (e.g. metrics and a progress display); None entries are skipped."""

    def __init__(self, *observers: JobObserver | None) -> None:
        self.observers = [o for o in observers if o is not None]

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        """Tell every observer, in order."""
        for o in self.observers:
            o.request_done(prompt, request, output)

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        """Tell every observer, in order."""
        for o in self.observers:
            o.document_done(result, plan)

    def job_done(self, summary: JobSummary) -> None:
        """Tell every observer, in order."""
        for o in self.observers:
            o.job_done(summary)


class ProgressObserver:
    """Two tqdm bars: documents (with the error count) and engine calls (with their count by stage).

    Engine calls arrive through ``request_done``. Documents arrive through :meth:`on_result`, to be given as the
    job's ``on_result``: unlike ``document_done`` it also hears results reused from an earlier run, so the bar
    reaches its total on a resumed job. Use it as a context manager (or call :meth:`close`) to close the bars.
    """

    def __init__(self, total: int | None = None, *, enabled: bool = True, file: TextIO | None = None) -> None:
        from tqdm import tqdm

        out = file or sys.stderr
        self.documents = tqdm(total=total, unit="doc", desc="documents", disable=not enabled, file=out)
        self.calls = tqdm(unit="call", desc="engine calls", disable=not enabled, file=out, position=1)
        self.errors = 0
        """Documents with an error record so far."""
        self.stages: dict[str, int] = {}
        """Engine calls so far, by stage."""

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        """Count one engine call under its stage."""
        self.stages[request.stage] = self.stages.get(request.stage, 0) + 1
        self.calls.set_postfix(self.stages, refresh=False)
        self.calls.update(1)

    def on_result(self, result: DocumentResult) -> None:
        """Count one finished document (fresh or reused), and its error if it has one."""
        self.errors += result.failed
        self.documents.set_postfix(errors=self.errors, refresh=False)
        self.documents.update(1)

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        """Nothing: :meth:`on_result` counts documents, reused ones included."""

    def job_done(self, summary: JobSummary) -> None:
        """Nothing: the bars stay on screen until :meth:`close`."""

    def close(self) -> None:
        """Close both bars."""
        self.calls.close()
        self.documents.close()

    def __enter__(self) -> ProgressObserver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ProgressLogObserver:
    """Progress as a ``job.progress`` log line every ``interval_s`` seconds, for runs off a terminal.

    Each line carries documents done of the total (reused ones included, as for :class:`ProgressObserver`, whose
    ``on_result`` contract it shares), documents with an error, engine requests finished, prompt and output tokens
    per second since the previous line, and the estimated seconds left (from the pace of the documents computed
    by this run; None until one is). Counts and timings only, never document text.

    While open as a context manager a daemon thread logs a line every interval, so a stalled job keeps saying so;
    :meth:`log_progress` logs one now (tests drive it with a fake ``clock``).
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.interval_s = interval_s
        self.clock = clock
        self.documents = 0
        """Documents finished so far, reused ones included."""
        self.computed = 0
        """Documents computed by this run so far."""
        self.errors = 0
        self.requests = 0
        self.prompt_tokens = 0
        self.output_tokens = 0
        self._lock = threading.Lock()
        self._started = self._last_at = clock()
        self._last_tokens = (0, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def request_done(self, prompt: PromptRef, request: EngineRequest, output: EngineOutput | None) -> None:
        """Count one engine request and its tokens."""
        with self._lock:
            self.requests += 1
            if output is not None:
                self.prompt_tokens += output.prompt_tokens
                self.output_tokens += output.completion_tokens

    def on_result(self, result: DocumentResult) -> None:
        """Count one finished document (fresh or reused), and its error if it has one."""
        with self._lock:
            self.documents += 1
            self.errors += result.failed

    def document_done(self, result: DocumentResult, plan: DocumentPlan | None) -> None:
        """Count one document computed by this run (the pace the ETA is estimated from)."""
        with self._lock:
            self.computed += 1

    def job_done(self, summary: JobSummary) -> None:
        """Nothing: the job logs its own end."""

    def figures(self) -> dict[str, Any]:
        """The fields of the next progress line (and the start of the next tokens-per-second window)."""
        now = self.clock()
        with self._lock:
            elapsed, window = now - self._started, now - self._last_at
            prompt_rate = (self.prompt_tokens - self._last_tokens[0]) / window if window > 0 else 0.0
            output_rate = (self.output_tokens - self._last_tokens[1]) / window if window > 0 else 0.0
            self._last_at, self._last_tokens = now, (self.prompt_tokens, self.output_tokens)
            eta = None
            if self.total is not None and self.computed and elapsed > 0:
                eta = round(max(self.total - self.documents, 0) * elapsed / self.computed, 1)
            return {
                "documents": self.documents,
                "total": self.total,
                "errors": self.errors,
                "requests": self.requests,
                "prompt_tokens_per_s": round(prompt_rate, 1),
                "output_tokens_per_s": round(output_rate, 1),
                "elapsed_s": round(elapsed, 1),
                "eta_s": eta,
            }

    def log_progress(self) -> None:
        """Log one ``job.progress`` line now."""
        log.info("job.progress", **self.figures())

    def _every_interval(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.log_progress()

    def __enter__(self) -> ProgressLogObserver:
        self._thread = threading.Thread(target=self._every_interval, name="progress-log", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
