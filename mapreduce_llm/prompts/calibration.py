"""Confidence thresholds of a prompt version, measured per model and stored beside the version.

``prompts/<task>/<version>.calibration.yaml`` holds, for each model the version was calibrated with, the
thresholds the pipeline applies to answer confidences (mean token logprob of the answer):

* ``map_min_confidence``: a chunk's answer below it is dropped before reducing, like a "not found";
* ``min_evidence_similarity``: a chunk's answer whose quote is less similar to the question is dropped;
* ``reduce_min_confidence``: a final answer below it triggers re-retrieval (when the job allows it);
* ``reretrieve_min_confidence``, ``reretrieve_min_similarity``: what a re-retrieved answer must reach.

The file is written by ``benchmarks/calibrate.py`` from a dev set, with what was measured, and is not part
of the released prompt file: thresholds depend on the model serving the prompt, and recalibrating for a new
model must not change a released version. A job serving a model the version has no calibration for runs
without confidence filtering (evidence checks still apply) and logs a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from mapreduce_llm.atomic import write_atomic
from mapreduce_llm.common import StrictModel
from mapreduce_llm.errors import PromptError
from mapreduce_llm.prompts.files import PromptRef


class ModelCalibration(StrictModel):
    """Thresholds of one prompt version for one model, and the measurements behind them."""

    map_min_confidence: float
    """Mean answer-token logprob below which a map answer is dropped."""
    reduce_min_confidence: float
    """Mean answer-token logprob of the final answer below which re-retrieval runs."""
    min_evidence_similarity: float | None = None
    """Cosine similarity (all-MiniLM-L6-v2) of a map answer's evidence quote to the question below which
    the answer is dropped as off topic; None: not checked."""
    reretrieve_min_confidence: float | None = None
    """A re-retrieved answer below this confidence is not accepted (None: ``map_min_confidence``)."""
    reretrieve_min_similarity: float | None = None
    """A re-retrieved answer whose evidence is less similar to the question is not accepted (None:
    ``min_evidence_similarity``). Re-retrieval searches the whole document for text like the question, so what
    it finds when the fact is absent looks more relevant than a random chunk's sentence: its bar is its own."""
    dev_set: str = ""
    """What the thresholds were measured on."""
    measured: dict[str, Any] = Field(default_factory=dict)
    """Figures of the calibration run (counts, accuracies at the chosen thresholds)."""


class CalibrationFile(StrictModel):
    """``<version>.calibration.yaml``."""

    models: dict[str, ModelCalibration] = Field(default_factory=dict)


def calibration_path(prompt: PromptRef) -> Path:
    """Where a prompt version's calibration lives: ``<task>/<version>.calibration.yaml``."""
    return prompt.path.with_name(f"{prompt.version}.calibration.yaml")


def read_calibration_file(path: Path) -> CalibrationFile:
    """The calibration file at ``path`` (empty when it does not exist); PromptError when it is malformed."""
    if not path.exists():
        return CalibrationFile()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return CalibrationFile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise PromptError(
            f"{path}: not a valid calibration file ({exc}); rerun benchmarks/calibrate.py or fix it", path=str(path)
        ) from None


def load_calibration(prompt: PromptRef, model: str) -> ModelCalibration | None:
    """The thresholds of ``prompt`` for ``model``, or None when it was not calibrated for that model."""
    return read_calibration_file(calibration_path(prompt)).models.get(model)


def write_calibration(prompt: PromptRef, model: str, calibration: ModelCalibration) -> Path:
    """Store (or replace) the thresholds of ``prompt`` for ``model``; other models' entries are kept."""
    path = calibration_path(prompt)
    current = read_calibration_file(path)
    models = {**current.models, model: calibration}
    header = (
        f"# Confidence thresholds of {prompt.ref} per model, written by benchmarks/calibrate.py.\n"
        "# Thresholds are mean token logprobs of the answer; see mapreduce_llm/prompts/calibration.py.\n"
    )
    body = yaml.safe_dump({"models": {name: cal.model_dump() for name, cal in sorted(models.items())}}, sort_keys=False)
    write_atomic(path, header + body, mode=0o644)
    return path
