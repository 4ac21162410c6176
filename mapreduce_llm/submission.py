"""Jobs on a Ray cluster, through Ray's Job Submission API (the dashboard's HTTP server, port 8265 by default).

``submit`` packs what the job needs into a Ray ``runtime_env`` working folder — the job spec, the prompt
files it can run and (when they exist on this machine) the input and the drift baseline — and starts
``mapreduce-llm run spec.yaml`` as the job's entrypoint on the cluster. ``output`` and ``engine.model`` are paths
*on the cluster* (shared storage or the node's disk): results are written there by the job's driver. What the
job exports (``/metrics``, the Pushgateway, profiles, drift) is the spec's ``monitoring:`` section, carried in
spec.yaml like every other setting: the entrypoint has no flags for it.

Token authentication (``RAY_AUTH_MODE=token`` on the cluster): the token is read from ``RAY_AUTH_TOKEN``,
else from the file named by ``RAY_AUTH_TOKEN_PATH``, else — when ``RAY_AUTH_MODE=token`` is set here too —
from ``~/.ray/auth_token`` (where ``ray get-auth-token --generate`` writes it), and sent as a bearer token.
A cluster that refuses the request becomes a :class:`SubmissionError` saying what to set.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from mapreduce_llm.config import JobSpec
from mapreduce_llm.errors import MapReduceError
from mapreduce_llm.input_files import input_kind, walk_folder
from mapreduce_llm.monitoring.baselines import BaselineStore
from mapreduce_llm.prompts import default_prompts_dir, select_prompts

ENTRYPOINT = "mapreduce-llm run spec.yaml --no-progress"
"""What the cluster runs, inside the uploaded working folder (every setting, monitoring included, is in spec.yaml).

Ray's job supervisor runs it with ``/bin/sh`` on the head, with the environment ``ray start`` had there: the
virtualenv's ``bin`` must be on that PATH (activate it before ``ray start``), or :func:`entrypoint` names the
interpreter (``cluster submit --python``)."""


def entrypoint(python: str | None = None) -> str:
    """The job's command: ``mapreduce-llm`` from the head's PATH, or with ``python`` (the path of the interpreter
    of the head's virtualenv) ``python -m mapreduce_llm.cli``, which does not depend on PATH."""
    if python is None:
        return ENTRYPOINT
    if not python.startswith("/"):
        raise SubmissionError(
            f"--python must be the absolute path of the Python on the Ray head that has mapreduce-llm installed "
            f"(e.g. /opt/venv/bin/python), got {python!r}"
        )
    return f"{shlex.quote(python)} -m mapreduce_llm.cli run spec.yaml --no-progress"


_NOT_FOUND = re.compile(
    r"^[^\n]*?:\s*(?:\d+:\s*|line \d+:\s*)?(?P<command>[^\s:]+): (?:command )?not found\s*$", re.MULTILINE
)
"""A shell's "command not found" line: dash's ``/bin/sh: 1: mapreduce-llm: not found``, bash's
``bash: line 1: mapreduce-llm: command not found``."""


def diagnose(exit_code: int | None, text: str) -> str | None:
    """What went wrong before mapreduce-llm ran, from a failed job's exit code and its logs (or Ray's message, which
    ends with them), and how to fix it; None when nothing is recognised (the job's own error says it then)."""
    found = _NOT_FOUND.search(text)
    if found is None and exit_code != 127:
        if "No module named mapreduce_llm" in text:
            return (
                "the Python that ran the job has no mapreduce-llm installed: give --python the interpreter of the "
                "virtualenv mapreduce-llm is installed in on the Ray head"
            )
        return None
    command = found.group("command") if found else ""
    if "/" in command:
        return (
            f"`{command}` does not exist on the Ray head (exit code 127: command not found); give --python the path "
            "of the Python of the virtualenv mapreduce-llm is installed in there"
        )
    missing = f"`{command}`" if command else "the job's command"
    return (
        f"the Ray head could not find {missing} (exit code 127: command not found): it runs a job's command with the "
        "PATH `ray start` was started with, which did not have mapreduce-llm's virtualenv. On the head, activate the "
        "virtualenv before `ray start` (`source VENV/bin/activate`) or put VENV/bin on PATH, and restart Ray; or "
        "submit again with `--python VENV/bin/python` (the interpreter's path on the head)"
    )


class SubmissionError(MapReduceError):
    """The cluster could not be reached, refused the request, or does not know the job."""


def auth_token() -> str | None:
    """The Ray auth token for the cluster, from the environment or the token file (see module docs)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not path and os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        path = str(Path.home() / ".ray" / "auth_token")
    if path and Path(path).is_file():
        return Path(path).read_text(encoding="utf-8").strip() or None
    return None


@contextmanager
def cluster_errors(address: str) -> Iterator[None]:
    """Turn the Jobs API's failures into one-line SubmissionErrors that say what to do."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        has_token = auth_token() is not None
        reason = "the token sent was not accepted" if has_token else "token authentication is on and no token was sent"
        raise SubmissionError(
            f"the Ray cluster at {address} refused the request: {reason}; set RAY_AUTH_TOKEN to the cluster's "
            "token (or RAY_AUTH_TOKEN_PATH to a file holding it; on the head node: `ray get-auth-token`)"
        ) from exc
    except ConnectionError as exc:
        raise SubmissionError(
            f"cannot reach the Ray dashboard at {address}: {exc}; check --address (the dashboard's URL, "
            "e.g. http://127.0.0.1:8265) and that the cluster is up"
        ) from None
    except RuntimeError as exc:  # the SDK raises RuntimeError for other HTTP failures (e.g. unknown job)
        raise SubmissionError(f"the Ray cluster at {address} answered: {str(exc).strip()}") from None


def client(address: str | None) -> Any:
    """A JobSubmissionClient for ``address`` (the dashboard URL), sending the auth token when there is one."""
    from ray.job_submission import JobSubmissionClient

    if not address:
        raise SubmissionError(
            "no cluster address; give --address http://HOST:8265 (the Ray dashboard) or set RAY_API_SERVER_ADDRESS"
        )
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with cluster_errors(address):
        return JobSubmissionClient(address, headers=headers)


def package_job(spec: JobSpec, folder: Path, *, upload_input: bool = True) -> dict[str, str]:
    """Write the job's working folder (spec.yaml, prompts/, input/ when uploaded, baselines/NAME.json when the
    spec's ``monitoring.baseline`` is found here); returns job metadata.

    The spec is validated and the prompt reference resolved here, before anything reaches the cluster.
    """
    if not spec.output.is_absolute():
        raise SubmissionError(
            f"output must be an absolute path on the cluster (its shared storage), got {str(spec.output)!r}; "
            "a relative one would land in the job's temporary working folder"
        )
    prompts_root = spec.prompts_dir or default_prompts_dir()
    selection = select_prompts(spec.prompt, prompts_root)
    shutil.copytree(prompts_root, folder / "prompts", ignore=shutil.ignore_patterns(".*", "__pycache__"))
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_none=True)
    data["prompts_dir"] = "prompts"
    data["job_id"] = spec.resolved_job_id
    if upload_input and spec.input.exists():
        upload_input_files(spec.input, folder / "input", follow_symlinks=spec.follow_symlinks)
        data["input"] = f"input/{spec.input.name}"
    baseline = spec.monitoring.baseline
    if baseline is not None:
        found = BaselineStore(spec.monitoring.baselines_dir).path(baseline)
        if found.is_file():  # else the baselines folder is a path on the cluster
            (folder / "baselines").mkdir()
            shutil.copy2(found, folder / "baselines" / found.name)
            data["monitoring"]["baselines_dir"] = "baselines"
    (folder / "spec.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return {
        "job_id": spec.resolved_job_id,
        "task": selection.base.task,
        "prompt": spec.prompt,
        "prompt_versions": ",".join(ref.version for ref in selection.versions),
        "output": str(spec.output),
        "mapreduce_llm_version": version("mapreduce-llm"),
    }


def upload_input_files(source: Path, into: Path, *, follow_symlinks: bool = False) -> Path:
    """Copy the input into ``into`` as the reader would read it here; returns the copy's path.

    A JSONL or text file is copied as it is. Of a folder, exactly the files the reader would open are copied,
    with their relative paths (the reader's own folder walk decides): no hidden files, no FIFOs, sockets or
    devices, no symbolic link leaving the folder nor what it points to — unless ``follow_symlinks``, when the
    target's content is copied under the link's name. The copy holds regular files only, so the cluster reads
    the same documents whatever its own settings. Entries that would only become error records here
    (``unsupported_file``, ``symlink``, ``not_a_regular_file``, ``unreadable``) are left out, so a cluster run
    has no record for them. Raises ConfigError when the input is not a regular file or folder.
    """
    target = into / source.name
    into.mkdir(parents=True, exist_ok=True)
    if input_kind(source) != "folder":
        shutil.copy2(source, target)
        return target
    target.mkdir()
    for entry in walk_folder(source, follow_symlinks=follow_symlinks):
        if entry.read_from is None:
            continue
        dest = target / entry.relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(entry.read_from, dest)
        except OSError:
            continue  # vanished or unreadable since it was listed: here it would be an `unreadable` record
    return target


def submit(
    spec: JobSpec,
    address: str | None,
    *,
    env: dict[str, str] | None = None,
    upload_input: bool = True,
    submission_id: str | None = None,
    python: str | None = None,
) -> str:
    """Submit ``spec`` as a Ray job on the cluster at ``address``; returns the submission id. ``python``: the path
    of the head's interpreter to run the job with (see :func:`entrypoint`)."""
    command = entrypoint(python)
    jobs = client(address)
    env_vars = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    with tempfile.TemporaryDirectory(prefix="mapreduce-llm-submit-") as tmp:
        metadata = package_job(spec, Path(tmp), upload_input=upload_input)
        with cluster_errors(str(address)):
            submitted: str = jobs.submit_job(
                entrypoint=command,
                runtime_env={"working_dir": tmp, "env_vars": env_vars},
                metadata=metadata,
                submission_id=submission_id,
            )
    return submitted


def job_info(address: str | None, submission_id: str) -> Any:
    """Ray's JobDetails for one submission (status, message, times, metadata)."""
    jobs = client(address)
    with cluster_errors(str(address)):
        return jobs.get_job_info(submission_id)


def list_jobs(address: str | None) -> list[Any]:
    """Every job the cluster knows, oldest first."""
    jobs = client(address)
    with cluster_errors(str(address)):
        found: list[Any] = jobs.list_jobs()
    return sorted(found, key=lambda job: job.start_time or 0)


def job_logs(address: str | None, submission_id: str) -> str:
    """The job's driver output so far."""
    jobs = client(address)
    with cluster_errors(str(address)):
        logs: str = jobs.get_job_logs(submission_id)
    return logs


def follow_logs(address: str | None, submission_id: str, write: Callable[[str], None]) -> None:
    """Stream the job's driver output to ``write`` until the job ends."""
    jobs = client(address)

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(submission_id):
            write(chunk)

    with cluster_errors(str(address)):
        asyncio.run(tail())


def stop_job(address: str | None, submission_id: str) -> bool:
    """Ask the cluster to stop a job; False if it had already ended."""
    jobs = client(address)
    with cluster_errors(str(address)):
        stopped: bool = jobs.stop_job(submission_id)
    return stopped
