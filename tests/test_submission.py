"""Submission to a Ray cluster, without a cluster: packing the job, finding the token, explaining failures."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import yaml

from mapreduce_llm.config import build_spec
from mapreduce_llm.documents import Document, read_documents
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.submission import (
    ENTRYPOINT,
    SubmissionError,
    auth_token,
    diagnose,
    entrypoint,
    job_info,
    package_job,
    upload_input_files,
)
from tests.conftest import PROMPTS


def test_job_folder_carries_spec_prompts_and_input(tmp_path: Path) -> None:
    """The working folder has spec.yaml pointing at the uploaded input and prompts; metadata names the prompt."""
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    spec = build_spec({"input": src, "output": "/data/out", "prompt": "qa@1.0.0", "prompts_dir": PROMPTS})
    folder = tmp_path / "job"
    folder.mkdir()
    metadata = package_job(spec, folder)
    written = yaml.safe_load((folder / "spec.yaml").read_text())
    assert written["input"] == "input/docs" and (folder / "input" / "docs" / "a.txt").read_text() == "hello"
    assert written["prompts_dir"] == "prompts" and (folder / "prompts" / "qa" / "1.0.0.yaml").is_file()
    assert written["output"] == "/data/out" and written["job_id"] == "out"
    assert metadata["task"] == "qa" and metadata["prompt_versions"] == "1.0.0" and metadata["job_id"] == "out"
    assert ENTRYPOINT.startswith("mapreduce-llm run spec.yaml")


def test_monitoring_travels_in_the_spec_with_its_baseline(tmp_path: Path) -> None:
    """The spec's monitoring section reaches spec.yaml as it is, the entrypoint has no flag for it, and a
    baseline found here is sent along (its folder rewritten to the upload)."""
    src = tmp_path / "a.txt"
    src.write_text("hello")
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    (baselines / "week1.json").write_text("{}")
    monitoring = {"metrics_port": 9108, "metrics_host": "0.0.0.0", "pushgateway": "http://gw:9091"}
    spec = build_spec(
        {
            "input": src,
            "output": "/data/out",
            "prompts_dir": PROMPTS,
            "monitoring": {**monitoring, "baseline": "week1", "baselines_dir": str(baselines)},
        }
    )
    folder = tmp_path / "job"
    folder.mkdir()
    package_job(spec, folder)
    written = yaml.safe_load((folder / "spec.yaml").read_text())
    sent = {**monitoring, "baseline": "week1", "baselines_dir": "baselines"}
    assert sent.items() <= written["monitoring"].items()
    assert (folder / "baselines" / "week1.json").read_text() == "{}"
    assert ENTRYPOINT.split() == ["mapreduce-llm", "run", "spec.yaml", "--no-progress"]


def test_a_baseline_not_found_here_is_read_on_the_cluster(tmp_path: Path) -> None:
    """A baseline folder that does not exist here is taken as a path on the cluster and left as it is."""
    src = tmp_path / "a.txt"
    src.write_text("hello")
    monitoring = {"baseline": "week1", "baselines_dir": "/data/baselines"}
    spec = build_spec({"input": src, "output": "/data/out", "prompts_dir": PROMPTS, "monitoring": monitoring})
    folder = tmp_path / "job"
    folder.mkdir()
    package_job(spec, folder)
    written = yaml.safe_load((folder / "spec.yaml").read_text())["monitoring"]
    assert monitoring.items() <= written.items() and not (folder / "baselines").exists()


def _folder_with_links(tmp_path: Path) -> Path:
    src = tmp_path / "docs"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.md").write_text("beta")
    (src / ".hidden.txt").write_text("hidden")
    (src / "inside.txt").symlink_to("a.txt")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET")
    (src / "to_file.txt").symlink_to(outside / "secret.txt")
    (src / "to_dir").symlink_to(outside)
    os.mkfifo(src / "pipe.txt")
    return src


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _documents(path: Path, *, follow_symlinks: bool = False) -> dict[str, str]:
    items = read_documents(path, 10_000, follow_symlinks=follow_symlinks)
    return {item.id: item.text for item in items if isinstance(item, Document)}


@pytest.mark.timeout(10)
def test_upload_holds_exactly_the_files_the_reader_reads(tmp_path: Path) -> None:
    """The uploaded input has the documents a local run reads, as regular files: no link leaving the folder
    nor what it points to, no FIFO, no hidden file; the cluster reads the same documents from it."""
    src = _folder_with_links(tmp_path)
    spec = build_spec({"input": src, "output": "/data/out", "prompts_dir": PROMPTS})
    folder = tmp_path / "job"
    folder.mkdir()
    package_job(spec, folder)
    uploaded = folder / "input" / "docs"
    assert _files(uploaded) == {"a.txt": b"alpha", "inside.txt": b"alpha", "sub/b.md": b"beta"}
    assert not any(p.is_symlink() for p in uploaded.rglob("*"))
    assert all(b"SECRET" not in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert _documents(uploaded) == _documents(src)


@pytest.mark.timeout(10)
def test_upload_with_follow_symlinks_copies_link_targets(tmp_path: Path) -> None:
    """With follow_symlinks the targets' content is uploaded under the links' names, as regular files."""
    src = _folder_with_links(tmp_path)
    uploaded = upload_input_files(src, tmp_path / "job" / "input", follow_symlinks=True)
    assert _files(uploaded) == {
        "a.txt": b"alpha",
        "inside.txt": b"alpha",
        "sub/b.md": b"beta",
        "to_file.txt": b"SECRET",
        "to_dir/secret.txt": b"SECRET",
    }
    assert _documents(uploaded) == _documents(src, follow_symlinks=True)


@pytest.mark.timeout(10)
def test_a_fifo_input_is_refused_before_upload(tmp_path: Path) -> None:
    """A FIFO given as the input is a ConfigError at packaging time, not a copy that blocks."""
    os.mkfifo(tmp_path / "in.jsonl")
    spec = build_spec({"input": tmp_path / "in.jsonl", "output": "/data/out", "prompts_dir": PROMPTS})
    (tmp_path / "job").mkdir()
    with pytest.raises(ConfigError, match="is a FIFO"):
        package_job(spec, tmp_path / "job")


def test_input_on_the_cluster_is_left_as_a_path(tmp_path: Path) -> None:
    """--no-upload-input (or an input that is not here): the path is read on the cluster."""
    spec = build_spec({"input": "/mnt/corpus", "output": "/data/out", "prompts_dir": PROMPTS})
    metadata = package_job(spec, tmp_path, upload_input=True)
    assert yaml.safe_load((tmp_path / "spec.yaml").read_text())["input"] == "/mnt/corpus"
    assert metadata["task"] == "summarize"


def test_relative_output_is_refused(tmp_path: Path) -> None:
    """Results must go to a path on the cluster, not into the job's temporary working folder."""
    spec = build_spec({"input": "/mnt/corpus", "output": "out", "prompts_dir": PROMPTS})
    with pytest.raises(SubmissionError, match="output must be an absolute path on the cluster"):
        package_job(spec, tmp_path)


def test_token_from_environment_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RAY_AUTH_TOKEN wins; else RAY_AUTH_TOKEN_PATH; else ~/.ray/auth_token only with RAY_AUTH_MODE=token."""
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-token\n")
    assert auth_token() is None
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert auth_token() == "home-token"
    (tmp_path / "t").write_text("file-token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert auth_token() == "file-token"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")
    assert auth_token() == "env-token"


def test_unreachable_cluster_is_explained() -> None:
    """Nothing listening at the address: SubmissionError naming it and what to check."""
    with pytest.raises(SubmissionError, match=r"cannot reach the Ray dashboard at http://127\.0\.0\.1:9"):
        job_info("http://127.0.0.1:9", "raysubmit_x")


def test_an_address_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an address or $RAY_ADDRESS, SubmissionError says what to give (the `cluster` commands show it)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    with pytest.raises(SubmissionError, match="--address"):
        job_info(None, "raysubmit_x")


def test_with_the_heads_python_the_job_does_not_need_the_heads_path() -> None:
    """entrypoint(None) is `mapreduce-llm` from the head's PATH; with an interpreter path it runs the package with
    that interpreter (quoted); a relative interpreter is refused, saying what to give."""
    assert entrypoint() == ENTRYPOINT
    command = entrypoint("/opt/my venv/bin/python")
    assert shlex.split(command) == [
        "/opt/my venv/bin/python",
        "-m",
        "mapreduce_llm.cli",
        "run",
        "spec.yaml",
        "--no-progress",
    ]
    with pytest.raises(SubmissionError, match=r"absolute path of the Python on the Ray head"):
        entrypoint("python3")


# What Ray 2.60 recorded for a job submitted to a head whose PATH lacked the virtualenv (dash as /bin/sh): the
# job's status message (driver_exit_code 127) ends with its logs. A bash head says "command not found".
RECORDED_127 = (
    "Job entrypoint command failed with exit code 127, last available logs (truncated to 20,000 chars):\n"
    "Running entrypoint for job raysubmit_EaShb3NMVCTnmtmE: mapreduce-llm run spec.yaml --no-progress\n"
    "/bin/sh: 1: mapreduce-llm: not found\n"
)


@pytest.mark.parametrize(
    ("exit_code", "text", "said"),
    [
        (127, RECORDED_127, "could not find `mapreduce-llm` (exit code 127"),
        (None, "bash: line 1: mapreduce-llm: command not found\n", "could not find `mapreduce-llm`"),
        (127, "", "could not find the job's command"),
        (127, "/bin/sh: 1: /opt/venv/bin/python: not found\n", "`/opt/venv/bin/python` does not exist on the Ray head"),
        (1, "/usr/bin/python3: No module named mapreduce_llm.cli\n", "has no mapreduce-llm installed"),
    ],
)
def test_a_job_whose_command_was_not_found_says_what_to_do(exit_code: int | None, text: str, said: str) -> None:
    """Exit code 127 or a shell's "not found" line in the logs: what was missing and how to fix it (activate the
    virtualenv before `ray start`, or --python); a missing module names --python."""
    hint = diagnose(exit_code, text)
    assert hint is not None and said in hint and "--python" in hint
    if "could not find" in said:
        assert "activate the virtualenv before `ray start`" in hint


def test_a_job_that_failed_on_its_own_gets_no_hint() -> None:
    """A job that ran and failed (its own one-line error, exit 1) is left to its message."""
    assert diagnose(1, "error: input /data/in does not exist; check the path\n") is None
    assert diagnose(0, "1 ok, 0 errors of 1 documents\n") is None
