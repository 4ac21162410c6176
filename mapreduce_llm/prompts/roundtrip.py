"""Rewrite a YAML file a person also edits, keeping its comments, key order and layout (ruamel.yaml round trip).

:func:`update_yaml` merges new data into the document as loaded: values that did not change keep their text and
comments, keys that remain keep their place, new keys go last, keys no longer present are removed.
"""

from __future__ import annotations

import io
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from mapreduce_llm.atomic import write_atomic


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 120
    return yaml


def _plain(value: Any) -> Any:
    """Whole floats as ints (a weight of 10.0 is written 10)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _merge_map(target: CommentedMap, new: Mapping[str, Any]) -> None:
    for key in [k for k in target if k not in new]:
        del target[key]
    for key, value in new.items():
        old = target.get(key)
        if isinstance(value, Mapping) and isinstance(old, CommentedMap):
            _merge_map(old, value)
        elif isinstance(value, list) and isinstance(old, CommentedSeq):
            _merge_seq(old, value)
        elif key not in target or old != value:
            target[key] = value


def _merge_seq(target: CommentedSeq, new: list[Any]) -> None:
    del target[len(new) :]
    for index, value in enumerate(new):
        if index >= len(target):
            target.append(value)
        elif isinstance(value, Mapping) and isinstance(target[index], CommentedMap):
            _merge_map(target[index], value)
        elif target[index] != value:
            target[index] = value


def update_yaml(path: Path, data: Mapping[str, Any], header: str = "") -> None:
    """Write ``data`` to ``path`` (atomically), keeping what the file already says where it still holds.

    ``header``: comment lines for a file that does not exist yet.
    """
    yaml = _yaml()
    data = _plain(data)
    doc = yaml.load(path.read_text(encoding="utf-8")) if path.is_file() else None
    if isinstance(doc, CommentedMap):
        _merge_map(doc, data)
        out: Any = doc
    else:
        out = data
    buffer = io.StringIO()
    if not isinstance(doc, CommentedMap):
        buffer.write(header)
    yaml.dump(out, buffer)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    write_atomic(path, buffer.getvalue(), mode=mode)
