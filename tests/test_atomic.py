"""Files replaced whole: the old file or the complete new one, never half of it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mapreduce_llm.atomic import atomic_writer, write_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_writer(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("the process fails mid-write")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_the_new_file_replaces_the_old_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "labels.yaml"  # the folder is created
    write_atomic(target, "production: 1.0.0\n", mode=0o644)
    write_atomic(target, "production: 1.1.0\n", mode=0o640)
    assert target.read_text(encoding="utf-8") == "production: 1.1.0\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in target.parent.iterdir()] == ["labels.yaml"]
