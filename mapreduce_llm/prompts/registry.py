"""The prompt registry: released versions on disk, labels, and sticky percentage rollouts.

Per task, ``prompts/<task>/`` holds one file per released version (``1.0.0.yaml`` ...) and ``labels.yaml``::

    labels:                 # names pointing at versions
      production: 1.0.0
      canary: 1.1.0
    rollout:                # what the bare reference `qa` runs
      base: production      # label or version that gets every document not in a split
      splits:
        - {version: 1.1.0, weight: 10}   # percent of documents
    guard:                  # optional: thresholds of the rollout guard (mapreduce_llm.prompts.guard)
      error_rate: 0.05

A job's prompt reference is ``TASK@VERSION`` (pinned), ``TASK@LABEL`` (whatever the label points at) or
``TASK`` (the rollout; without labels.yaml, the latest version). Under a rollout each document's version is
chosen by a hash of the task and the document id — the same document gets the same version on every rerun
and on every shard. Splits take consecutive bucket ranges in the order listed, so raising the weight of the
last (or only) split moves documents from the base into it and no others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, ValidationError, field_validator

from mapreduce_llm import paths
from mapreduce_llm.common import StrictModel
from mapreduce_llm.errors import ConfigError, PromptError
from mapreduce_llm.prompts.files import VERSION_RE, PromptRef, load_prompt_file
from mapreduce_llm.prompts.guard import GuardConfig
from mapreduce_llm.prompts.roundtrip import update_yaml

LABELS_FILE = "labels.yaml"
BUCKETS = 10_000
"""Rollout resolution: weights are percentages with up to two decimals."""


def default_prompts_dir() -> Path:
    """``$MAPREDUCE_LLM_PROMPTS``, else ./prompts, else the prompts/ folder beside the package."""
    return paths.prompts_dir()


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def list_versions(prompts_dir: Path, task: str) -> list[str]:
    """Released versions of a task, oldest first."""
    folder = prompts_dir / task
    versions = [p.stem for p in folder.glob("*.yaml") if VERSION_RE.match(p.stem)]
    return sorted(versions, key=_version_key)


def list_tasks(prompts_dir: Path) -> list[str]:
    """Tasks that have at least one released version."""
    if not prompts_dir.is_dir():
        return []
    return sorted(p.name for p in prompts_dir.iterdir() if p.is_dir() and list_versions(prompts_dir, p.name))


class Split(StrictModel):
    """A share of documents given to one version."""

    version: str
    weight: Annotated[float, Field(gt=0, le=100)]
    """Percent of documents (0 < weight <= 100)."""

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not VERSION_RE.match(value):
            raise ValueError(f"version must look like 1.2.3, got {value!r}")
        return value


class Rollout(StrictModel):
    """What the bare task reference runs: splits by percentage, the rest on the base."""

    base: str = "production"
    """Label or version for documents outside every split."""
    splits: list[Split] = Field(default_factory=list)


class Labels(StrictModel):
    """labels.yaml of one task."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Label name -> version."""
    rollout: Rollout | None = None
    guard: GuardConfig | None = None
    """Thresholds of the rollout guard (None: the defaults of :class:`GuardConfig`)."""


def _labels_path(root: Path, task: str) -> Path:
    return root / task / LABELS_FILE


def load_labels(root: Path, task: str) -> Labels:
    """Read and validate a task's labels.yaml (empty when the file does not exist)."""
    path = _labels_path(root, task)
    if not path.is_file():
        return Labels()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        labels = Labels.model_validate(raw)
    except yaml.YAMLError as exc:
        raise PromptError(f"{path}: not valid YAML: {exc}", path=str(path)) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise PromptError(f"{path}: field {field!r}: {err['msg']}", path=str(path), field=field) from None
    versions = set(list_versions(root, task))
    for name, version in labels.labels.items():
        if VERSION_RE.match(name):
            raise PromptError(f"{path}: label {name!r} looks like a version; pick a name", path=str(path))
        if version not in versions:
            raise PromptError(
                f"{path}: label {name!r} points at {version}, which is not a released version of {task} "
                f"({', '.join(sorted(versions))})",
                path=str(path),
                field=f"labels.{name}",
            )
    if labels.rollout:
        _version_of(root, task, labels, labels.rollout.base, path)
        total = 0.0
        for split in labels.rollout.splits:
            if split.version not in versions:
                raise PromptError(
                    f"{path}: rollout split names version {split.version}, which is not released",
                    path=str(path),
                    field="rollout.splits",
                )
            total += split.weight
        if total > 100:
            raise PromptError(f"{path}: rollout weights add up to {total:g}%, over 100%", path=str(path))
    return labels


def save_labels(root: Path, task: str, labels: Labels) -> Path:
    """Write labels.yaml, keeping the comments, key order and layout of the file as it was."""
    path = _labels_path(root, task)
    data = labels.model_dump(exclude_none=True)
    if not data.get("rollout"):
        data.pop("rollout", None)
    if labels.guard is not None:
        data["guard"] = labels.guard.model_dump(exclude_unset=True)
    update_yaml(path, data, "# Labels and rollout of this task; edited by `mapreduce-llm prompts promote|rollout`.\n")
    return path


def _version_of(root: Path, task: str, labels: Labels, name: str, where: Path | str) -> str:
    if VERSION_RE.match(name):
        if name not in list_versions(root, task):
            raise ConfigError(
                f"prompt {task} has no version {name}; released versions: {', '.join(list_versions(root, task))}",
                parameter="prompt",
                value=f"{task}@{name}",
            )
        return name
    if name in labels.labels:
        return labels.labels[name]
    raise ConfigError(
        f"{where}: prompt {task} has no label {name!r}; labels: {', '.join(sorted(labels.labels)) or '(none)'}",
        parameter="prompt",
        value=f"{task}@{name}",
    )


def _ref(root: Path, task: str, version: str) -> PromptRef:
    path = root / task / f"{version}.yaml"
    return PromptRef(task=task, version=version, path=path, file=load_prompt_file(path))


def bucket(task: str, document_id: str) -> int:
    """A document's sticky rollout bucket in [0, BUCKETS): a hash of task and document id."""
    digest = hashlib.sha256(f"{task}\x1f{document_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass(frozen=True)
class PromptSelection:
    """The prompt versions a job may run and how each document is assigned one."""

    reference: str
    """What the job asked for: ``qa``, ``qa@canary``, ``qa@1.0.0``."""
    base: PromptRef
    splits: tuple[tuple[int, int, PromptRef], ...] = ()
    """(first bucket, end bucket, version) ranges; documents elsewhere get ``base``."""

    def choose(self, document_id: str) -> PromptRef:
        """The version for one document (the same on every run)."""
        if not self.splits:
            return self.base
        b = bucket(self.base.task, document_id)
        for start, end, ref in self.splits:
            if start <= b < end:
                return ref
        return self.base

    @property
    def versions(self) -> list[PromptRef]:
        """Every version this selection can choose."""
        refs = {self.base.version: self.base}
        for _, _, ref in self.splits:
            refs.setdefault(ref.version, ref)
        return list(refs.values())


def select_prompts(reference: str, prompts_dir: Path | None = None) -> PromptSelection:
    """Resolve a job's prompt reference (``TASK``, ``TASK@VERSION`` or ``TASK@LABEL``)."""
    root = prompts_dir or default_prompts_dir()
    task, _, name = reference.partition("@")
    if not task:
        raise ConfigError(
            f"prompt reference {reference!r} has no task; use TASK, TASK@VERSION or TASK@LABEL", parameter="prompt"
        )
    versions = list_versions(root, task)
    if not versions:
        raise ConfigError(
            f"no prompt task {task!r} in {root}; available: {', '.join(list_tasks(root)) or '(none)'}",
            parameter="prompt",
            value=reference,
        )
    labels = load_labels(root, task)
    if name:
        return PromptSelection(reference, _ref(root, task, _version_of(root, task, labels, name, reference)))
    if labels.rollout is None:
        default = labels.labels.get("production", versions[-1])
        return PromptSelection(reference, _ref(root, task, default))
    rollout = labels.rollout
    base = _ref(root, task, _version_of(root, task, labels, rollout.base, _labels_path(root, task)))
    ranges = []
    start = 0
    for split in rollout.splits:
        width = round(split.weight * BUCKETS / 100)
        ranges.append((start, start + width, _ref(root, task, split.version)))
        start += width
    return PromptSelection(reference, base, tuple(ranges))


def resolve_prompt(reference: str, prompts_dir: Path | None = None) -> PromptRef:
    """One version for a reference: pinned, labelled, or the rollout's base for a bare task."""
    return select_prompts(reference, prompts_dir).base


def _require_version(root: Path, task: str, version: str) -> None:
    """A ConfigError unless ``version`` is a released version of ``task`` (for promote and rollout)."""
    released = list_versions(root, task)
    if version not in released:
        raise ConfigError(
            f"prompt {task} has no version {version}; released: {', '.join(released)}", parameter="version"
        )


def promote(root: Path, task: str, version: str, label: str) -> Path:
    """Point ``label`` at ``version`` in labels.yaml (and nothing else)."""
    _require_version(root, task, version)
    if VERSION_RE.match(label) or not label.replace("-", "_").isidentifier():
        raise ConfigError(f"label must be a name like production or canary, got {label!r}", parameter="label")
    labels = load_labels(root, task)
    return save_labels(root, task, labels.model_copy(update={"labels": {**labels.labels, label: version}}))


def set_rollout(root: Path, task: str, version: str, weight: float, base: str | None = None) -> Path:
    """Give ``version`` ``weight`` percent of documents under the task's rollout (0 removes the split)."""
    _require_version(root, task, version)
    if not 0 <= weight <= 100:
        raise ConfigError(f"weight must be a percentage in [0, 100], got {weight:g}", parameter="weight")
    labels = load_labels(root, task)
    rollout = labels.rollout or Rollout(base=base or "production")
    if base:
        rollout = rollout.model_copy(update={"base": base})
    if rollout.base not in labels.labels and not VERSION_RE.match(rollout.base):
        raise ConfigError(
            f"rollout base {rollout.base!r} is not a label of {task}; promote a version first "
            f"(`mapreduce-llm prompts promote {task} VERSION --label {rollout.base}`) or pass --base VERSION",
            parameter="base",
        )
    # Update in place so the other splits keep their bucket ranges; a new split goes last; 0 removes it.
    splits: list[Split] = []
    for s in rollout.splits:
        if s.version != version:
            splits.append(s)
        elif weight > 0:
            splits.append(Split(version=version, weight=weight))
    if weight > 0 and all(s.version != version for s in rollout.splits):
        splits.append(Split(version=version, weight=weight))
    total = sum(s.weight for s in splits)
    if total > 100:
        raise ConfigError(f"rollout weights would add up to {total:g}%; lower another split first", parameter="weight")
    rollout = rollout.model_copy(update={"splits": splits})
    return save_labels(root, task, labels.model_copy(update={"rollout": rollout if splits else None}))
