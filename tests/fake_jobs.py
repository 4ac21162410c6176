"""A job runner double for the batch service: jobs that finish documents when the test says so.

A "job" reads its spec's input (the batch's documents) and writes result records into its spec's output folder
as a real job does: ``results.partial.jsonl`` line by line while it runs, ``results.jsonl`` when it succeeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mapreduce_llm.config import JobSpec
from mapreduce_llm.output import PARTIAL_FILE, RESULTS_FILE
from mapreduce_llm.results import DocumentResult, ErrorInfo
from mapreduce_llm.service.jobs import JobState, JobStatus


@dataclass
class FakeJob:
    spec: JobSpec
    status: JobStatus = "running"
    message: str | None = None
    done: list[DocumentResult] = field(default_factory=list)

    def documents(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.spec.input.read_text(encoding="utf-8").splitlines()]


class FakeJobRunner:
    """Submitted jobs run until :meth:`finish`, :meth:`succeed` or :meth:`fail`; ``failing_ids`` fail their
    document with ``empty_output``."""

    def __init__(self, failing_ids: frozenset[str] = frozenset()) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.submitted: list[str] = []
        self.stopped: list[str] = []
        self.failing_ids = failing_ids

    # --- the JobRunner protocol ---

    def submit(self, spec: JobSpec, submission_id: str) -> str:
        self.jobs[submission_id] = FakeJob(spec)
        self.submitted.append(submission_id)
        return submission_id

    def state(self, submission_id: str) -> JobState:
        job = self.jobs.get(submission_id)
        if job is None:
            return JobState("missing", f"job {submission_id} does not exist")
        return JobState(job.status, job.message)

    def stop(self, submission_id: str) -> None:
        self.stopped.append(submission_id)
        job = self.jobs[submission_id]
        if job.status in ("pending", "running"):
            job.status = "stopped"

    # --- what the test does ---

    def running(self) -> FakeJob:
        (job,) = [job for job in self.jobs.values() if job.status == "running"]
        return job

    def finish(self, count: int) -> None:
        """The running job finishes its next ``count`` documents (appended to its partial log)."""
        job = self.running()
        todo = job.documents()[len(job.done) : len(job.done) + count]
        job.spec.output.mkdir(parents=True, exist_ok=True)
        with (job.spec.output / PARTIAL_FILE).open("a", encoding="utf-8") as fh:
            for document in todo:
                result = self._result(job, document)
                job.done.append(result)
                fh.write(result.model_dump_json() + "\n")

    def succeed(self) -> None:
        """The running job finishes every document and publishes results.jsonl."""
        job = self.running()
        self.finish(len(job.documents()))
        text = "".join(result.model_dump_json() + "\n" for result in job.done)
        (job.spec.output / RESULTS_FILE).write_text(text, encoding="utf-8")
        (job.spec.output / PARTIAL_FILE).unlink()
        job.status = "succeeded"

    def fail(self, message: str = "engine died") -> None:
        job = self.running()
        job.status, job.message = "failed", message

    def _result(self, job: FakeJob, document: dict[str, object]) -> DocumentResult:
        doc_id = str(document["id"])
        metadata = {k: v for k, v in document.items() if k not in ("id", "text", "question")}
        if doc_id in self.failing_ids:
            error = ErrorInfo(code="empty_output", message=f"{doc_id}: the model wrote nothing")
            return DocumentResult(id=doc_id, status="error", error=error, metadata=metadata)
        return DocumentResult(id=doc_id, status="ok", output=f"{job.spec.prompt}: {doc_id}", metadata=metadata)


class FakeClock:
    """A clock the test moves."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
