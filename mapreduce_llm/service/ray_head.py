"""The service's own Ray head, when it is given no cluster: one node on loopback, token auth on.

``ray start --head --block`` runs in its own process session, with a fresh random token (in a file of its
own temp folder, never ``~/.ray/auth_token``), its own temp folder and every port chosen free above Ray's worker
port range (10002-19999 by default), so it never meets another Ray on the machine. It is stopped by its process
group (never ``ray stop``, which would end every Ray of the user).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
import structlog

from mapreduce_llm.errors import MapReduceError

log = structlog.get_logger("mapreduce_llm.service")

FIRST_PORT = 46379
"""Ports are looked for from here up (outside Ray's default worker ports, 10002-19999)."""


STOP_GRACE_S = 15.0
"""How long a stopping Ray node's processes get to exit after SIGTERM before they are killed (its engines hold no
state worth waiting for: finished work is in the jobs' output folders)."""


class RayHeadError(MapReduceError):
    """The local Ray head did not start."""


def free_ports(low: int, count: int) -> list[int]:
    """``count`` loopback ports that are free now, from ``low`` up."""
    ports: list[int] = []
    for port in range(low, low + 5000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RayHeadError(f"not {count} free loopback ports from {low}")


def ray_start(
    options: list[str],
    *,
    temp_dir: Path,
    token_file: Path,
    first_port: int,
    venv_on_path: bool = True,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], Path, int]:
    """Start ``ray start --block <options>`` on loopback with token auth, in its own process session.

    Used for the local head (``options`` has ``--head`` and its ports) and, by the tests, for worker nodes joining it
    (``--address``). The node's own ports (agent, metrics, runtime env, workers) are chosen free from
    ``first_port`` up; its temp folder is ``temp_dir``; its output goes to ``temp_dir/node.log``. ``venv_on_path``
    False leaves the virtualenv's ``bin`` off PATH (as someone who did not activate it); ``env`` adds variables.
    Returns the process (stop it with :func:`stop_session`), its log and its metrics export port.
    """
    agent, agent_grpc, metrics, runtime_env = free_ports(first_port, 4)
    workers = free_ports(runtime_env + 1, 1)[0]
    bin_dir = Path(sys.executable).parent
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != bin_dir]
    process_env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bin_dir), *path] if venv_on_path else path),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        **(env or {}),
    }
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", *(() if venv_on_path else ("VIRTUAL_ENV",))):
        process_env.pop(key, None)
    command = [
        str(bin_dir / "ray"), "start", "--block", *options, "--node-ip-address", "127.0.0.1",
        "--temp-dir", str(temp_dir), "--disable-usage-stats",
        "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env),
        "--min-worker-port", str(workers), "--max-worker-port", str(workers + 499),
    ]  # fmt: skip
    log_path = temp_dir / "node.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own ray executable, fixed arguments
            command, stdout=out, stderr=subprocess.STDOUT, env=process_env, start_new_session=True
        )
    return process, log_path, metrics


class LocalRayHead:
    """A one-node, token-auth Ray head on loopback for as long as the ``with`` block runs.

    ``address`` is its dashboard (Jobs API) URL and ``token`` its auth token. ``num_cpus`` None: the machine's.
    ``venv_on_path`` False starts it as someone who ran the virtualenv's ``ray`` without activating the virtualenv
    (its ``bin`` off PATH, as the jobs then see it); by default it is put first on PATH, so jobs find ``mapreduce-llm``.
    """

    def __init__(
        self,
        *,
        num_cpus: int | None = None,
        startup_s: float = 180.0,
        first_port: int = FIRST_PORT,
        venv_on_path: bool = True,
    ) -> None:
        self.num_cpus = num_cpus or os.cpu_count() or 1
        self.startup_s = startup_s
        self.first_port = first_port
        self.venv_on_path = venv_on_path
        self.token = secrets.token_hex(32)
        self.address = ""
        """The dashboard's URL (Jobs API), once started."""
        self.gcs_address = ""
        """``127.0.0.1:<port>``, what ``ray start --address`` of a node joining this head is given."""
        self.metrics_port = 0
        """The head node's Ray metrics export port (Prometheus format)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None

    @property
    def temp_dir(self) -> Path:
        """The head's Ray temp folder (its session folder and Prometheus service-discovery file are in it)."""
        if self._tmp is None:
            raise RayHeadError("the Ray head is not running")
        return self._tmp

    @property
    def service_discovery_file(self) -> Path:
        """Where the head lists every node's metrics endpoint for Prometheus (``file_sd_configs``)."""
        return self.temp_dir / "prom_metrics_service_discovery.json"

    @property
    def token_file(self) -> Path:
        """The file holding the token, for ``RAY_AUTH_TOKEN_PATH`` of a node joining this head."""
        return self.temp_dir / "auth_token"

    def __enter__(self) -> LocalRayHead:
        # Ray's unix sockets live under its temp folder, and their paths must stay under 108 bytes.
        self._tmp = Path(tempfile.mkdtemp(prefix="mr-serve-ray-", dir="/tmp"))
        token_file = self._tmp / "auth_token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        gcs, dashboard, client = free_ports(self.first_port, 3)
        head_options = [
            "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
            "--ray-client-server-port", str(client), "--num-cpus", str(self.num_cpus),
        ]  # fmt: skip
        self._process, log_path, self.metrics_port = ray_start(
            head_options,
            temp_dir=self._tmp,
            token_file=token_file,
            first_port=client + 1,
            venv_on_path=self.venv_on_path,
        )
        self.address = f"http://127.0.0.1:{dashboard}"
        self.gcs_address = f"127.0.0.1:{gcs}"
        log.info("ray_head.starting", address=self.address, temp_dir=str(self._tmp))
        try:
            self._wait(log_path)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        log.info("ray_head.ready", address=self.address)
        return self

    def _wait(self, log_path: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_s
        while True:
            if self._process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RayHeadError(f"ray start exited with {self._process.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(
                    f"{self.address}/api/jobs/", headers={"Authorization": f"Bearer {self.token}"}, timeout=2
                )
                if answer.status_code == 200:
                    return
            if time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RayHeadError(f"the local Ray head did not answer within {self.startup_s:.0f} s:\n{tail}")
            time.sleep(1)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_session(process)
            log.info("ray_head.stopped", address=self.address)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def stop_session(process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """Stop a ``ray start --block`` started in its own process session, with everything it started (Ray's daemons
    and workers stay in that session): SIGTERM to the group, then SIGKILL to what is left after ``STOP_GRACE_S``.
    ``kill``: SIGKILL at once, every process of the session — the node is lost, as when its machine dies."""
    sid = process.pid
    if kill:
        for pid in _session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sid, signal.SIGTERM)  # `ray start --block` stops its daemons on SIGTERM
    deadline = time.monotonic() + STOP_GRACE_S
    while _session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


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
