"""Who hears what a job does, as it happens: metrics exporters, profilers, a progress display.

A :class:`JobObserver` is told about every engine request that finished, every document that finished and the
end of the job. It is also a :class:`~mapreduce_llm.engines.client.RequestObserver` (the same ``request_done``),
so the job hands it to its engine client as is. :class:`Observers` makes several observers one.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from mapreduce_llm.engines.base import EngineOutput, EngineRequest
    from mapreduce_llm.planning import DocumentPlan
    from mapreduce_llm.prompts import PromptRef
    from mapreduce_llm.results import DocumentResult, JobSummary


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
