"""The seam between the commands and the library: what a command calls, replaceable by test doubles.

``CliRunner().invoke(cli, args, obj=Library(run_job=double))`` runs a command against a double (as simonw/llm
registers its mock model); every part not given is the real one, imported when first called, so the command
line starts without loading Ray, vLLM or an embedding model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

if TYPE_CHECKING:
    from mapreduce_llm.config import JobSpec
    from mapreduce_llm.embeddings import TextEmbedder
    from mapreduce_llm.engines import Engine
    from mapreduce_llm.engines.config import EngineConfig
    from mapreduce_llm.errors import DocumentError
    from mapreduce_llm.planning import DocumentPlan
    from mapreduce_llm.prompts import PromptSelection
    from mapreduce_llm.results import JobSummary


class RayJobs(Protocol):
    """The Ray Jobs API calls of the ``cluster`` commands (the real one: :mod:`mapreduce_llm.submission`)."""

    def submit(
        self,
        spec: JobSpec,
        address: str | None,
        *,
        env: dict[str, str] | None = None,
        upload_input: bool = True,
        submission_id: str | None = None,
        python: str | None = None,
    ) -> str:
        """Submit a job; returns its submission id (``python``: the head's interpreter to run it with)."""

    def job_info(self, address: str | None, submission_id: str) -> Any:
        """Ray's JobDetails of one submission."""

    def job_logs(self, address: str | None, submission_id: str) -> str:
        """The job's driver output so far."""

    def follow_logs(self, address: str | None, submission_id: str, write: Callable[[str], None]) -> None:
        """Stream the job's driver output to ``write`` until it ends."""

    def stop_job(self, address: str | None, submission_id: str) -> bool:
        """Stop a job; False if it had already ended."""

    def list_jobs(self, address: str | None) -> list[Any]:
        """Every job the cluster knows."""


def _run_job(*args: Any, **kwargs: Any) -> JobSummary:
    from mapreduce_llm.runner import run_job

    return run_job(*args, **kwargs)


def _plan_job(*args: Any, **kwargs: Any) -> tuple[PromptSelection, Iterator[DocumentPlan | DocumentError]]:
    from mapreduce_llm.runner import plan_job

    return plan_job(*args, **kwargs)


def _shared_engine(config: EngineConfig) -> AbstractContextManager[Engine | None]:
    from mapreduce_llm.runner import shared_engine

    return shared_engine(config)


def _embedder() -> TextEmbedder:
    from mapreduce_llm.embeddings import shared_embedder

    return shared_embedder()


def _prepare_model() -> Path:
    from mapreduce_llm.model_store import ensure_embedded_model

    return ensure_embedded_model()


def _who(prompts_dir: Path) -> str:
    from mapreduce_llm.prompts.history import current_user

    return current_user(prompts_dir)


def _now() -> datetime:
    from mapreduce_llm.prompts.history import utc_now

    return utc_now()


@dataclass(frozen=True)
class Library:
    """The library functions the commands call; ``ctx.obj`` when given, else the real ones."""

    run_job: Callable[..., JobSummary] = _run_job
    """:func:`mapreduce_llm.runner.run_job` (``run``)."""
    plan_job: Callable[..., tuple[PromptSelection, Iterator[DocumentPlan | DocumentError]]] = _plan_job
    """:func:`mapreduce_llm.runner.plan_job` (``plan``, ``drift profile``)."""
    shared_engine: Callable[[EngineConfig], AbstractContextManager[Engine | None]] = _shared_engine
    """:func:`mapreduce_llm.runner.shared_engine`: one engine for several jobs (``prompts compare``)."""
    ray_jobs: RayJobs | None = None
    """The Ray Jobs API (``cluster``); None: :mod:`mapreduce_llm.submission`."""
    embedder: Callable[[], TextEmbedder] = _embedder
    """Makes the chunk embedder (``drift profile``): all-MiniLM-L6-v2."""
    prepare_model: Callable[[], Path] = _prepare_model
    """Converts the embedded model once and returns its folder (``models prepare``, ``prompts render``)."""
    who: Callable[[Path], str] = _who
    """Who moves a label, for prompts/<task>/history.jsonl: git config's user as seen from the prompts folder, else
    the OS user (``prompts promote``, ``prompts rollout``)."""
    now: Callable[[], datetime] = _now
    """The time a history entry records (UTC)."""

    @classmethod
    def of(cls, ctx: click.Context) -> Library:
        """The context's library (``ctx.obj``), else the real one."""
        return ctx.find_object(Library) or cls()

    def jobs_api(self) -> RayJobs:
        """:attr:`ray_jobs`, or the real Ray Jobs API."""
        if self.ray_jobs is not None:
            return self.ray_jobs
        from mapreduce_llm import submission

        return submission
