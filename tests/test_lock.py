"""The lock of released prompt versions: an edited, deleted or unreleased version file is named by the check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mapreduce_llm.prompts import check_lock, lock_new_versions
from tests.conftest import PROMPTS


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    """A private copy of the shipped prompts/ folder to edit."""
    root = tmp_path / "prompts"
    shutil.copytree(PROMPTS, root)
    return root


def test_shipped_prompts_pass_the_check() -> None:
    """Every shipped version is released and unchanged (what CI checks)."""
    assert check_lock(PROMPTS) == []


def test_editing_a_released_version_fails_the_check(prompts: Path) -> None:
    """An edited release is named, with what was wrong with it."""
    path = prompts / "qa" / "1.0.0.yaml"
    path.write_text(path.read_text().replace("one short sentence", "two sentences"))
    problems = check_lock(prompts)
    assert len(problems) == 1 and str(path) in problems[0] and "released version was edited" in problems[0]


def test_new_version_needs_release_then_passes(prompts: Path) -> None:
    """A new version file is reported until lock_new_versions releases it; it never rewrites old entries."""
    shutil.copy(prompts / "qa" / "1.1.0.yaml", prompts / "qa" / "1.2.0.yaml")
    assert any("qa/1.2.0.yaml: not in prompts.lock" in p for p in check_lock(prompts))
    assert lock_new_versions(prompts) == ["qa/1.2.0.yaml"]
    assert check_lock(prompts) == []
    (prompts / "qa" / "1.0.0.yaml").write_text("description: changed\n")
    assert lock_new_versions(prompts) == []
    assert any("released version was edited" in p for p in check_lock(prompts))


def test_deleting_a_release_fails_the_check(prompts: Path) -> None:
    """Released versions are kept: deleting one is reported."""
    (prompts / "summarize" / "1.0.0.yaml").unlink()
    assert any("was deleted" in p for p in check_lock(prompts))
