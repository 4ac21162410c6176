"""Runs a real Job against a slow engine double in its own process, so tests can kill the driver.

    python -m tests.job_with_fake_engine INPUT OUTPUT REQUEST_LOG [DELAY_S]

Every request the engine receives is appended to REQUEST_LOG (one cache key per line, flushed) before it
is answered.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mapreduce_llm.cache import request_key
from mapreduce_llm.config import JobSpec
from mapreduce_llm.engines.base import EngineOutput, EngineRequest
from mapreduce_llm.job import Job
from mapreduce_llm.model_store import ensure_embedded_model
from mapreduce_llm.prompts import prompt_hash, select_prompts
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS
from tests.fake_embeddings import FakeEmbedder
from tests.fakes import FakeEngine

PROMPT = "summarize@1.0.0"


def version_hash() -> str:
    """The content hash the Job uses for the prompt version in cache keys."""
    return prompt_hash(select_prompts(PROMPT, PROMPTS).base.file)


class LoggingEngine(FakeEngine):
    """Slow engine double that records the cache key of every request it receives."""

    def __init__(self, tokenizer: HFTokenizer, log_path: Path, delay: float) -> None:
        super().__init__(tokenizer, max_model_len=1024)
        self.log = log_path.open("a", encoding="utf-8")
        self.delay = delay
        self.hash = version_hash()

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        self.log.write(request_key(request, self.hash, self.info.model) + "\n")
        self.log.flush()
        os.fsync(self.log.fileno())
        await asyncio.sleep(self.delay)
        return await super()._answer(request)


def main() -> None:
    source, output, log_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
    spec = JobSpec.model_validate(
        {"input": source, "output": output, "prompt": PROMPT, "prompts_dir": PROMPTS, "engine": {"max_model_len": 1024}}
    )
    tokenizer = HFTokenizer(ensure_embedded_model())
    engine = LoggingEngine(tokenizer, log_path, delay)
    job = Job(spec, select_prompts(PROMPT, PROMPTS), tokenizer, engine, embedder=FakeEmbedder())
    summary = asyncio.run(job.run())
    print(f"ok={summary.ok} from_cache={summary.requests_from_cache} sent={summary.requests_sent}")


if __name__ == "__main__":
    main()
