"""The scheduling that helps an engine shared by many documents: reduce-tree calls ahead of maps (request priority
and the replicas' priority slots) and the longest documents first (the job's read-ahead window)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapreduce_llm import job as job_module
from mapreduce_llm.cache import request_key
from mapreduce_llm.config import JobSpec, VLLMEngineConfig
from mapreduce_llm.documents import Document
from mapreduce_llm.engines.base import MAP_PRIORITY, REDUCE_PRIORITY, EngineOutput, EngineRequest
from mapreduce_llm.engines.client import EngineClient
from mapreduce_llm.engines.slots import PrioritySlots
from mapreduce_llm.prompts import select_prompts
from mapreduce_llm.tokenization import HFTokenizer
from tests.conftest import PROMPTS, make_job
from tests.fakes import FakeEngine


def _spec(tmp_path: Path, rows: list[dict[str, str]], **limits: int) -> JobSpec:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return JobSpec.model_validate(
        {"input": source, "output": tmp_path / "out", "prompt": "summarize", "prompts_dir": PROMPTS, "limits": limits}
    )


class StartOrderEngine(FakeEngine):
    """Notes which document each map request came from (by a marker word in its text), in arrival order."""

    def __init__(self, tokenizer: HFTokenizer, markers: list[str]) -> None:
        super().__init__(tokenizer, respond=lambda _r: "Short summary.")
        self.markers = markers
        self.mapped: list[str] = []
        self.mapped_at: list[float] = []

    async def _answer(self, request: EngineRequest) -> EngineOutput:
        if request.stage == "map":
            text = self.tokenizer.decode(request.prompt_token_ids)
            self.mapped.extend(m for m in self.markers if m in text)
            self.mapped_at.append(time.monotonic())
        return await super()._answer(request)


def test_the_longest_document_read_ahead_starts_first_and_results_keep_input_order(
    tmp_path: Path, tokenizer: HFTokenizer
) -> None:
    """One place, a window of two read ahead: the long document, then the medium one, then the short ones in
    input order; results.jsonl stays in input order."""
    sizes = {"docA": 5, "docB": 40, "docC": 20, "docD": 5, "docE": 5}
    rows = [{"id": name, "text": f"{name} is a document. " + "It says little. " * n} for name, n in sizes.items()]
    spec = _spec(tmp_path, rows, max_documents_in_flight=1, read_ahead=2)
    engine = StartOrderEngine(tokenizer, list(sizes))
    asyncio.run(make_job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine).run())
    assert engine.mapped == ["docB", "docC", "docA", "docD", "docE"]
    results = [json.loads(line) for line in (spec.output / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == list(sizes)
    assert all(r["status"] == "ok" for r in results)


def test_without_read_ahead_documents_start_in_input_order(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    sizes = {"docA": 5, "docB": 40, "docC": 20}
    rows = [{"id": name, "text": f"{name} is a document. " + "It says little. " * n} for name, n in sizes.items()]
    spec = _spec(tmp_path, rows, max_documents_in_flight=1, read_ahead=0)
    engine = StartOrderEngine(tokenizer, list(sizes))
    asyncio.run(make_job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine).run())
    assert engine.mapped == ["docA", "docB", "docC"]


def test_read_ahead_keeps_the_reorder_buffer_bounded(tmp_path: Path, tokenizer: HFTokenizer) -> None:
    """A long first document (it starts first, but finishes last): the others wait in a buffer of at most
    max_buffered_results + max_documents_in_flight + read_ahead, reading pauses meanwhile."""

    class SlowLong(FakeEngine):
        async def _answer(self, request: EngineRequest) -> EngineOutput:
            if "Zeppelin" in self.tokenizer.decode(request.prompt_token_ids):
                await asyncio.sleep(0.5)
            return await super()._answer(request)

    rows = [{"id": "long", "text": "Zeppelin airships were slow. " * 40}]
    rows += [{"id": f"d{i}", "text": f"Document {i} says little."} for i in range(120)]
    spec = _spec(tmp_path, rows, max_documents_in_flight=3, max_buffered_results=10, read_ahead=4)
    engine = SlowLong(tokenizer, respond=lambda _r: "Short summary.")
    job = make_job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine)
    asyncio.run(job.run())
    assert 10 <= job.peak_buffered <= 10 + 3 + 4
    results = [json.loads(line) for line in (spec.output / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == [r["id"] for r in rows]


def test_reduce_tree_calls_go_ahead_of_maps(tmp_path: Path, tokenizer: HFTokenizer, corpus_text: str) -> None:
    """The client gives each stage its priority: collapse and reduce calls before map calls (lower runs first)."""
    assert REDUCE_PRIORITY < MAP_PRIORITY
    spec = _spec(tmp_path, [{"id": "long", "text": corpus_text[:20_000]}])
    engine = FakeEngine(tokenizer, max_model_len=1024)
    asyncio.run(make_job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine).run())
    by_stage = {(r.stage, r.priority) for r in engine.requests}
    assert {"map", "collapse", "reduce"} <= {stage for stage, _ in by_stage}
    assert by_stage == {("map", MAP_PRIORITY), ("collapse", REDUCE_PRIORITY), ("reduce", REDUCE_PRIORITY)}
    client = EngineClient(engine, VLLMEngineConfig(), job_id="j")
    request = client.request("map", [1], max_tokens=1, temperature=0, top_p=1, repetition_penalty=1, priority=7)
    assert request.priority == 7


def test_priority_and_ignore_eos_leave_earlier_cache_keys_alone() -> None:
    """Priority changes no output, so it is not in the key; ``ignore_eos`` does, and only a set one is."""
    base = EngineRequest("r", [1, 2], 8, "map")
    key = request_key(base, "h", "m")
    assert request_key(EngineRequest("r", [1, 2], 8, "map", priority=5), "h", "m") == key
    assert request_key(EngineRequest("r", [1, 2], 8, "map", ignore_eos=True), "h", "m") != key


def test_slots_let_the_lowest_priority_value_in_first_then_by_arrival() -> None:
    async def scenario() -> list[str]:
        slots = PrioritySlots(1)
        order: list[str] = []

        async def use(name: str, priority: int) -> None:
            async with slots.hold(priority):
                order.append(name)
                await asyncio.sleep(0.01)

        first = asyncio.create_task(use("first", 1))
        await asyncio.sleep(0)  # "first" holds the only slot
        waiting = [asyncio.create_task(use(n, p)) for n, p in [("map1", 1), ("map2", 1), ("collapse", 0)]]
        await asyncio.gather(first, *waiting)
        return order

    assert asyncio.run(scenario()) == ["first", "collapse", "map1", "map2"]


def test_slots_survive_cancelled_waiters() -> None:
    """A waiter cancelled while waiting takes no slot; the slots are all free again at the end."""

    async def scenario() -> tuple[list[str], int]:
        slots = PrioritySlots(1)
        order: list[str] = []

        async def use(name: str) -> None:
            async with slots.hold(0):
                order.append(name)
                await asyncio.sleep(0.01)

        holder = asyncio.create_task(use("holder"))
        await asyncio.sleep(0)
        gone, after = asyncio.create_task(use("gone")), asyncio.create_task(use("after"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(holder, after, return_exceptions=True)
        async with slots.hold(0):  # the one slot is free again
            pass
        return order, slots.waiting

    assert asyncio.run(scenario()) == (["holder", "after"], 0)


def test_a_document_that_arrived_starts_without_waiting_for_the_next(
    tmp_path: Path, tokenizer: HFTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input that yields a document every 0.5 s: each starts when it arrives, not when the window is full."""
    docs = [Document(id=f"doc{i}", text=f"doc{i} is a document. It says little.", source=f"doc{i}") for i in range(3)]

    def arriving(*_args: object, **_kwargs: object) -> Iterator[Document]:
        for i, doc in enumerate(docs):
            if i:
                time.sleep(0.5)
            yield doc

    monkeypatch.setattr(job_module, "read_documents", arriving)
    spec = _spec(tmp_path, [], max_documents_in_flight=4, read_ahead=8)
    engine = StartOrderEngine(tokenizer, [d.id for d in docs])
    started = time.monotonic()
    asyncio.run(make_job(spec, select_prompts("summarize", PROMPTS), tokenizer, engine).run())
    assert engine.mapped == ["doc0", "doc1", "doc2"]
    assert engine.mapped_at[0] - started < 0.4  # doc0 did not wait for doc1 (0.5 s later)
    results = [json.loads(line) for line in (spec.output / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == ["doc0", "doc1", "doc2"]
