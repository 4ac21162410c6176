"""A real Prometheus and Pushgateway for integration tests: Debian's ``prometheus`` and ``prometheus-pushgateway`` on
loopback ports, each in a temp folder of the test, stopped at the end of the ``with`` block."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

RULES = [ROOT / "monitoring" / "rules" / "recording.yml", ROOT / "monitoring" / "rules" / "alerts.yml"]
"""The shipped rule files."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require(*executables: str) -> None:
    """Fail the test (not skip it) when a server is not installed, saying how to install it."""
    for exe in executables:
        if shutil.which(exe) is None:
            pytest.fail(f"{exe} is not installed: `apt-get install prometheus prometheus-pushgateway` (.ci/run does)")


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {seconds} s")


@contextlib.contextmanager
def _running(command: list[str], log: Path, ready_url: str) -> Iterator[None]:
    with log.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_ready(ready_url, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def pushgateway(root: Path, port: int | None = None) -> Iterator[str]:
    """A Pushgateway holding what is pushed in memory only; yields its URL."""
    require("prometheus-pushgateway")
    port = port or free_port()
    # Memory only: Debian's default --persistence.file is shared by every Pushgateway on the machine.
    command = ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]
    with _running(command, root / "pushgateway.log", f"http://127.0.0.1:{port}/-/ready"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def prometheus(root: Path, scrape_configs: list[dict[str, Any]], *, rules: bool = False) -> Iterator[str]:
    """A Prometheus scraping ``scrape_configs`` every second (with the shipped rules, evaluated every second, when
    ``rules``); yields its URL."""
    require("prometheus")
    port = free_port()
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": scrape_configs,
    }
    if rules:
        config["rule_files"] = [str(path) for path in RULES]
    (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    command = [
        "prometheus",
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _running(command, root / "prometheus.log", f"http://127.0.0.1:{port}/-/ready"):
        yield f"http://127.0.0.1:{port}"


def static(job: str, port: int, *, honor_labels: bool = False) -> dict[str, Any]:
    """A scrape config for one loopback target."""
    config: dict[str, Any] = {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
    if honor_labels:
        config["honor_labels"] = True
    return config


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """The result vector of an instant query."""
    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=5) as r:
        body = json.loads(r.read().decode())
    assert body["status"] == "success", body
    return list(body["data"]["result"])
