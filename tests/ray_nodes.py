"""Worker nodes joining a local Ray head on this machine, so that tests meet what a multi-node cluster does.

A :class:`WorkerNode` is ``ray start --address <head> --block`` in its own process session, with its own temp
folder, ports and resources, token auth and loopback only — a node as a second machine would run it, minus the
machine. :meth:`WorkerNode.kill` loses it as a dead machine would: every process of the node (its raylet, its
workers and whatever they started) gets SIGKILL at once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from mapreduce_llm.service.ray_head import LocalRayHead, free_ports, ray_start, stop_session


def alive_nodes(head: LocalRayHead) -> dict[str, dict[str, object]]:
    """The cluster's live nodes by node id, as the head's state API reports them."""
    answer = httpx.get(
        f"{head.address}/api/v0/nodes",
        params={"limit": 100, "detail": "true"},
        headers={"Authorization": f"Bearer {head.token}"},
        timeout=10,
    )
    answer.raise_for_status()
    nodes = answer.json()["data"]["result"]["result"]
    return {n["node_id"]: n for n in nodes if n["state"] == "ALIVE"}


class WorkerNode:
    """A Ray worker node joined to ``head`` for as long as the ``with`` block runs; ``node_id`` once it joined."""

    def __init__(
        self, head: LocalRayHead, *, num_cpus: int = 1, resources: dict[str, float] | None = None, first_port: int
    ) -> None:
        self.head = head
        self.num_cpus = num_cpus
        self.resources = resources or {}
        self.first_port = first_port
        self.node_id = ""
        self.metrics_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> WorkerNode:
        self._tmp = Path(tempfile.mkdtemp(prefix="mr-node-", dir="/tmp"))  # short: Ray's socket paths are limited
        manager, objects = free_ports(self.first_port, 2)
        options = [
            "--address", self.head.gcs_address, "--num-cpus", str(self.num_cpus),
            "--resources", json.dumps(self.resources),
            "--node-manager-port", str(manager), "--object-manager-port", str(objects),
        ]  # fmt: skip
        before = head_nodes = {}
        deadline = time.monotonic() + 60
        while not any(n.get("is_head_node") for n in head_nodes.values()):  # the head lists itself after a while
            if time.monotonic() > deadline:
                raise RuntimeError("the Ray head does not list itself as a node after 60 s")
            time.sleep(0.5)
            before = head_nodes = alive_nodes(self.head)
        # Metrics of the node's workers (the engines' vLLM metrics) reach its endpoint every 2 s instead of Ray's
        # 10 s, so a short test job shows in Prometheus.
        self._process, log_path, self.metrics_port = ray_start(
            options,
            temp_dir=self._tmp,
            token_file=self.head.token_file,
            first_port=objects + 1,
            env={"RAY_metrics_report_interval_ms": "2000"},
        )
        deadline = time.monotonic() + 120
        try:
            while not self.node_id:
                if self._process.poll() is not None:
                    raise RuntimeError(f"ray start exited with {self._process.returncode}:\n{log_path.read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker node did not join in 120 s:\n{log_path.read_text()[-3000:]}")
                joined = set(alive_nodes(self.head)) - set(before)
                if joined:
                    (self.node_id,) = joined
                else:
                    time.sleep(1)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def kill(self) -> None:
        """Lose the node: SIGKILL to its raylet, its workers and everything else of its session, at once."""
        if self._process is not None:
            stop_session(self._process, kill=True)
            self._process = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None:
            stop_session(self._process)
            self._process = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
