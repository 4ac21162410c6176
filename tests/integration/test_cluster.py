"""Jobs on a real Ray cluster with token authentication, through `mapreduce-llm cluster submit/status/logs/list`.

The job that runs there (with monitoring in its spec) is in test_cluster_monitoring.py, on this module's head.

A Ray head (`ray start --head --block`) runs on loopback in its own process session, with its own temp
folder and ports outside Ray's worker port range, so it does not meet the Ray that other integration tests
start inside pytest. It is stopped by process id at the end (never `ray stop`, which would end every Ray on
the machine).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mapreduce_llm.service.ray_head import free_ports

BIN = Path(sys.executable).parent
STARTUP_S = 120
JOB_S = 600  # an engine start and one document; generous for a machine shared with other work


@dataclass
class Cluster:
    address: str
    token: str
    env: dict[str, str]
    """Environment of a client that has the token (and RAY_AUTH_MODE=token)."""


def _session_pids(sid: int) -> list[int]:
    """Every process in the session the head was started in (Ray's daemons and workers stay in it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A one-node Ray cluster with token auth and the dashboard on 127.0.0.1."""
    root = tmp_path_factory.mktemp("cluster")
    # Ray's unix sockets live under its temp folder, and their paths must stay under 108 bytes.
    ray_tmp = Path(tempfile.mkdtemp(prefix="mr-ray-", dir="/tmp"))
    token = secrets.token_hex(32)
    token_file = root / "auth_token"
    token_file.write_text(token)
    gcs, dashboard, agent, agent_grpc, metrics, runtime_env, client = free_ports(26379, 7)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("RAY_ADDRESS", None)
    command = [
        str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--num-cpus", "2", "--temp-dir", str(ray_tmp), "--disable-usage-stats",
        "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env),
        "--ray-client-server-port", str(client), "--min-worker-port", "33000", "--max-worker-port", "33999",
    ]  # fmt: skip
    log_path = root / "head.log"
    with log_path.open("wb") as log:
        head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited with {head.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                answer = httpx.get(f"{address}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=2)
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Ray dashboard not up after {STARTUP_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        client_env = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN_PATH"} | {"RAY_AUTH_TOKEN": token}
        yield Cluster(address=address, token=token, env=client_env)
    finally:
        sid = head.pid
        os.killpg(sid, signal.SIGTERM)  # `ray start --block` stops its daemons on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
        deadline = time.monotonic() + 20
        while _session_pids(sid) and time.monotonic() < deadline:
            time.sleep(1)
        for pid in _session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mapreduce-llm"), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_submission_without_token_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    """No token: a one-line explanation and exit status 1, not a traceback."""
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    src = tmp_path / "doc.txt"
    src.write_text("Ray runs Python code on a cluster.")
    done = _cli(
        env, "cluster", "submit", "--input", str(src), "--output", str(tmp_path / "out"), "--address", cluster.address
    )
    assert done.returncode == 1
    assert "refused the request" in done.stderr and "RAY_AUTH_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr
