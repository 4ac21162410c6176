"""The prompt registry: versions on disk, references, labels and sticky rollouts."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from mapreduce_llm.errors import ConfigError, PromptError
from mapreduce_llm.prompts import (
    bucket,
    list_tasks,
    list_versions,
    load_labels,
    promote,
    resolve_prompt,
    select_prompts,
    set_rollout,
)
from tests.conftest import PROMPTS


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    """A private copy of the shipped prompts/ folder to edit."""
    root = tmp_path / "prompts"
    shutil.copytree(PROMPTS, root)
    return root


def test_references_pin_label_or_roll_out(prompts: Path) -> None:
    """TASK@VERSION pins, TASK@LABEL follows the label, TASK without rollout is production."""
    (prompts / "qa" / "labels.yaml").write_text("labels: {production: 1.0.0, canary: 1.1.0}\n")
    assert select_prompts("qa@1.1.0", prompts).base.version == "1.1.0"
    assert select_prompts("qa@canary", prompts).base.version == "1.1.0"
    assert select_prompts("qa@production", prompts).base.version == "1.0.0"
    plain = select_prompts("qa", prompts)
    assert plain.base.version == "1.0.0" and not plain.splits
    with pytest.raises(ConfigError, match="no label 'beta'"):
        select_prompts("qa@beta", prompts)
    with pytest.raises(ConfigError, match=r"no version 9\.9\.9"):
        select_prompts("qa@9.9.9", prompts)


def test_rollout_is_sticky_and_proportional(prompts: Path) -> None:
    """At 50% about half the documents get the canary; each document keeps its version across loads."""
    set_rollout(prompts, "qa", "1.1.0", 50)
    ids = [f"doc-{i}" for i in range(2000)]
    loaded, reloaded = select_prompts("qa", prompts), select_prompts("qa", prompts)  # two loads of the files
    first = {i: loaded.choose(i).version for i in ids}
    again = {i: reloaded.choose(i).version for i in ids}
    assert first == again
    share = Counter(first.values())["1.1.0"] / len(ids)
    assert 0.45 < share < 0.55


def test_raising_a_weight_only_moves_documents_into_the_split(prompts: Path) -> None:
    """Going from 10% to 30% keeps every 10% document on the canary."""
    ids = [f"doc-{i}" for i in range(3000)]
    set_rollout(prompts, "qa", "1.1.0", 10)
    selection = select_prompts("qa", prompts)
    at10 = {i for i in ids if selection.choose(i).version == "1.1.0"}
    set_rollout(prompts, "qa", "1.1.0", 30)
    selection = select_prompts("qa", prompts)
    at30 = {i for i in ids if selection.choose(i).version == "1.1.0"}
    assert at10 < at30 and 0.25 < len(at30) / len(ids) < 0.35


def test_bucket_depends_on_task_and_id() -> None:
    """Buckets are a stable function of task and document id."""
    assert bucket("qa", "a") == bucket("qa", "a")
    assert len({bucket("qa", f"d{i}") for i in range(100)}) > 90


def test_bad_labels_are_named(prompts: Path) -> None:
    """A label pointing at a missing version, or weights over 100%, name labels.yaml and the field."""
    (prompts / "qa" / "labels.yaml").write_text("labels: {production: 3.0.0}\n")
    with pytest.raises(PromptError, match=r"label 'production' points at 3\.0\.0"):
        load_labels(prompts, "qa")
    (prompts / "qa" / "labels.yaml").write_text(
        "labels: {production: 1.0.0}\nrollout: {splits: [{version: 1.1.0, weight: 70}, {version: 1.0.0, weight: 40}]}\n"
    )
    with pytest.raises(PromptError, match="over 100%"):
        load_labels(prompts, "qa")
    with pytest.raises(ConfigError, match="weight must be a percentage"):
        set_rollout(prompts, "summarize", "1.0.0", 150)
    with pytest.raises(ConfigError, match=r"no version 9\.0\.0"):
        promote(prompts, "qa", "9.0.0", "canary")


def test_changing_one_split_keeps_the_order_of_the_others(prompts: Path) -> None:
    """Re-weighting a split keeps the order of the splits; weight 0 removes only that split."""
    shutil.copy(prompts / "qa" / "1.1.0.yaml", prompts / "qa" / "1.2.0.yaml")
    set_rollout(prompts, "qa", "1.1.0", 10)
    set_rollout(prompts, "qa", "1.2.0", 10)
    set_rollout(prompts, "qa", "1.1.0", 5)
    assert [s.version for s in load_labels(prompts, "qa").rollout.splits] == ["1.1.0", "1.2.0"]  # type: ignore[union-attr]
    set_rollout(prompts, "qa", "1.1.0", 0)
    assert [s.version for s in load_labels(prompts, "qa").rollout.splits] == ["1.2.0"]  # type: ignore[union-attr]
    set_rollout(prompts, "qa", "1.2.0", 0)
    assert load_labels(prompts, "qa").rollout is None


def test_references_resolve_to_latest_or_pinned(tmp_path: Path) -> None:
    """Without labels TASK picks the highest version; TASK@VERSION pins; unknown versions and labels fail clearly."""
    (tmp_path / "t").mkdir()
    for version in ("1.2.0", "1.10.0"):
        shutil.copy(PROMPTS / "qa" / "1.0.0.yaml", tmp_path / "t" / f"{version}.yaml")
    assert resolve_prompt("t", tmp_path).version == "1.10.0"
    assert resolve_prompt("t@1.2.0", tmp_path).version == "1.2.0"
    with pytest.raises(ConfigError, match=r"released versions: 1\.2\.0, 1\.10\.0"):
        resolve_prompt("t@2.0.0", tmp_path)
    with pytest.raises(ConfigError, match="no label 'latest'"):
        resolve_prompt("t@latest", tmp_path)
    with pytest.raises(ConfigError, match="available: t"):
        resolve_prompt("nope", tmp_path)


def test_versions_sort_by_number_and_only_released_files_count(tmp_path: Path) -> None:
    """Versions are semver file names sorted numerically; other files and empty folders are not versions."""
    folder = tmp_path / "t"
    folder.mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("1.10.0.yaml", "1.2.0.yaml", "1.2.0.calibration.yaml", "labels.yaml", "draft.yaml"):
        shutil.copy(PROMPTS / "qa" / "1.0.0.yaml", folder / name)
    assert list_versions(tmp_path, "t") == ["1.2.0", "1.10.0"]
    assert list_tasks(tmp_path) == ["t"] and list_tasks(tmp_path / "missing") == []
