"""Calibrations: thresholds per model beside a prompt version, read back as written, never mixed between models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mapreduce_llm.errors import PromptError
from mapreduce_llm.prompts import (
    ModelCalibration,
    PromptRef,
    calibration_path,
    check_lock,
    load_calibration,
    select_prompts,
    write_calibration,
)
from tests.conftest import PROMPTS


@pytest.fixture
def qa(tmp_path: Path) -> PromptRef:
    """qa@2.0.0 in a private copy of the prompts, without its shipped calibration."""
    root = tmp_path / "prompts"
    shutil.copytree(PROMPTS, root, ignore=shutil.ignore_patterns("*.calibration.yaml"))
    return select_prompts("qa@2.0.0", root).base


def test_a_calibration_lives_beside_its_version(qa: PromptRef) -> None:
    """The file is <task>/<version>.calibration.yaml, next to the version it calibrates."""
    assert calibration_path(qa) == qa.path.with_name("2.0.0.calibration.yaml")


def test_thresholds_are_read_back_per_model(qa: PromptRef) -> None:
    """What is written for one model is read back for it; another model has none; other entries are kept."""
    first = ModelCalibration(map_min_confidence=-1.5, reduce_min_confidence=-0.8, measured={"documents": 40})
    second = ModelCalibration(map_min_confidence=-2.0, reduce_min_confidence=-1.0, min_evidence_similarity=0.3)
    assert load_calibration(qa, "model-a") is None
    write_calibration(qa, "model-a", first)
    write_calibration(qa, "model-b", second)
    assert load_calibration(qa, "model-a") == first and load_calibration(qa, "model-b") == second
    assert load_calibration(qa, "model-c") is None


def test_calibrating_never_touches_the_released_version(qa: PromptRef) -> None:
    """Writing a calibration leaves the version file and prompts.lock as they were."""
    before = qa.path.read_bytes()
    write_calibration(qa, "model-a", ModelCalibration(map_min_confidence=-1.0, reduce_min_confidence=-1.0))
    assert qa.path.read_bytes() == before and check_lock(qa.path.parent.parent) == []


def test_a_malformed_calibration_names_the_file(qa: PromptRef) -> None:
    """An unreadable calibration file is a PromptError naming it and what to do."""
    calibration_path(qa).write_text("models: {model-a: {map_min_confidence: low}}\n")
    with pytest.raises(PromptError, match=r"(?s)2\.0\.0\.calibration\.yaml.*calibrate\.py"):
        load_calibration(qa, "model-a")
