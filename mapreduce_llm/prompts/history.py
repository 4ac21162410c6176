"""``prompts/<task>/history.jsonl``: who moved a label or a rollout, when, from what to what, and why.

One JSON object per line, appended by ``prompts promote`` and ``prompts rollout`` (and a guard's rollback), never
rewritten. A refused widening is recorded too (``applied: false``), with the guard's numbers.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from mapreduce_llm.errors import PromptError

HISTORY_FILE = "history.jsonl"


class HistoryEntry(BaseModel):
    """One line of history.jsonl."""

    # Keys a later release adds are kept, not refused: the file outlives the code that wrote each line.
    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    at: str
    """When, UTC, ISO 8601 (``2025-06-01T10:00:00Z``)."""
    who: str
    """``git config user.name <user.email>`` where the prompts live, else the OS user name."""
    task: str
    action: str
    """``promote`` (a label moved), ``rollout`` (a split's weight) or ``rollback`` (the guard set it to 0)."""
    applied: bool = True
    """False when the guard refused the change: labels.yaml was not touched."""
    label: str | None = None
    version: str | None = None
    """The split's version (rollout, rollback)."""
    from_: str | int | float | None = Field(
        default=None, validation_alias=AliasChoices("from", "from_"), serialization_alias="from"
    )
    """The label's previous version (None: new label), or the split's previous weight in percent."""
    to: str | int | float | None = None
    base: str | None = None
    """What the documents outside every split run (rollout, rollback)."""
    splits: dict[str, int | float] | None = None
    """Every split's weight after the change (rollout, rollback)."""
    reason: str | None = None
    forced: bool = False
    """``--force`` widened past a guard that did not pass."""
    guard: dict[str, Any] | None = None
    """The guard's decision and the numbers behind it, when a guard ran."""


def utc_now() -> datetime:
    """The current time, UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """``2025-06-01T10:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git_config(key: str, cwd: Path) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments
            ["git", "config", "--get", key],  # noqa: S607 - git from PATH, as a person runs it
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def current_user(cwd: Path) -> str:
    """Who is acting: ``Name <email>`` from git config as seen from ``cwd``, else the OS user name."""
    where = cwd if cwd.is_dir() else Path.cwd()
    name, email = _git_config("user.name", where), _git_config("user.email", where)
    if name and email:
        return f"{name} <{email}>"
    if name or email:
        return name or email
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return f"uid {os.getuid()}"


def history_path(root: Path, task: str) -> Path:
    """``<root>/<task>/history.jsonl``."""
    return root / task / HISTORY_FILE


def append_history(root: Path, task: str, entry: HistoryEntry) -> Path:
    """Append one entry (a single write of one line)."""
    path = history_path(root, task)
    line = json.dumps(entry.model_dump(by_alias=True, exclude_none=True), ensure_ascii=False) + "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
    return path


def read_history(root: Path, task: str) -> list[HistoryEntry]:
    """Every entry of a task's history, oldest first (empty when there is none yet)."""
    path = history_path(root, task)
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(HistoryEntry.model_validate_json(line))
        except ValidationError as exc:
            raise PromptError(
                f"{path}:{number}: not a history entry ({exc.errors()[0]['msg']}); history.jsonl holds one JSON "
                "object per line written by `prompts promote|rollout`: fix or delete that line",
                path=str(path),
            ) from None
    return entries


def _weight(value: object) -> str:
    return f"{value:g}%" if isinstance(value, int | float) else "?"


def entry_line(entry: HistoryEntry) -> str:
    """One entry as a line: when, who, what moved, the guard's decision, why."""
    if entry.action == "promote":
        what = f"{entry.label}: {entry.from_ or '(new)'} -> {entry.to}"
    else:
        what = f"{entry.version}: {_weight(entry.from_)} -> {_weight(entry.to)}"
    notes = []
    if not entry.applied:
        notes.append("REFUSED")
    if entry.guard is not None:
        notes.append(f"guard {entry.guard.get('decision')}")
    if entry.forced:
        notes.append("forced")
    line = f"{entry.at}  {entry.action:<8}  {what}"
    if notes:
        line += f"  [{', '.join(notes)}]"
    line += f"  by {entry.who}"
    if entry.reason:
        line += f": {entry.reason}"
    return line
