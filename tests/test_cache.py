"""RequestCache: stored outputs come back; a cache that cannot be used turns itself off with one warning."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from structlog.testing import capture_logs

from mapreduce_llm.cache import RequestCache
from mapreduce_llm.engines.base import EngineOutput
from mapreduce_llm.tokenization import HFTokenizer

OUTPUT = EngineOutput(
    request_id="r",
    text="an answer",
    prompt_tokens=5,
    completion_tokens=2,
    cumulative_logprob=-0.4,
    finish_reason="stop",
    seconds=0.1,
    cached_prompt_tokens=3,
    tokens=("an", " answer"),
    token_logprobs=(-0.1, -0.3),
)


def _warnings(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == "cache.unavailable"]


def test_an_output_comes_back_as_it_was_stored(tmp_path: Path) -> None:
    """Every field survives the round trip, tuples included; the file is created on first use."""
    path = tmp_path / "sub" / "cache.sqlite"
    with RequestCache(path) as cache:
        assert not path.exists()
        assert cache.get("k") is None
        cache.put("k", OUTPUT)
        assert cache.get("k") == OUTPUT and len(cache) == 1
        assert (cache.hits, cache.misses) == (1, 1)
    with RequestCache(path) as again:
        assert again.get("k") == OUTPUT


def test_a_file_that_is_not_a_database_turns_the_cache_off(tmp_path: Path) -> None:
    """Garbage in the file: lookups miss, writes are dropped, one warning names the file and what to do."""
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"\x00garbage" * 512)
    cache = RequestCache(path)
    with capture_logs() as logs:
        assert cache.get("k") is None
        cache.put("k", OUTPUT)
        assert cache.get("k") is None and len(cache) == 0
    (warning,) = _warnings(logs)
    assert warning["log_level"] == "warning" and warning["path"] == str(path)
    assert "not a database" in str(warning["error"]) and "cache.path" in str(warning["hint"])
    assert cache.unavailable is not None and path.read_bytes() == b"\x00garbage" * 512


def test_a_folder_that_cannot_be_made_turns_the_cache_off(tmp_path: Path) -> None:
    """The cache's folder cannot be created (a file is in the way): a warning, no exception."""
    (tmp_path / "taken").write_text("a file, not a folder")
    cache = RequestCache(tmp_path / "taken" / "cache.sqlite")
    with capture_logs() as logs:
        cache.put("k", OUTPUT)
        assert cache.get("k") is None
    assert len(_warnings(logs)) == 1


def test_a_database_locked_by_another_process_turns_the_cache_off(tmp_path: Path) -> None:
    """A lock held longer than busy_timeout_s: the write gives up, once, with a warning."""
    path = tmp_path / "cache.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # not even readers get in
    try:
        cache = RequestCache(path, busy_timeout_s=0.05)
        with capture_logs() as logs:
            cache.put("k", OUTPUT)
            cache.put("k2", OUTPUT)
            assert cache.get("k") is None
    finally:
        holder.rollback()
        holder.close()
    (warning,) = _warnings(logs)
    assert "locked" in str(warning["error"])


def test_an_unreadable_entry_is_a_miss(tmp_path: Path) -> None:
    """An entry this version cannot read is recomputed; the cache stays on."""
    path = tmp_path / "cache.sqlite"
    with RequestCache(path) as cache:
        cache.put("good", OUTPUT)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO outputs (key, output) VALUES ('bad', '{\"no_such_field\": 1}')")
    with RequestCache(path) as cache, capture_logs() as logs:
        assert cache.get("bad") is None and cache.get("good") == OUTPUT
    assert [e["event"] for e in logs] == ["cache.unreadable_entry"] and cache.unavailable is None


def test_many_threads_share_one_cache(tmp_path: Path) -> None:
    """Concurrent reads and writes from several threads all land (the connection is used under a lock)."""
    cache = RequestCache(tmp_path / "cache.sqlite")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(40):
                cache.put(f"{worker}-{i}", OUTPUT)
                assert cache.get(f"{worker}-{i}") == OUTPUT
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) == 8 * 40 and cache.unavailable is None
    cache.close()


def test_a_cache_it_cannot_use_is_reported_when_the_job_starts(tmp_path: Path) -> None:
    """check() opens the cache at once: a usable path gives None and creates the database; one this machine cannot
    create gives the reason and one warning naming the path and this host (the driver's, which opens the cache)."""
    import socket

    good = tmp_path / "shared" / "cache.sqlite"
    assert RequestCache(good).check() is None and good.is_file()
    (tmp_path / "taken").write_text("a file, not a folder")
    bad = tmp_path / "taken" / "cache.sqlite"
    with capture_logs() as logs:
        reason = RequestCache(bad).check()
    (warning,) = _warnings(logs)
    assert reason and warning["path"] == str(bad) and warning["host"] == socket.gethostname()
    assert warning["during"] == "open"


def test_a_job_whose_cache_path_it_cannot_use_warns_once_at_start_and_runs_without_it(
    tmp_path: Path, tokenizer: HFTokenizer
) -> None:
    """run_job with cache.path where this machine cannot create it: one warning when the job starts, then the job
    completes without the cache (its own cache is not tried again) and its answers are kept nowhere else."""
    from mapreduce_llm import runner
    from mapreduce_llm.config import JobSpec
    from tests.conftest import PROMPTS
    from tests.fake_embeddings import FakeEmbedder
    from tests.fakes import FakeEngine

    (tmp_path / "doc.txt").write_text("Ray schedules tasks on a cluster. Each task runs in a worker process.")
    (tmp_path / "taken").write_text("a file, not a folder")
    spec = JobSpec(
        input=tmp_path / "doc.txt",
        output=tmp_path / "out",
        prompts_dir=PROMPTS,
        cache={"path": tmp_path / "taken" / "cache.sqlite"},
    )
    engine = FakeEngine(tokenizer, respond=lambda request: "Ray runs tasks in worker processes.")
    with capture_logs() as logs:
        summary = runner.run_job(spec, engine=engine, embedder=FakeEmbedder())
    (warning,) = _warnings(logs)
    assert warning["during"] == "open" and summary.status == "completed" and engine.requests
    assert not (tmp_path / "out" / "cache.sqlite").exists()
