"""`cluster` commands (cli/cluster.py): Ray jobs submitted, followed, stopped and listed through the Jobs API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mapreduce_llm.cli import Library, cli
from mapreduce_llm.config import JobSpec
from mapreduce_llm.submission import SubmissionError


@dataclass
class Details:
    """What Ray's JobDetails holds that the commands print."""

    status: str
    message: str | None = None
    metadata: dict[str, str] | None = None
    submission_id: str | None = "raysubmit_1"
    job_id: str | None = None
    driver_exit_code: int | None = None


@dataclass
class FakeRayJobs:
    """A Ray Jobs API double: records every call as ``(name, address, arguments)`` and answers from its fields."""

    calls: list[tuple[str, str | None, Any]] = field(default_factory=list)
    info: Details = field(default_factory=lambda: Details("RUNNING", "working", {"task": "qa", "job_id": "j1"}))
    log_chunks: tuple[str, ...] = ("first line\n", "second line\n")
    jobs: list[Details] = field(
        default_factory=lambda: [
            Details("SUCCEEDED", metadata={"prompt": "qa@1.0.0", "job_id": "j1"}),
            Details("PENDING"),
        ]
    )

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
        self.calls.append(("submit", address, (spec.model_dump(), env, upload_input, submission_id, python)))
        return submission_id or "raysubmit_1"

    def job_info(self, address: str | None, submission_id: str) -> Any:
        self.calls.append(("job_info", address, submission_id))
        return self.info

    def job_logs(self, address: str | None, submission_id: str) -> str:
        self.calls.append(("job_logs", address, submission_id))
        return "".join(self.log_chunks)

    def follow_logs(self, address: str | None, submission_id: str, write: Callable[[str], None]) -> None:
        self.calls.append(("follow_logs", address, submission_id))
        for chunk in self.log_chunks:
            write(chunk)

    def stop_job(self, address: str | None, submission_id: str) -> bool:
        self.calls.append(("stop_job", address, submission_id))
        return submission_id == "raysubmit_1"

    def list_jobs(self, address: str | None) -> list[Any]:
        self.calls.append(("list_jobs", address, None))
        return self.jobs


def _cluster(jobs: FakeRayJobs, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["cluster", *args], obj=Library(ray_jobs=jobs), env=env)


def test_submit_sends_the_spec_with_flags_env_and_options(tmp_path: Path) -> None:
    """`cluster submit` builds the spec from file and flags, passes --env, upload and id, and prints the id."""
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("input: docs\noutput: /data/out\nprompt: qa\n")
    jobs = FakeRayJobs()
    args = [str(spec_file), "--address", "http://h:8265", "--max-model-len", "4096", "--set", "retrieval.top_k=3"]
    args += ["--env", "A=1", "--env", "B=x=y", "--no-upload-input", "--submission-id", "mine"]
    result = _cluster(jobs, "submit", *args)
    assert result.exit_code == 0, result.output
    assert result.output == "mine\n"
    ((name, address, (spec, env, upload, submission_id, python)),) = jobs.calls
    assert (name, address, env, upload, submission_id, python) == (
        "submit",
        "http://h:8265",
        {"A": "1", "B": "x=y"},
        False,
        "mine",
        None,
    )
    assert spec["input"] == tmp_path / "docs" and spec["output"] == Path("/data/out") and spec["prompt"] == "qa"
    assert spec["engine"]["max_model_len"] == 4096 and spec["retrieval"]["top_k"] == 3


def test_submit_refuses_an_env_without_equals(tmp_path: Path) -> None:
    """--env needs KEY=VALUE: anything else is a usage error naming --env, and nothing is submitted."""
    jobs = FakeRayJobs()
    result = _cluster(jobs, "submit", "--input", str(tmp_path), "--output", "out", "--env", "A")
    assert result.exit_code == 2 and "--env" in result.output and not jobs.calls


def test_status_prints_state_message_and_metadata() -> None:
    """`cluster status` prints the state, then Ray's message and the job's metadata, sorted by key."""
    jobs = FakeRayJobs()
    result = _cluster(jobs, "status", "raysubmit_1", "--address", "http://h:8265")
    assert result.output == "raysubmit_1: RUNNING\n  working\n  job_id: j1\n  task: qa\n"
    assert jobs.calls == [("job_info", "http://h:8265", "raysubmit_1")]


def test_the_address_comes_from_the_environment() -> None:
    """Without --address the command uses $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS."""
    jobs = FakeRayJobs()
    _cluster(jobs, "status", "raysubmit_1", env={"RAY_API_SERVER_ADDRESS": "", "RAY_ADDRESS": "http://r:8265"})
    _cluster(jobs, "status", "raysubmit_1", env={"RAY_API_SERVER_ADDRESS": "http://a:8265", "RAY_ADDRESS": "x"})
    assert [address for _, address, _ in jobs.calls] == ["http://r:8265", "http://a:8265"]


@pytest.mark.parametrize(("flags", "call"), [([], "job_logs"), (["--follow"], "follow_logs")])
def test_logs_prints_the_driver_output(flags: list[str], call: str) -> None:
    """`cluster logs` prints the driver output as it is; --follow streams it until the job ends."""
    jobs = FakeRayJobs()
    result = _cluster(jobs, "logs", "raysubmit_1", "--address", "http://h", *flags)
    assert result.output == "first line\nsecond line\n" and jobs.calls == [(call, "http://h", "raysubmit_1")]


def test_stop_says_whether_the_job_was_running() -> None:
    """`cluster stop` says "stopping", or "already ended" when Ray had nothing to stop."""
    jobs = FakeRayJobs()
    assert _cluster(jobs, "stop", "raysubmit_1", "--address", "http://h").output == "raysubmit_1: stopping\n"
    assert _cluster(jobs, "stop", "raysubmit_2", "--address", "http://h").output == "raysubmit_2: already ended\n"


def test_list_prints_one_line_per_job() -> None:
    """`cluster list` prints id, status, prompt and job id per job ("-" for what a job's metadata lacks)."""
    result = _cluster(FakeRayJobs(), "list", "--address", "http://h")
    first, second = result.output.splitlines()
    assert first.split() == ["raysubmit_1", "SUCCEEDED", "qa@1.0.0", "j1"]
    assert second.split() == ["raysubmit_1", "PENDING", "-", "-"]


def test_the_real_api_needs_an_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --address or $RAY_ADDRESS the real Jobs API says what to give."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    result = CliRunner().invoke(cli, ["cluster", "status", "raysubmit_x"])
    assert isinstance(result.exception, SubmissionError) and "--address" in str(result.exception)


def test_submit_passes_the_heads_python(tmp_path: Path) -> None:
    """--python (or $MAPREDUCE_LLM_CLUSTER_PYTHON) reaches the Jobs API call: the job then does not need the head's
    PATH."""
    jobs = FakeRayJobs()
    args = ["--input", str(tmp_path), "--output", "/data/out", "--address", "http://h:8265"]
    assert _cluster(jobs, "submit", *args, "--python", "/opt/venv/bin/python").exit_code == 0
    env = {"MAPREDUCE_LLM_CLUSTER_PYTHON": "/srv/env/bin/python"}
    assert _cluster(jobs, "submit", *args, env=env).exit_code == 0
    assert [call[2][4] for call in jobs.calls] == ["/opt/venv/bin/python", "/srv/env/bin/python"]


def test_status_of_a_job_whose_command_was_not_found_says_what_to_do() -> None:
    """A FAILED job with exit code 127: `cluster status` prints Ray's message, then what was missing and the fixes
    (activate the virtualenv before `ray start`, or --python)."""
    message = "Job entrypoint command failed with exit code 127, ...\n/bin/sh: 1: mapreduce-llm: not found"
    jobs = FakeRayJobs(info=Details("FAILED", message, driver_exit_code=127))
    result = _cluster(jobs, "status", "raysubmit_1", "--address", "http://h")
    last = result.output.splitlines()[-1]
    assert last.startswith("  what to do: the Ray head could not find `mapreduce-llm`")
    assert "before `ray start`" in last and "--python VENV/bin/python" in last


def test_status_of_a_job_that_failed_on_its_own_has_no_hint() -> None:
    """A job that failed with its own error (exit 1), or is still running, gets no hint."""
    for info in (Details("FAILED", "error: input /x does not exist", driver_exit_code=1), Details("RUNNING")):
        result = _cluster(FakeRayJobs(info=info), "status", "raysubmit_1", "--address", "http://h")
        assert "what to do" not in result.output


@pytest.mark.parametrize("flags", [[], ["--follow"]])
def test_logs_that_show_the_command_was_not_found_say_what_to_do(flags: list[str]) -> None:
    """`cluster logs` (and --follow) prints the output as it is, then on stderr what to do when the shell did not
    find the job's command."""
    jobs = FakeRayJobs(
        log_chunks=(
            "Running entrypoint for job x: mapreduce-llm run spec.yaml\n",
            "/bin/sh: 1: ",
            "mapreduce-llm: not found\n",
        )
    )
    result = _cluster(jobs, "logs", "raysubmit_1", "--address", "http://h", *flags)
    assert result.stdout.endswith("/bin/sh: 1: mapreduce-llm: not found\n")
    assert result.stderr.startswith("what to do: the Ray head could not find `mapreduce-llm`")
