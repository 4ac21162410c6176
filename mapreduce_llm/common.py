"""What several modules share: the pydantic bases and the vocabularies, each written once.

``StrictModel`` is for settings and files a person writes (a job spec section, a prompt file): unknown keys are
an error, values never change once read, and every field's docstring becomes its description in the JSON schema.
``RecordModel`` is for records the job writes (results, summaries, profiles): unknown keys are an error too, so a
record of another release is never half-read.

This module imports nothing of the package, so any module may import it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Settings a person writes: unknown keys are errors, values are frozen, field docstrings document them."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class RecordModel(BaseModel):
    """A record the job writes (one line of results.jsonl, summary.json): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


StageName = Literal["map", "collapse", "reduce", "reretrieve"]
"""Stages of engine calls; ``reretrieve`` runs the map prompt over re-retrieved passages."""

ReduceStage = Literal["collapse", "reduce"]
"""The stages of the reduce tree: ``collapse`` merges a group of partial outputs, ``reduce`` writes the final one."""

OutputKind = Literal["text", "answer"]
"""What a prompt version's calls return (its ``output:``): free text, or a checked answer record."""

MapStatus = Literal["kept", "not_found", "unsupported", "low_confidence", "off_topic", "parse_failure"]
"""What became of one chunk's answer (``output: answer`` prompts): ``kept`` for the reducer, or why not."""

DocumentStatus = Literal["ok", "error"]
"""A document's result: an output, or an error record."""

JobStatus = Literal["completed", "failed"]
"""A job that went through every document, or one a job-level fault (engine, output folder) stopped."""

RecomputeReason = Literal["input_changed", "settings_changed", "previous_error", "older_format"]
"""Why a document that has a result from an earlier run in the folder is computed again."""
