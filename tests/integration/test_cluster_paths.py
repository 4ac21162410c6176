"""Cluster paths as a new user meets them, on real Ray: a head started with the virtualenv's `ray start` but without
the virtualenv on PATH, and an engine replica whose model folder is not on the node it lands on.

The head is the batch service's LocalRayHead (token auth, loopback, its own temp folder and ports, stopped by its
process group); no vLLM engine is started here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mapreduce_llm.service.ray_head import LocalRayHead
from tests.conftest import PROMPTS

BIN = Path(sys.executable).parent
JOB_S = 120


@pytest.fixture(scope="module")
def bare_head() -> Iterator[LocalRayHead]:
    """A head started as `.venv/bin/ray start` from a shell that did not activate the virtualenv."""
    with LocalRayHead(num_cpus=1, venv_on_path=False, startup_s=120) as head:
        yield head


def _cli(head: LocalRayHead, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_AUTH_TOKEN": head.token, "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [str(BIN / "mapreduce-llm"), *args, "--address", head.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _submit_and_wait(head: LocalRayHead, tmp_path: Path, *flags: str) -> tuple[str, str]:
    """Submit a job whose input is a path missing on the cluster, wait for it to end (polling the Jobs API over
    HTTP, cheaper than a CLI process per poll); returns its submission id and `cluster status`'s output."""
    out = ["--input", "/nonexistent/mapreduce-llm-test/in.txt", "--no-upload-input", "--output", str(tmp_path / "out")]
    submitted = _cli(head, "cluster", "submit", *out, "--set", f"prompts_dir={PROMPTS}", *flags)
    assert submitted.returncode == 0, submitted.stderr
    submission = submitted.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + JOB_S
    headers = {"Authorization": f"Bearer {head.token}"}
    while time.monotonic() < deadline:
        job = httpx.get(f"{head.address}/api/jobs/{submission}", headers=headers, timeout=10).json()
        if job["status"] in {"SUCCEEDED", "FAILED", "STOPPED"}:
            break
        time.sleep(1)
    status = _cli(head, "cluster", "status", submission)
    assert status.returncode == 0, status.stderr
    return submission, status.stdout


def test_a_head_without_the_virtualenv_on_path_says_what_to_do(bare_head: LocalRayHead, tmp_path: Path) -> None:
    """Submitted as usual, the job fails with exit code 127, and `cluster status` and `cluster logs` say that
    `mapreduce-llm` was not found on the head and how to fix it."""
    submission, status = _submit_and_wait(bare_head, tmp_path)
    assert f"{submission}: FAILED" in status and "exit code 127" in status
    assert "what to do: the Ray head could not find `mapreduce-llm`" in status and "--python" in status
    logs = _cli(bare_head, "cluster", "logs", submission)
    assert "mapreduce-llm: not found" in logs.stdout
    assert logs.stderr.startswith("what to do: the Ray head could not find `mapreduce-llm`")


def test_with_the_heads_python_the_job_runs_there(bare_head: LocalRayHead, tmp_path: Path) -> None:
    """--python with the virtualenv's interpreter: the same head runs mapreduce-llm, which gets as far as the job's
    own error (its input is not on the cluster) and no hint about the command."""
    submission, status = _submit_and_wait(bare_head, tmp_path, "--python", str(BIN / "python"))
    assert f"{submission}: FAILED" in status and "exit code 1," in status
    assert "input /nonexistent/mapreduce-llm-test/in.txt does not exist" in status and "what to do" not in status


def test_an_engine_whose_model_is_not_on_its_node_names_the_node(tmp_path: Path) -> None:
    """A replica placed where its model folder does not exist (the driver's own check bypassed, as when only the
    driver's machine has the folder) fails the start with a ConfigError naming the node's host, Ray node id and
    IP, and the path; vLLM is never loaded. Runs on this process's Ray (a local one started for the test, or the
    one the session's engine started)."""
    import socket

    import ray

    from mapreduce_llm.config import VLLMEngineConfig
    from mapreduce_llm.engines.vllm_ray import VLLMRayEngine, ray_session
    from mapreduce_llm.errors import ConfigError

    missing = str(tmp_path / "only-on-the-driver")
    pool = VLLMRayEngine(VLLMEngineConfig(num_cpus_per_replica=0.5, startup_timeout_s=120), model=missing)
    with ray_session():
        nodes = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
        with pytest.raises(ConfigError) as info:
            pool.start()
    message = str(info.value)
    assert f"engine.model {missing!r} is not a folder on node {socket.gethostname()} (Ray node " in message
    assert any(f"(Ray node {node_id}, {ip})" in message for node_id, ip in nodes.items())
    assert "shared storage" in message and info.value.parameter == "engine.model"
