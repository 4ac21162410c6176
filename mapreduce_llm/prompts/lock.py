"""The lock of released prompt versions: ``prompts/prompts.lock`` records the sha256 of every released file.

A released version is never edited: a change is a new version file. :func:`check_lock` fails, naming the file,
when a released version was edited or deleted, or a version file was never released; :func:`lock_new_versions`
releases new files (``mapreduce-llm prompts lock``) and never changes an existing entry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mapreduce_llm.errors import ConfigError, PromptError
from mapreduce_llm.prompts.files import load_prompt_file
from mapreduce_llm.prompts.registry import list_tasks, list_versions, load_labels

LOCK_FILE = "prompts.lock"


def file_hash(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _released_files(root: Path) -> dict[str, Path]:
    return {
        f"{task}/{version}.yaml": root / task / f"{version}.yaml"
        for task in list_tasks(root)
        for version in list_versions(root, task)
    }


def read_lock(root: Path) -> dict[str, str]:
    """The lock: ``{"task/version.yaml": "sha256:..."}``."""
    path = root / LOCK_FILE
    if not path.is_file():
        return {}
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))["released"]
    return data


def check_lock(root: Path) -> list[str]:
    """Problems with released prompt files, each naming the file and what to do; empty when all is well."""
    lock = read_lock(root)
    files = _released_files(root)
    problems = []
    for name, digest in sorted(lock.items()):
        path = root / name
        if name not in files:
            problems.append(f"{path}: released version was deleted; restore it (released versions are kept)")
        elif file_hash(path) != digest:
            problems.append(
                f"{path}: released version was edited (hash {file_hash(path)[:19]}… != locked {digest[:19]}…); "
                "revert it and add the change as a new version file instead"
            )
    for name in sorted(set(files) - set(lock)):
        problems.append(f"{root / name}: not in {LOCK_FILE}; release it with `mapreduce-llm prompts lock`")
    for task in list_tasks(root):
        try:
            load_labels(root, task)
            for version in list_versions(root, task):
                load_prompt_file(root / task / f"{version}.yaml")
        except (PromptError, ConfigError) as exc:
            problems.append(str(exc))
    return problems


def lock_new_versions(root: Path) -> list[str]:
    """Add every version file missing from the lock; never changes an existing entry. Returns the added files."""
    lock = read_lock(root)
    added = []
    for name, path in sorted(_released_files(root).items()):
        if name not in lock:
            load_prompt_file(path)
            lock[name] = file_hash(path)
            added.append(name)
    (root / LOCK_FILE).write_text(
        json.dumps(
            {
                "comment": "sha256 of released prompt files; never edit a released file, add a version",
                "released": dict(sorted(lock.items())),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return added
