"""Environment defaults: each folder's variable wins when set, else the documented fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapreduce_llm import paths


def test_prompts_dir_is_the_variable_then_the_working_folder_then_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$MAPREDUCE_LLM_PROMPTS first; else ./prompts when it exists; else the project's prompts/ folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(paths.PROMPTS_ENV, raising=False)
    assert paths.prompts_dir() == paths.PROJECT_PROMPTS
    (tmp_path / "prompts").mkdir()
    assert paths.prompts_dir() == tmp_path / "prompts"
    monkeypatch.setenv(paths.PROMPTS_ENV, "/srv/prompts")
    assert paths.prompts_dir() == Path("/srv/prompts")


def test_folders_follow_their_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Baselines and the model cache come from their variables, else ./baselines and ~/.cache/mapreduce-llm."""
    for name in (paths.BASELINES_ENV, paths.CACHE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.baselines_dir() == Path("baselines")
    assert paths.cache_dir() == tmp_path / ".cache" / "mapreduce-llm"
    monkeypatch.setenv(paths.BASELINES_ENV, "/data/baselines")
    monkeypatch.setenv(paths.CACHE_ENV, "/data/cache")
    assert (paths.baselines_dir(), paths.cache_dir()) == (Path("/data/baselines"), Path("/data/cache"))


def test_a_blank_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty or blank RAY_ADDRESS means no cluster (a local one is started), not an address of ''."""
    monkeypatch.setenv(paths.RAY_ADDRESS_ENV, "  ")
    assert paths.ray_address() is None
    monkeypatch.setenv(paths.RAY_ADDRESS_ENV, "ray://head:10001")
    assert paths.ray_address() == "ray://head:10001"
