"""The command line's root (cli/__init__.py): every command's help, the old top-level names, main()'s error funnel."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from mapreduce_llm.cli import Library, cli, main
from mapreduce_llm.errors import ConfigError
from tests.conftest import PROMPTS, ROOT
from tests.test_cli_cluster import FakeRayJobs


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


COMMANDS = [(), *_commands(cli)]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "mapreduce-llm")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    """`--help` of the root, every group and every command (hidden aliases too) runs and shows its usage."""
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and " ".join(path) in result.output


def test_groups_are_nouns_and_old_ray_job_names_are_hidden() -> None:
    """The root help lists the job commands and noun groups; the old Ray-job names are not listed."""
    section = CliRunner().invoke(cli, ["--help"]).output.split("Commands:")[1]
    listed = [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()]
    for name in ("run", "plan", "schema", "prompts", "cluster", "drift", "models"):
        assert name in listed
    for name in ("submit", "status", "logs", "stop", "list"):
        assert name not in listed and cli.commands[name].hidden


@pytest.mark.parametrize(
    "args",
    [
        ["status", "raysubmit_1"],
        ["logs", "raysubmit_1"],
        ["stop", "raysubmit_1"],
        ["list"],
        ["submit", "--input", "in.txt", "--output", "out", "--env", "A=1"],
    ],
    ids=lambda args: args[0],
)
def test_old_top_level_names_still_work_with_a_note(tmp_path: Path, args: list[str]) -> None:
    """`mapreduce-llm NAME` does what `cluster NAME` does, with a one-line deprecation note on stderr only."""
    (tmp_path / "in.txt").write_text("A document.")
    args = [str(tmp_path / arg) if arg in {"in.txt", "out"} else arg for arg in args]
    runner, jobs = CliRunner(), FakeRayJobs()
    new = runner.invoke(cli, ["cluster", *args, "--address", "http://h:8265"], obj=Library(ray_jobs=jobs))
    old = runner.invoke(cli, [*args, "--address", "http://h:8265"], obj=Library(ray_jobs=jobs))
    assert new.exit_code == 0 and old.exit_code == 0, old.output
    assert old.stdout == new.stdout and jobs.calls[0] == jobs.calls[1]
    (note,) = old.stderr.splitlines()
    assert f"`mapreduce-llm {args[0]}` is now `mapreduce-llm cluster {args[0]}`" in note
    assert new.stderr == ""


def _raise(exc: BaseException) -> Any:
    def run_job(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return run_job


@pytest.mark.parametrize(
    ("exc", "status", "message"),
    [
        (ConfigError("engine.model /m does not exist; check the path", parameter="engine.model"), 1, "error: engine"),
        (KeyboardInterrupt(), 130, "aborted"),
    ],
    ids=["library error", "ctrl-c"],
)
def test_main_funnels_errors_into_one_line_and_a_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exc: BaseException, status: int, message: str
) -> None:
    """main(): a MapReduceError is one line and exit 1, Ctrl-C is "aborted" and exit 130, never a traceback."""
    (tmp_path / "a.txt").write_text("A document.")
    args = ["run", "--input", str(tmp_path / "a.txt"), "--output", str(tmp_path / "out"), "--no-progress"]
    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "error", *args], obj=Library(run_job=_raise(exc)))
    assert exited.value.code == status
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(message) and "Traceback" not in err


def test_main_shows_usage_errors_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    """main(): a usage error is click's message and exit status 2."""
    with pytest.raises(SystemExit) as exited:
        main(["run"])
    assert exited.value.code == 2 and "--input" in capsys.readouterr().err


def test_python_dash_m_runs_the_command_line() -> None:
    """`python -m mapreduce_llm.cli` is the same command line (a library error: one line, exit status 1)."""
    done = subprocess.run(
        [sys.executable, "-m", "mapreduce_llm.cli", "prompts", "show", "nope", "--dir", str(PROMPTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_the_console_script_points_at_main() -> None:
    """pyproject.toml's `mapreduce-llm` script is mapreduce_llm.cli:main."""
    assert 'mapreduce-llm = "mapreduce_llm.cli:main"' in (ROOT / "pyproject.toml").read_text()
