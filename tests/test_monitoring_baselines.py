"""BaselineStore (monitoring/baselines.py): NAME.json files in the baselines folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapreduce_llm.errors import ConfigError
from mapreduce_llm.monitoring.baselines import BaselineStore
from mapreduce_llm.monitoring.drift import build_baseline
from tests.test_monitoring_drift import PYTHON, _profiles


def test_baseline_round_trip(tmp_path: Path) -> None:
    """A baseline is saved as NAME.json and read back unchanged, one reference per task@version."""
    store = BaselineStore(tmp_path)
    baseline = build_baseline("docs-v1", _profiles(PYTHON, 8), "out/week1")
    assert store.save(baseline) == tmp_path / "docs-v1.json"
    loaded = store.load("docs-v1")
    assert loaded == baseline and list(loaded.versions) == ["summarize@1.0.0"]


def test_names_lists_the_saved_baselines(tmp_path: Path) -> None:
    """names() lists the folder's baselines, sorted; a folder that does not exist has none."""
    store = BaselineStore(tmp_path / "baselines")
    assert store.names() == []
    for name in ("week2", "week1"):
        store.save(build_baseline(name, _profiles(PYTHON, 2), "x"))
    assert store.names() == ["week1", "week2"]


def test_missing_or_unsafe_baseline_names_say_what_to_do(tmp_path: Path) -> None:
    """A missing baseline names the command that creates it; a name with a path in it is refused."""
    store = BaselineStore(tmp_path)
    store.save(build_baseline("known", _profiles(PYTHON, 2), "x"))
    with pytest.raises(ConfigError, match=r"drift baseline --results DIR --name nope.*known: known"):
        store.load("nope")
    with pytest.raises(ConfigError, match="letters, digits"):
        store.load("../etc/passwd")


def test_a_broken_baseline_file_is_named(tmp_path: Path) -> None:
    """A NAME.json that is not a baseline is a ConfigError naming the file."""
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"broken.json is not a valid baseline file"):
        BaselineStore(tmp_path).load("broken")


def test_the_default_folder_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a folder, $MAPREDUCE_LLM_BASELINES (else ./baselines) is used, read when the store is made."""
    monkeypatch.setenv("MAPREDUCE_LLM_BASELINES", str(tmp_path))
    assert BaselineStore().folder == tmp_path
    monkeypatch.delenv("MAPREDUCE_LLM_BASELINES")
    assert BaselineStore().folder == Path("baselines")
