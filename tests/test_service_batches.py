"""The batch lifecycle (mapreduce_llm.service.batches) over a fake job runner and a fake clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mapreduce_llm.service.batches import Batches
from mapreduce_llm.service.formats import BatchCreate
from mapreduce_llm.service.limits import ApiError, ServiceLimits
from tests.service_helpers import Service, line, make_service


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return make_service(tmp_path)


def test_a_batch_runs_as_a_job_and_counts_move_while_it_runs(service: Service) -> None:
    """validating → in_progress → completed; request_counts follow the job's partial log."""
    batch_id = service.create([line("a"), line("b"), line("c")], metadata={"team": "docs"})
    assert service.batches.get(batch_id).status == "validating"
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "in_progress" and batch.in_progress_at is not None
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 0, "failed": 0}
    service.runner.finish(2)
    service.batches.tick()
    assert service.batches.get(batch_id).request_counts.completed == 2
    service.runner.succeed()
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "completed" and batch.completed_at and batch.finalizing_at
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
    assert batch.metadata == {"team": "docs"} and batch.error_file_id is None
    out = service.lines(batch.output_file_id)
    assert sorted(o["custom_id"] for o in out) == ["a", "b", "c"]
    first = out[0]
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["response"]["body"]["output"] == "summarize@1.0.0: a"
    assert first["id"].startswith("batch_req_") and first["response"]["request_id"].startswith("req_")


def test_the_job_spec_comes_from_the_batch(service: Service) -> None:
    """The job reads the batch's documents (id = custom_id, question, metadata fields) and writes into the state."""
    batch_id = service.create([line("q1", question="Who?", metadata={"field": "x"})])
    service.batches.tick()
    job = service.runner.running()
    assert job.spec.prompt == "summarize@1.0.0" and job.spec.job_id == f"{batch_id}-0"
    assert job.spec.output.is_relative_to(service.store.root)
    assert job.documents() == [{"field": "x", "id": "q1", "text": "Some text to summarize.", "question": "Who?"}]


def test_bad_lines_are_rejected_one_by_one_and_the_rest_runs(service: Service) -> None:
    """Malformed JSON, another url, a duplicate custom_id, unknown body fields and prompts: each its own error."""
    lines = [
        line("ok"),
        "{not json",
        {**line("x"), "url": "/v1/chat/completions"},
        line("ok"),
        {**line("y"), "body": {"prompt": "summarize", "text": "t", "model": "gpt"}},
        line("z", prompt="nosuchtask@1.0.0"),
        {"method": "POST", "url": "/v1/mapreduce", "body": {"prompt": "summarize", "text": "t"}},
        line("w", metadata={"text": "shadow"}),
        line("v", temperature=-1),
    ]
    batch_id = service.create(lines)
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "in_progress"
    assert batch.errors is not None
    found = [(e.code, e.line, e.param) for e in batch.errors.data]
    assert found == [
        ("malformed_json", 2, None),
        ("invalid_url", 3, "url"),
        ("duplicate_custom_id", 4, "custom_id"),
        ("invalid_request", 5, "body.model"),
        ("invalid_request", 6, "body"),
        ("missing_custom_id", 7, "custom_id"),
        ("invalid_request", 8, "body.metadata.text"),
        ("invalid_request", 9, "body"),
    ]
    assert all(e.message for e in batch.errors.data)
    assert batch.request_counts.model_dump() == {"total": 9, "completed": 0, "failed": 8}
    service.runner.succeed()
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "completed"
    assert batch.request_counts.model_dump() == {"total": 9, "completed": 1, "failed": 8}
    errors = service.lines(batch.error_file_id)
    assert len(errors) == 8 and all(e["response"] is None for e in errors)
    assert [e["custom_id"] for e in errors] == [None, "x", "ok", "y", "z", None, "w", "v"]
    assert "nosuchtask" in errors[4]["error"]["message"]


def test_a_file_with_no_line_that_can_run_fails_without_a_job(service: Service) -> None:
    """Every line rejected: the batch fails at validation (as OpenAI's does) and no job is submitted."""
    batch_id = service.create(["[]", {**line("a"), "method": "GET"}])
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert [e.code for e in batch.errors.data] == ["not_an_object", "invalid_method"]  # type: ignore[union-attr]
    assert service.runner.submitted == []
    assert len(service.lines(batch.error_file_id)) == 2


def test_an_empty_file_fails(service: Service) -> None:
    """No lines at all: failed with empty_file."""
    batch_id = service.create(["", "   "])
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data[0].code == "empty_file"


def test_lines_over_the_document_limit_are_rejected(tmp_path: Path) -> None:
    """The job's limits.max_document_bytes applies to every line: too_large, without reading the line whole."""
    service = make_service(tmp_path)
    service.batches.template.settings["limits.max_document_bytes"] = 2000
    service.batches.template.base = service.batches.template.build(
        input=Path("/i"), output=Path("/o"), prompt=None, job_id="x"
    )
    batch_id = service.create([line("big", "x" * 5000), line("small")])
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.errors is not None and (batch.errors.data[0].code, batch.errors.data[0].line) == ("too_large", 1)
    assert "2,000" in batch.errors.data[0].message


def test_prompts_and_settings_group_lines_into_jobs_run_one_after_another(service: Service) -> None:
    """Two prompts and a per-request temperature: three jobs, each with its own spec, in turn."""
    lines = [line("a"), line("b", prompt="qa@1.0.0", question="Q?"), line("c", temperature=0.5), line("d")]
    batch_id = service.create(lines)
    service.batches.tick()
    first = service.runner.running()
    assert [d["id"] for d in first.documents()] == ["a", "d"]
    service.runner.succeed()
    service.batches.tick()
    second = service.runner.running()
    assert second.spec.prompt == "qa@1.0.0" and [d["id"] for d in second.documents()] == ["b"]
    assert service.batches.get(batch_id).request_counts.completed == 2
    service.runner.succeed()
    service.batches.tick()
    third = service.runner.running()
    assert third.spec.sampling.temperature == 0.5 and first.spec.sampling.temperature is None
    service.runner.succeed()
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "completed" and batch.request_counts.completed == 4
    assert sorted(o["custom_id"] for o in service.lines(batch.output_file_id)) == ["a", "b", "c", "d"]


def test_failed_documents_go_to_the_error_file_with_code_and_message(tmp_path: Path) -> None:
    """A document the job could not process: status_code 500 (engine), its result as body, code and message."""
    service = make_service(tmp_path, failing_ids=frozenset({"b"}))
    batch_id = service.create([line("a"), line("b")])
    service.batches.tick()
    service.runner.finish(2)
    service.batches.tick()
    assert service.batches.get(batch_id).request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}
    service.runner.succeed()
    service.batches.tick()
    batch = service.batches.get(batch_id)
    (error,) = service.lines(batch.error_file_id)
    assert error["custom_id"] == "b" and error["error"]["code"] == "empty_output"
    assert error["response"]["status_code"] == 500 and error["response"]["body"]["status"] == "error"
    assert [o["custom_id"] for o in service.lines(batch.output_file_id)] == ["a"]


def test_cancel_keeps_what_finished(service: Service) -> None:
    """cancelling stops the job; finished documents are in the output file, the rest batch_cancelled."""
    batch_id = service.create([line(c) for c in "abcd"])
    service.batches.tick()
    service.runner.finish(2)
    batch = service.batches.cancel(batch_id)
    assert batch.status == "cancelling" and batch.cancelling_at is not None
    assert service.batches.cancel(batch_id).status == "cancelling"  # again: the same answer
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert service.runner.stopped == [f"{batch_id}-0-1"]
    assert sorted(o["custom_id"] for o in service.lines(batch.output_file_id)) == ["a", "b"]
    errors = service.lines(batch.error_file_id)
    assert sorted(e["custom_id"] for e in errors) == ["c", "d"]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert batch.request_counts.model_dump() == {"total": 4, "completed": 2, "failed": 2}
    with pytest.raises(ApiError) as refused:
        service.batches.cancel("batch_" + "0" * 24)
    assert refused.value.status == 404


def test_a_finished_batch_cannot_be_cancelled(service: Service) -> None:
    """409 for a completed batch."""
    batch_id = service.create([line("a")])
    service.batches.tick()
    service.runner.succeed()
    service.batches.tick()
    with pytest.raises(ApiError) as refused:
        service.batches.cancel(batch_id)
    assert refused.value.status == 409


def test_cancel_while_validating_ends_without_a_job(service: Service) -> None:
    """A batch cancelled before its first tick never submits a job; its lines come back batch_cancelled."""
    batch_id = service.create([line("a")])
    service.batches.cancel(batch_id)
    service.batches.tick()
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "cancelled" and service.runner.submitted == []


def test_past_the_completion_window_the_batch_expires(service: Service) -> None:
    """expires_at = created_at + window; then the job is stopped, unfinished lines are batch_expired."""
    batch_id = service.create([line("a"), line("b")], completion_window="1h")
    batch = service.batches.get(batch_id)
    assert batch.expires_at == batch.created_at + 3600
    service.batches.tick()
    service.runner.finish(1)
    service.clock.advance(3599)
    service.batches.tick()
    assert service.batches.get(batch_id).status == "in_progress"
    service.clock.advance(2)
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "expired" and batch.expired_at is not None
    assert [o["custom_id"] for o in service.lines(batch.output_file_id)] == ["a"]
    ((error),) = service.lines(batch.error_file_id)
    assert error["custom_id"] == "b" and error["error"]["code"] == "batch_expired"


def test_a_failed_job_fails_the_batch_and_keeps_finished_documents(service: Service) -> None:
    """The Ray job fails: the batch is failed with a job_failed error; later jobs are not run."""
    batch_id = service.create([line("a"), line("b"), line("c", prompt="qa@1.0.0", question="?")])
    service.batches.tick()
    service.runner.finish(1)
    service.runner.fail("engine died")
    service.batches.tick()
    batch = service.batches.get(batch_id)
    assert batch.status == "failed" and batch.errors is not None
    assert batch.errors.data[-1].code == "job_failed" and "engine died" in batch.errors.data[-1].message
    assert len(service.runner.submitted) == 1
    assert [o["custom_id"] for o in service.lines(batch.output_file_id)] == ["a"]
    assert sorted(e["custom_id"] for e in service.lines(batch.error_file_id)) == ["b", "c"]


def test_a_job_the_cluster_lost_is_submitted_again(service: Service) -> None:
    """After a restart on a new head the job is unknown: it is sent again (and resumes from its folder)."""
    batch_id = service.create([line("a"), line("b")])
    service.batches.tick()
    service.runner.finish(1)
    service.runner.jobs.clear()
    service.batches.tick()  # missing: back to waiting
    service.batches.tick()  # submitted again
    assert service.runner.submitted == [f"{batch_id}-0-1", f"{batch_id}-0-2"]
    assert service.batches.get(batch_id).request_counts.completed == 1


def test_a_restarted_service_goes_on_with_its_batches(service: Service) -> None:
    """A new Batches over the same state folder follows the running job to the end."""
    batch_id = service.create([line("a"), line("b")])
    service.batches.tick()
    service.runner.finish(1)
    again = Batches(service.store, service.runner, service.batches.template, clock=service.clock)
    again.tick()
    assert again.get(batch_id).request_counts.completed == 1
    service.runner.succeed()
    again.tick()
    assert again.get(batch_id).status == "completed" and len(service.runner.submitted) == 1


def test_idempotency_key_returns_the_same_batch(service: Service) -> None:
    """The same key and body: the first batch; the same key with another body: 409."""
    file_id = service.upload([line("a")])
    request = BatchCreate(input_file_id=file_id, endpoint="/v1/mapreduce", completion_window="24h")
    first = service.batches.create(request, "key-1")
    assert service.batches.create(request, "key-1").id == first.id
    assert service.batches.create(request, "key-2").id != first.id
    with pytest.raises(ApiError) as reused:
        service.batches.create(request.model_copy(update={"metadata": {"a": "b"}}), "key-1")
    assert reused.value.status == 409


@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [
        ({"endpoint": "/v1/chat/completions"}, 400, "endpoint"),
        ({"completion_window": "soon"}, 400, "completion_window"),
        ({"completion_window": "30d"}, 400, "completion_window"),
        ({"input_file_id": "file-" + "0" * 24}, 404, "input_file_id"),
    ],
)
def test_create_refuses_what_cannot_run(service: Service, fields: dict[str, str], status: int, param: str) -> None:
    """Another endpoint, a bad window, an unknown file: a clear error naming the parameter."""
    data = {"input_file_id": service.upload([line("a")]), "endpoint": "/v1/mapreduce", **fields}
    with pytest.raises(ApiError) as refused:
        service.batches.create(BatchCreate(**data))
    assert (refused.value.status, refused.value.param) == (status, param)


def test_list_pages_newest_first(service: Service) -> None:
    """after= the last id of a page gives the next page; has_more says whether there is one."""
    ids = []
    for _ in range(5):
        ids.append(service.create([line("a")]))
        service.clock.advance(1)
    page, more = service.batches.page(None, 2)
    assert [b.id for b in page] == ids[::-1][:2] and more
    page, more = service.batches.page(page[-1].id, 10)
    assert [b.id for b in page] == ids[::-1][2:] and not more


def test_files_and_finished_batches_go_after_the_retention(tmp_path: Path) -> None:
    """Past retention_s: the input and output files and the finished batch are deleted; running ones stay."""
    service = make_service(tmp_path, ServiceLimits(retention_s=3600))
    batch_id = service.create([line("a")])
    service.store.save_file(
        service.store.get_file(service.batches.get(batch_id).input_file_id).model_copy(  # type: ignore[union-attr]
            update={"expires_at": int(service.clock()) + 3600}
        )
    )
    service.batches.tick()
    service.runner.succeed()
    service.batches.tick()
    running = service.create([line("b")], completion_window="24h")
    service.batches.tick()
    service.clock.advance(3601)
    service.batches.tick()
    assert service.store.get_batch(batch_id) is None
    assert service.store.list_files() == [] or all(f.purpose == "batch" for f in service.store.list_files())
    assert service.batches.get(running).status == "in_progress"
    assert json.loads((service.store.batch_dir(running) / "batch.json").read_text())["batch"]["id"] == running
