"""Prompt versions: the files, rendering them into token ids, the registry, the lock and calibrations.

==================  =======================================================================================
:mod:`.files`       a prompt version's schema, template checks, loading; its content hash
:mod:`.render`      a stage rendered with the model's chat template into exact token ids around the slot
:mod:`.registry`    versions on disk, labels.yaml, sticky rollout buckets; promote, set_rollout
:mod:`.lock`        prompts.lock: release new versions, check that released ones never change
:mod:`.calibration` ``<version>.calibration.yaml``: confidence thresholds per model
:mod:`.guard`       the rollout guard: thresholds (labels.yaml ``guard:``), canary vs production, may it widen
:mod:`.evidence`    the guard's figures per version, from finished result folders or from Prometheus
:mod:`.rollouts`    guarded promote and rollout: guard, labels.yaml, history in one step
:mod:`.history`     ``history.jsonl``: who moved a label or a rollout, when, from what to what, why
:mod:`.roundtrip`   rewriting labels.yaml with its comments and key order kept
==================  =======================================================================================

Callers import from here: ``from mapreduce_llm.prompts import PromptRef, select_prompts``.
"""

from mapreduce_llm.prompts.calibration import (
    CalibrationFile,
    ModelCalibration,
    calibration_path,
    load_calibration,
    write_calibration,
)
from mapreduce_llm.prompts.files import (
    SLOT,
    STAGES,
    VERSION_RE,
    AnswerFormat,
    Message,
    PromptFile,
    PromptRef,
    Sampling,
    Stage,
    load_prompt_file,
    prompt_hash,
)
from mapreduce_llm.prompts.lock import LOCK_FILE, check_lock, file_hash, lock_new_versions, read_lock
from mapreduce_llm.prompts.registry import (
    BUCKETS,
    LABELS_FILE,
    Labels,
    PromptSelection,
    Rollout,
    Split,
    bucket,
    default_prompts_dir,
    list_tasks,
    list_versions,
    load_labels,
    promote,
    resolve_prompt,
    save_labels,
    select_prompts,
    set_rollout,
)
from mapreduce_llm.prompts.render import StageTemplate, document_values, render_stage

__all__ = [
    "BUCKETS",
    "LABELS_FILE",
    "LOCK_FILE",
    "SLOT",
    "STAGES",
    "VERSION_RE",
    "AnswerFormat",
    "CalibrationFile",
    "Labels",
    "Message",
    "ModelCalibration",
    "PromptFile",
    "PromptRef",
    "PromptSelection",
    "Rollout",
    "Sampling",
    "Split",
    "Stage",
    "StageTemplate",
    "bucket",
    "calibration_path",
    "check_lock",
    "default_prompts_dir",
    "document_values",
    "file_hash",
    "list_tasks",
    "list_versions",
    "load_calibration",
    "load_labels",
    "load_prompt_file",
    "lock_new_versions",
    "promote",
    "prompt_hash",
    "read_lock",
    "render_stage",
    "resolve_prompt",
    "save_labels",
    "select_prompts",
    "set_rollout",
    "write_calibration",
]
