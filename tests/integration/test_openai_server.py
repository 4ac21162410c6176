"""The OpenAI-compatible backend against a real `vllm serve` (vLLM's OpenAI API server) of the embedded model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mapreduce_llm.config import JobSpec, OpenAIEngineConfig
from mapreduce_llm.engines import open_engine
from mapreduce_llm.engines.base import EngineRequest
from mapreduce_llm.errors import RequestError
from mapreduce_llm.model_store import EMBEDDED_MODEL_NAME, ensure_embedded_model
from mapreduce_llm.runner import run_job
from tests.conftest import PROMPTS

STARTUP_S = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` on a loopback port; yields its API root."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(ensure_embedded_model()), "--served-model-name", EMBEDDED_MODEL_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "1024", "--enforce-eager", "--block-size", "32",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve not up after {STARTUP_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its engine process (same session)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _engine(url: str) -> OpenAIEngineConfig:
    return OpenAIEngineConfig(base_url=url)


def test_server_reports_model_and_context(server: str) -> None:
    """The served model's name and context length come from the server; completions carry logprobs."""

    async def go() -> tuple[str, int, float | None, int]:
        async with open_engine(_engine(server)) as engine:
            out = await engine.generate(EngineRequest("one", [100] * 20, 4, "map"))
            return engine.info.model, engine.info.max_model_len, out.cumulative_logprob, out.prompt_tokens

    model, length, logprob, prompt_tokens = asyncio.run(go())
    assert (model, length, prompt_tokens) == (EMBEDDED_MODEL_NAME, 1024, 20)
    assert logprob is not None and logprob < 0


def test_over_long_request_fails_alone(server: str) -> None:
    """The server rejects a request over the context (HTTP 400, not retried); the next one is served."""

    async def go() -> str:
        async with open_engine(_engine(server)) as engine:
            with pytest.raises(RequestError, match="HTTP 400"):
                await engine.generate(EngineRequest("too-long", [100] * 2000, 16, "map"))
            assert engine.retries == 0
            return (await engine.generate(EngineRequest("fine", [100] * 20, 4, "map"))).request_id

    assert asyncio.run(go()) == "fine"


def test_job_runs_on_the_server(server: str, tmp_path: Path) -> None:
    """A real qa job through `run_job` with `engine.backend: openai`: exact token-id prompts, a result per document."""
    src = tmp_path / "qa.jsonl"
    text = "The meeting notes. The access code for the archive room is 4721. The room is on the third floor."
    src.write_text(json.dumps({"id": "n", "text": text, "question": "What is the access code for the archive room?"}))
    spec = JobSpec.model_validate(
        {
            "input": src,
            "output": tmp_path / "out",
            "prompt": "qa@1.0.0",
            "prompts_dir": PROMPTS,
            "engine": {"backend": "openai", "base_url": server},
            "sampling": {"reserved_output_tokens": 48},
        }
    )
    summary = run_job(spec)
    (result,) = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert summary.ok == 1 and result["status"] == "ok" and result["output"].strip()
    assert result["model"] == EMBEDDED_MODEL_NAME and result["mean_logprob"] < 0
    assert result["usage"]["requests"]["map"] == 1
