"""`prompts rollout` (guarded), `prompts promote` and `prompts history` (cli/rollouts.py) on result folders."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mapreduce_llm.cli import Library, cli
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.prompts import load_labels, set_rollout
from tests.conftest import PROMPTS
from tests.rollout_records import documents, write_results

WHEN = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
ADA = Library(who=lambda root: "Ada <ada@example.org>", now=lambda: WHEN)


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    """A private copy of the shipped prompts/ folder, with 1.1.0 of qa at 10% under the rollout."""
    root = tmp_path / "prompts"
    shutil.copytree(PROMPTS, root, ignore=shutil.ignore_patterns("history.jsonl"))  # the shipped history is not ours
    (root / "qa" / "labels.yaml").write_text("labels:\n  production: 1.0.0\n  canary: 1.1.0\n")
    set_rollout(root, "qa", "1.1.0", 10)
    return root


@pytest.fixture
def healthy(tmp_path: Path) -> Path:
    """A job run under the rollout: 60 documents on production, 30 on a canary as good as production."""
    return write_results(tmp_path / "healthy", documents("1.0.0", 60, errors=1) + documents("1.1.0", 30, errors=1))


@pytest.fixture
def regressing(tmp_path: Path) -> Path:
    """A job run under the rollout whose canary fails 6 of 30 documents (production: 1 of 60)."""
    return write_results(tmp_path / "bad", documents("1.0.0", 60, errors=1) + documents("1.1.0", 30, errors=6))


def _run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["prompts", *args, "--dir", str(root)], obj=ADA)


def _history(root: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (root / "qa" / "history.jsonl").read_text().splitlines()]


def _weight(root: Path, version: str) -> float | None:
    rollout = load_labels(root, "qa").rollout
    return next((s.weight for s in rollout.splits if s.version == version), None) if rollout else None


def test_a_healthy_canary_widens_and_the_history_keeps_the_numbers(prompts: Path, healthy: Path) -> None:
    """With a passing guard the weight moves; the table is printed and history.jsonl records who, why and numbers."""
    out = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "50", "--reason", "week 1 fine",
               "--canary-results", str(healthy), "--production-results", str(healthy))  # fmt: skip
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == f"guard qa: canary 1.1.0 ({healthy}) vs production 1.0.0 ({healthy})"
    assert lines[2].split() == ["documents", "60", "30", ">=", "20", "ok"]
    assert "decision: pass: canary within every threshold" in out.stdout
    assert f"qa: 1.1.0 50%; the rest on production ({prompts / 'qa' / 'labels.yaml'})" in lines
    assert lines[-1].startswith("allowed: canary within every threshold") and _weight(prompts, "1.1.0") == 50
    (entry,) = _history(prompts)
    assert entry["at"] == "2025-06-01T10:00:00Z" and entry["who"] == "Ada <ada@example.org>"
    assert (entry["action"], entry["from"], entry["to"], entry["reason"]) == ("rollout", 10, 50, "week 1 fine")
    guard = entry["guard"]
    assert isinstance(guard, dict) and guard["decision"] == "pass" and guard["canary"]["documents"] == 30


def test_a_regressing_canary_is_refused_and_rolled_back_on_request(prompts: Path, regressing: Path) -> None:
    """A canary worse than production is refused (exit 2, labels.yaml unchanged); --rollback sets its weight to 0."""
    evidence = ["--canary-results", str(regressing), "--production-results", str(regressing)]
    refused = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "50", *evidence)
    assert refused.exit_code == 2, refused.output
    assert "error_rate                0.0167      0.2000       +0.05  worse" in refused.stdout
    assert refused.stdout.splitlines()[-1].startswith("refused: canary worse than production: error_rate 0.2000")
    assert _weight(prompts, "1.1.0") == 10
    rolled = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--rollback", *evidence)
    assert rolled.exit_code == 2 and "rolled back to 0%" in rolled.stdout
    assert "qa: no rollout; every document runs the default version" in rolled.stdout
    assert load_labels(prompts, "qa").rollout is None
    assert [(e["action"], e["applied"], e["to"]) for e in _history(prompts)] == [
        ("rollout", False, 50),
        ("rollback", True, 0),
    ]


def test_without_evidence_only_the_first_step_goes_through(prompts: Path) -> None:
    """Without evidence up to guard.first_step (10%) goes, more is refused naming the options; --force needs a why."""
    assert _run(prompts, "rollout", "qa", "--version", "2.0.0", "--weight", "5").exit_code == 0
    refused = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "30")
    assert refused.exit_code == 2 and "widening past 10% (guard.first_step) needs a passing guard" in refused.stdout
    assert "--prometheus URL or --canary-results DIR --production-results DIR" in refused.stdout
    unexplained = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "30", "--force")
    assert isinstance(unexplained.exception, ConfigError) and "--force needs --reason" in str(unexplained.exception)
    forced = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "30", "--force", "--reason", "hotfix")
    assert forced.exit_code == 0 and forced.stdout.splitlines()[-1].startswith("forced past the guard: refused:")
    assert _weight(prompts, "1.1.0") == 30 and _history(prompts)[-1]["forced"] is True


def test_too_little_evidence_counts_as_none(prompts: Path, tmp_path: Path) -> None:
    """Fewer than min_documents canary documents: "insufficient data", refused past the first step."""
    few = write_results(tmp_path / "few", documents("1.0.0", 60) + documents("1.1.0", 4))
    out = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "50",
               "--canary-results", str(few), "--production-results", str(few))  # fmt: skip
    assert out.exit_code == 2 and "decision: insufficient: insufficient data: canary has 4 documents" in out.stdout


def test_lowering_a_weight_is_never_guarded(prompts: Path, regressing: Path) -> None:
    """Narrowing goes through even when the evidence shows a regression (its numbers are still printed)."""
    out = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "5",
               "--canary-results", str(regressing), "--production-results", str(regressing))  # fmt: skip
    assert out.exit_code == 0 and "decision: fail" in out.stdout and _weight(prompts, "1.1.0") == 5
    assert out.stdout.splitlines()[-1] == "allowed: lowering a weight is not guarded"


def test_promote_records_from_and_to_and_can_be_guarded(prompts: Path, regressing: Path, healthy: Path) -> None:
    """promote appends from → to; with evidence it moves the label only when the guard passes."""
    assert _run(prompts, "promote", "qa", "2.0.0", "--label", "beta").exit_code == 0
    evidence = ["--canary-results", str(regressing), "--production-results", str(regressing)]
    refused = _run(prompts, "promote", "qa", "1.1.0", "--label", "production", *evidence)
    assert refused.exit_code == 2 and "refused: qa@production stays at 1.0.0" in refused.stdout
    evidence = ["--canary-results", str(healthy), "--production-results", str(healthy)]
    promoted = _run(prompts, "promote", "qa", "1.1.0", "--label", "production", *evidence, "--reason", "better")
    assert promoted.exit_code == 0 and load_labels(prompts, "qa").labels["production"] == "1.1.0"
    assert [(e["label"], e.get("from"), e["to"], e["applied"]) for e in _history(prompts)] == [
        ("beta", None, "2.0.0", True),
        ("production", "1.0.0", "1.1.0", False),
        ("production", "1.0.0", "1.1.0", True),
    ]


def test_history_prints_lines_or_json(prompts: Path) -> None:
    """`prompts history` prints one line per move (oldest first), or a JSON array with --json."""
    assert _run(prompts, "history", "qa").stdout == f"no history for qa yet ({prompts / 'qa' / 'history.jsonl'})\n"
    _run(prompts, "promote", "qa", "2.0.0", "--label", "production", "--reason", "8/12 vs 0/12")
    _run(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "0")
    lines = _run(prompts, "history", "qa").stdout.splitlines()
    assert lines == [
        "2025-06-01T10:00:00Z  promote   production: 1.0.0 -> 2.0.0  by Ada <ada@example.org>: 8/12 vs 0/12",
        "2025-06-01T10:00:00Z  rollout   1.1.0: 10% -> 0%  by Ada <ada@example.org>",
    ]
    entries = json.loads(_run(prompts, "history", "qa", "--json").stdout)
    assert [e["action"] for e in entries] == ["promote", "rollout"] and entries[0]["from"] == "1.0.0"
    unknown = _run(prompts, "history", "qb")
    assert isinstance(unknown.exception, ConfigError) and "no prompt task 'qb'" in str(unknown.exception)


def test_bad_guard_options_are_named(prompts: Path, healthy: Path) -> None:
    """Half the result folders, two kinds of evidence, --rollback without evidence or no --weight: clear errors."""
    half = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "50", "--canary-results", str(healthy))
    assert half.exit_code == 2 and "--canary-results and --production-results go together" in half.stderr
    both = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "50", "--prometheus", "http://x:9090",
                "--canary-results", str(healthy), "--production-results", str(healthy))  # fmt: skip
    assert both.exit_code == 2 and "not both" in both.stderr
    blind = _run(prompts, "rollout", "qa", "--version", "1.1.0", "--rollback")
    assert isinstance(blind.exception, ConfigError) and "--rollback needs evidence" in str(blind.exception)
    nothing = _run(prompts, "rollout", "qa", "--version", "1.1.0")
    assert isinstance(nothing.exception, ConfigError) and "give --weight PERCENT" in str(nothing.exception)
    same = _run(prompts, "rollout", "qa", "--version", "1.0.0", "--weight", "50",
                "--canary-results", str(healthy), "--production-results", str(healthy))  # fmt: skip
    assert isinstance(same.exception, ConfigError) and "nothing to compare" in str(same.exception)
