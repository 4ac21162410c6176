"""`prompts` commands (cli/prompts.py): list, show, diff, render, promote, rollout, check and lock (the guard and
the history of promote and rollout: test_cli_rollouts.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mapreduce_llm.cli import Library, cli
from mapreduce_llm.model_store import ensure_embedded_model
from mapreduce_llm.prompts import check_lock, load_labels
from tests.conftest import PROMPTS


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    """A private copy of the shipped prompts/ folder to edit."""
    root = tmp_path / "prompts"
    shutil.copytree(PROMPTS, root, ignore=shutil.ignore_patterns("history.jsonl"))  # the shipped history is not ours
    return root


def _prompts(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["prompts", *args, "--dir", str(root)])


def test_list_shows_tasks_versions_and_labels() -> None:
    """`prompts list` shows every task with its description, versions and the labels pointing at them."""
    result = _prompts(PROMPTS, "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("qa: ") for line in lines) and any(line.startswith("summarize: ") for line in lines)
    assert [load_labels(PROMPTS, "qa").labels["production"], "production"] in [line.split() for line in lines]


def test_list_shows_a_rollout(prompts: Path) -> None:
    """A task with a rollout lists its splits and the base for the other documents."""
    assert _prompts(prompts, "rollout", "qa", "--version", "1.1.0", "--weight", "10").exit_code == 0
    assert "  rollout: 1.1.0 10%; the rest on production" in _prompts(prompts, "list").output.splitlines()


def test_show_prints_a_version_by_label_or_number() -> None:
    """`prompts show` resolves TASK@LABEL and TASK@VERSION and prints the file under a header naming it."""
    shown = _prompts(PROMPTS, "show", "qa@canary")
    assert shown.exit_code == 0 and shown.output.startswith("# qa@1.1.0 (") and "Question again" in shown.output
    assert "NOT FOUND" in _prompts(PROMPTS, "show", "qa").output


def test_diff_shows_what_changed_between_versions(prompts: Path) -> None:
    """`prompts diff` is a unified diff between two references."""
    diff = _prompts(prompts, "diff", "qa@1.0.0", "qa@canary")
    assert diff.exit_code == 0 and "+++ qa@1.1.0" in diff.output and "Question again" in diff.output


def test_render_prints_the_exact_map_prompt(prompts: Path, tmp_path: Path) -> None:
    """`prompts render` prints the first chunk's map prompt with the document's variables, in the chat template."""
    doc = tmp_path / "d.jsonl"
    doc.write_text('{"id": "x", "text": "The sky is blue.", "question": "What colour is the sky?"}\n{"id": "y"}\n')
    prepared: list[Path] = []

    def prepare_model() -> Path:
        prepared.append(ensure_embedded_model())
        return prepared[-1]

    args = ["prompts", "render", "qa@1.1.0", "--input", str(doc), "--limit", "5", "--dir", str(prompts)]
    out = CliRunner().invoke(cli, args, obj=Library(prepare_model=prepare_model))
    assert out.exit_code == 0, out.output
    assert out.output.startswith("# x: qa@1.1.0, map prompt for chunk 1 of 1, ")
    assert "The sky is blue." in out.output and "Question again: What colour is the sky?" in out.output
    assert "<|im_start|>assistant" in out.output and len(prepared) == 1
    assert "# y: error " in out.output


def test_promote_and_rollout_edit_labels_only(prompts: Path) -> None:
    """`promote` and `rollout` change labels.yaml and no other file but history.jsonl, and say what they did."""
    before = {p: p.read_bytes() for p in prompts.rglob("*") if p.is_file() and p.name != "labels.yaml"}
    promoted = _prompts(prompts, "promote", "qa", "1.1.0", "--label", "production")
    rolled = _prompts(prompts, "rollout", "qa", "--version", "1.0.0", "--weight", "10")
    assert promoted.exit_code == 0 and rolled.exit_code == 0, promoted.output + rolled.output
    assert promoted.stdout.startswith("qa@production -> 1.1.0 (")  # stderr: the log lines
    assert rolled.stdout.startswith("qa: 1.0.0 10%; the rest on production (")
    assert load_labels(prompts, "qa").labels["production"] == "1.1.0"
    assert {p: p.read_bytes() for p in before} == before and check_lock(prompts) == []
    removed = _prompts(prompts, "rollout", "qa", "--version", "1.0.0", "--weight", "0")
    assert removed.stdout.startswith("qa: no rollout; every document runs the default version")


def test_check_passes_the_shipped_prompts_and_names_an_edited_release(prompts: Path) -> None:
    """`prompts check` passes the shipped files; an edited release is named on stderr with exit status 1."""
    assert _prompts(PROMPTS, "check").output == "prompts ok: every version file matches prompts.lock\n"
    path = prompts / "qa" / "1.0.0.yaml"
    path.write_text(path.read_text().replace("one short sentence", "two sentences"))
    result = _prompts(prompts, "check")
    assert result.exit_code == 1 and str(path) in result.stderr and result.stdout == ""


def test_lock_releases_new_files_only(prompts: Path) -> None:
    """`prompts lock` lists the files it released, then "nothing new"; the check passes after it."""
    shutil.copy(prompts / "qa" / "1.1.0.yaml", prompts / "qa" / "1.2.0.yaml")
    assert _prompts(prompts, "lock").output == "released: qa/1.2.0.yaml\n"
    assert _prompts(prompts, "lock").output == "released: nothing new\n"
    assert check_lock(prompts) == []
