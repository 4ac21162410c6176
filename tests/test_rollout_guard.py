"""The rollout guard (prompts/guard.py, evidence.py), label history (history.py) and labels.yaml round trips."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from mapreduce_llm.errors import ConfigError, PromptError
from mapreduce_llm.prompts import load_labels, promote, set_rollout
from mapreduce_llm.prompts.evidence import EvidenceError, PrometheusEvidence, ResultsEvidence, results_figures
from mapreduce_llm.prompts.guard import Figures, GuardConfig, decide, judge, report_lines
from mapreduce_llm.prompts.history import HistoryEntry, append_history, current_user, entry_line, read_history
from tests.conftest import PROMPTS
from tests.rollout_records import documents, write_results

DEFAULTS = GuardConfig()


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    """A private copy of the shipped prompts/ folder to edit."""
    root = tmp_path / "prompts"
    shutil.copytree(PROMPTS, root, ignore=shutil.ignore_patterns("history.jsonl"))  # the shipped history is not ours
    return root


def _figures(version: str, documents: int = 100, **kw: float | int | None) -> Figures:
    base: dict[str, float | int | None] = {
        "errors": 2,
        "not_found": 10,
        "map_answers": 200,
        "parse_failures": 4,
        "mean_confidence": 0.6,
        "drift_score": 0.05,
    }
    base.update(kw)
    return Figures(version=version, source="test", documents=documents, **base)  # type: ignore[arg-type]


def test_guard_thresholds_have_defaults_and_labels_yaml_overrides_them(prompts: Path) -> None:
    """Without `guard:` the defaults apply; a `guard:` section overrides only what it names; bad values are named."""
    assert load_labels(prompts, "qa").guard is None
    assert (DEFAULTS.min_documents, DEFAULTS.first_step, DEFAULTS.error_rate) == (20, 10, 0.05)
    (prompts / "qa" / "labels.yaml").write_text("labels: {production: 1.0.0}\nguard: {error_rate: 0.2}\n")
    guard = load_labels(prompts, "qa").guard
    assert guard is not None and guard.error_rate == 0.2 and guard.mean_confidence == DEFAULTS.mean_confidence
    (prompts / "qa" / "labels.yaml").write_text("labels: {production: 1.0.0}\nguard: {error_rate: -1}\n")
    with pytest.raises(PromptError, match=r"field 'guard\.error_rate'"):
        load_labels(prompts, "qa")


def test_a_healthy_canary_passes() -> None:
    """A canary within every threshold passes; the table shows every metric with both values and the threshold."""
    report = judge("qa", _figures("1.0.0"), _figures("1.1.0", errors=4, mean_confidence=0.55), DEFAULTS)
    assert report.decision == "pass"
    lines = report_lines(report)
    assert lines[1].split() == ["metric", "production", "canary", "threshold", "verdict"]
    assert ["error_rate", "0.0200", "0.0400", "+0.05", "ok"] in [line.split() for line in lines]
    assert lines[-1].startswith("decision: pass: canary within every threshold")


@pytest.mark.parametrize(
    ("metric", "canary"),
    [
        ("error_rate", {"errors": 10}),
        ("parse_failure_rate", {"parse_failures": 20}),
        ("not_found_rate", {"not_found": 25}),
        ("mean_confidence", {"mean_confidence": 0.45}),
        ("drift_score", {"drift_score": 0.3}),
    ],
)
def test_a_canary_worse_on_one_metric_fails(metric: str, canary: dict[str, float]) -> None:
    """Each guarded metric alone fails the canary when it is worse than production beyond its threshold."""
    report = judge("qa", _figures("1.0.0"), _figures("1.1.0", **canary), DEFAULTS)
    assert report.decision == "fail"
    assert [c.metric for c in report.checks if c.verdict == "worse"] == [metric]
    assert metric in report.why


def test_better_is_never_worse() -> None:
    """Higher confidence and fewer errors than production pass; only the bad direction counts."""
    better = _figures("1.1.0", errors=0, not_found=0, mean_confidence=0.95, drift_score=0.0)
    assert judge("qa", _figures("1.0.0"), better, DEFAULTS).decision == "pass"


def test_too_few_documents_is_insufficient_data_not_a_pass() -> None:
    """Below min_documents on either side the guard says insufficient data, naming the side and the count."""
    report = judge("qa", _figures("1.0.0"), _figures("1.1.0", documents=5, errors=0), DEFAULTS)
    assert report.decision == "insufficient"
    assert "canary has 5 documents of qa@1.1.0" in report.why
    assert any(line.split()[:4] == ["documents", "100", "5", ">="] for line in report_lines(report))


def test_metrics_neither_side_measured_do_not_block() -> None:
    """A metric missing on one side (a summarize task: no answers, no "not found") is n/a and does not block."""
    plain = {"not_found": None, "map_answers": 0, "parse_failures": 0, "drift_score": None}
    report = judge("summarize", _figures("1.0.0", **plain), _figures("1.1.0", **plain), DEFAULTS)
    verdicts = {c.metric: c.verdict for c in report.checks}
    assert report.decision == "pass" and verdicts["not_found_rate"] == verdicts["drift_score"] == "n/a"


def test_decide_widens_only_on_a_pass_and_lets_a_first_step_go_without_evidence() -> None:
    """Widening needs a pass; without evidence (or too little) only up to first_step; lowering is never guarded."""
    passed = judge("qa", _figures("1.0.0"), _figures("1.1.0"), DEFAULTS)
    failed = judge("qa", _figures("1.0.0"), _figures("1.1.0", errors=30), DEFAULTS)
    little = judge("qa", _figures("1.0.0"), _figures("1.1.0", documents=3), DEFAULTS)
    assert decide(0, 10, None, DEFAULTS).weight == 10
    refused = decide(10, 50, None, DEFAULTS)
    assert refused.action == "refused" and refused.weight is None and "--prometheus URL" in refused.why
    assert decide(10, 50, little, DEFAULTS).action == "refused"
    assert decide(0, 5, little, DEFAULTS).weight == 5
    assert decide(10, 50, passed, DEFAULTS).weight == 50
    assert decide(0, 5, failed, DEFAULTS).action == "refused"
    assert decide(50, 10, failed, DEFAULTS).weight == 10
    forced = decide(10, 50, failed, DEFAULTS, force=True)
    assert forced.weight == 50 and forced.forced
    assert decide(10, 50, failed, DEFAULTS, rollback=True).weight == 0
    assert decide(10, None, failed, DEFAULTS, rollback=True).action == "rollback"
    assert decide(10, None, passed, DEFAULTS, rollback=True).action == "kept"


def test_results_folders_give_each_version_its_own_figures(tmp_path: Path) -> None:
    """One folder of a run under the rollout holds both sides: each counts only its version's records."""
    records = documents("1.0.0", 40, errors=2, not_found=4, logprob=-0.5, parse_failures=3)
    records += documents("1.1.0", 10, errors=5, logprob=-1.0)
    folder = write_results(tmp_path / "run", records, drift={"qa@1.1.0": {"document_length": 0.3, "prompt_class": 0.1}})
    production, canary = ResultsEvidence(folder, folder).pair("qa", "1.0.0", "1.1.0")
    assert (production.documents, production.errors, production.not_found) == (40, 2, 4)
    assert (production.map_answers, production.parse_failures) == (76, 3)
    assert production.mean_confidence == pytest.approx(0.6065, abs=1e-4) and production.drift_score is None
    assert (canary.documents, canary.errors, canary.drift_score) == (10, 5, 0.3)


def test_results_read_drift_in_the_newer_summary_format(tmp_path: Path) -> None:
    """summary.json drift as {status, scores}: scored versions give their highest score, insufficient ones none."""
    drift = {
        "qa@1.0.0": {"status": "scored", "scores": {"document_length": 0.12, "prompt_class": 0.02}},
        "qa@1.1.0": {"status": "insufficient", "documents": 3},
    }
    folder = write_results(tmp_path / "run", documents("1.0.0", 3) + documents("1.1.0", 3), drift=drift)
    assert results_figures(folder, "qa", "1.0.0").drift_score == 0.12
    assert results_figures(folder, "qa", "1.1.0").drift_score is None


def test_unusable_result_folders_are_named(tmp_path: Path) -> None:
    """A folder without results.jsonl, a running job's folder, a foreign record: each error says what to do."""
    with pytest.raises(EvidenceError, match=r"has no results\.jsonl; pass the --output folder"):
        results_figures(tmp_path, "qa", "1.0.0")
    (tmp_path / "results.partial.jsonl").write_text("")
    with pytest.raises(EvidenceError, match="still running or was interrupted"):
        results_figures(tmp_path, "qa", "1.0.0")
    (tmp_path / "results.jsonl").write_text('{"id": "x", "status": "ok", "colour": "blue"}\n')
    with pytest.raises(EvidenceError, match=r"results\.jsonl:1: not a result record"):
        results_figures(tmp_path, "qa", "1.0.0")


def test_prometheus_queries_sum_finished_jobs_per_version() -> None:
    """Queries select the task and both versions, leave the live driver out and read values per version."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        seen.append(query)
        values = {"1.0.0": "40", "1.1.0": "30"}
        if 'status="error"' in query:
            values = {"1.0.0": "2", "1.1.0": "9"}
        elif "confidence" in query:
            values = {"1.0.0": "0.6", "1.1.0": "NaN"}
        elif "not_found" in query or "drift" in query:
            values = {"1.0.0": "1"}
        result = [{"metric": {"version": v}, "value": [0, x]} for v, x in values.items()]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": result}})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    production, canary = PrometheusEvidence("http://prom:9090/", client=client).pair("qa", "1.0.0", "1.1.0")
    assert all('task="qa", version=~"1\\\\.0\\\\.0|1\\\\.1\\\\.0", job!="mapreduce-llm-driver"' in q for q in seen)
    assert (production.documents, production.errors, production.mean_confidence) == (40, 2, 0.6)
    assert (canary.documents, canary.errors, canary.mean_confidence, canary.not_found) == (30, 9, None, None)
    assert production.not_found == 1 and production.drift_score == 1


def test_prometheus_problems_are_named() -> None:
    """A bad URL, an unreachable server, a refused query and a non-Prometheus answer each say what to check."""
    with pytest.raises(ConfigError, match=r"like http://127\.0\.0\.1:9090"):
        PrometheusEvidence("127.0.0.1:9090")
    with pytest.raises(EvidenceError, match=r"cannot query Prometheus at http://127\.0\.0\.1:1"):
        PrometheusEvidence("http://127.0.0.1:1", timeout=2).query("up")
    refused = httpx.MockTransport(
        lambda r: httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error"})
    )
    with pytest.raises(EvidenceError, match="refused the query 'up': bad_data: parse error"):
        PrometheusEvidence("http://prom:9090", client=httpx.Client(transport=refused)).query("up")
    html = httpx.MockTransport(lambda r: httpx.Response(404, text="<html>"))
    with pytest.raises(EvidenceError, match="HTTP 404 without JSON; is --prometheus the Prometheus server"):
        PrometheusEvidence("http://prom:9091", client=httpx.Client(transport=html)).query("up")


LABELS = """\
# qa labels: who owns them, see OWNERS.
labels:
  canary: 1.1.0      # the next candidate
  production: 1.0.0  # what users get
# Guard thresholds: tightened for qa.
guard:
  error_rate: 0.02   # qa must not fail more
"""


def test_rewriting_labels_yaml_keeps_comments_and_key_order(prompts: Path) -> None:
    """promote and set_rollout keep every comment and the keys' order; new keys go last; whole weights stay whole."""
    path = prompts / "qa" / "labels.yaml"
    path.write_text(LABELS)
    promote(prompts, "qa", "2.0.0", "production")
    set_rollout(prompts, "qa", "1.1.0", 10)
    text = path.read_text()
    assert text.startswith(
        "# qa labels: who owns them, see OWNERS.\nlabels:\n  canary: 1.1.0      # the next candidate\n"
    )
    assert "  production: 2.0.0  # what users get\n" in text
    assert "# Guard thresholds: tightened for qa.\nguard:\n  error_rate: 0.02   # qa must not fail more\n" in text
    assert text.index("guard:") < text.index("rollout:") and "weight: 10\n" in text
    set_rollout(prompts, "qa", "1.1.0", 0)
    assert "rollout" not in path.read_text() and "# what users get" in path.read_text()
    assert load_labels(prompts, "qa").guard == GuardConfig(error_rate=0.02)


def test_history_appends_and_reads_entries(prompts: Path) -> None:
    """Entries append one JSON line each ('from' as the key), read back in order and print as one line each."""
    promote_entry = HistoryEntry(
        at="2025-06-01T10:00:00Z", who="Ada <ada@example.org>", task="qa", action="promote", label="production",
        from_="1.0.0", to="2.0.0", reason="wins compare",
    )  # fmt: skip
    refused = HistoryEntry(
        at="2025-06-02T10:00:00Z", who="ada", task="qa", action="rollout", applied=False, version="2.0.0",
        from_=10, to=50, guard={"decision": "fail"},
    )  # fmt: skip
    append_history(prompts, "qa", promote_entry)
    path = append_history(prompts, "qa", refused)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["from"] == "1.0.0" and "from_" not in first
    assert [e.at for e in read_history(prompts, "qa")] == ["2025-06-01T10:00:00Z", "2025-06-02T10:00:00Z"]
    assert entry_line(promote_entry).endswith("production: 1.0.0 -> 2.0.0  by Ada <ada@example.org>: wins compare")
    assert "2.0.0: 10% -> 50%  [REFUSED, guard fail]" in entry_line(refused)
    path.write_text(path.read_text() + "not json\n")
    with pytest.raises(PromptError, match=r"history\.jsonl:3: not a history entry"):
        read_history(prompts, "qa")


def test_who_comes_from_git_config_else_the_os_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """current_user names git's user.name <user.email> as seen from the prompts folder, else the OS user."""
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))
    monkeypatch.setenv("USER", "ada")
    monkeypatch.setenv("LOGNAME", "ada")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert current_user(plain) == "ada"
    subprocess.run(["git", "init", "-q", str(plain)], check=True)
    subprocess.run(["git", "-C", str(plain), "config", "user.name", "Ada Lovelace"], check=True)
    assert current_user(plain) == "Ada Lovelace"
    subprocess.run(["git", "-C", str(plain), "config", "user.email", "ada@example.org"], check=True)
    assert current_user(plain) == "Ada Lovelace <ada@example.org>"


def test_a_right_not_found_is_not_counted_against_a_version(tmp_path: Path) -> None:
    """Inputs with expected answers: "not found" on a document without the fact is left out of the not-found rate."""
    canary = documents("2.0.0", 10, not_found=4)
    for i, record in enumerate(canary):  # the 4 "not found" documents: 3 lack the fact, 1 holds it
        record.metadata["answer"] = None if i < 3 else "blue"
    production = documents("1.0.0", 10)
    for record in production:
        record.metadata["answer"] = "blue"
    folder = write_results(tmp_path / "run", production + canary)
    prod, can = ResultsEvidence(folder, folder).pair("qa", "1.0.0", "2.0.0")
    assert (can.not_found, can.not_found_of) == (1, 7) and can.value("not_found_rate") == pytest.approx(1 / 7)
    assert prod.value("not_found_rate") == 0.0
    unlabelled = write_results(tmp_path / "plain", documents("2.0.0", 10, not_found=4))
    assert results_figures(unlabelled, "qa", "2.0.0").value("not_found_rate") == pytest.approx(0.4)
