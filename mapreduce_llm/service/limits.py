"""What the service accepts and keeps (:class:`ServiceLimits`), durations as ``serve`` takes them, and the error a
refused request raises (:class:`ApiError`, answered in OpenAI's error shape)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mapreduce_llm.errors import MapReduceError

_WINDOW = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ApiError(MapReduceError):
    """A request the service refuses: HTTP status, OpenAI error type and code, and a message saying what to do."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


def parse_duration(text: str) -> int:
    """Seconds in ``24h``, ``30m``, ``7d``, ``90s`` (ValueError otherwise)."""
    match = _WINDOW.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"expected a duration such as 24h, 30m or 7d, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class ServiceLimits:
    """What the service accepts and keeps."""

    max_upload_bytes: int = 200_000_000
    """Largest input file (OpenAI's limit)."""
    max_lines: int = 50_000
    """Most requests in one input file (OpenAI's limit)."""
    retention_s: int = 30 * 86400
    """Files (uploaded and output) and finished batches are deleted this long after they were created/ended."""
    max_completion_window_s: int = 7 * 86400
    stop_timeout_s: float = 120.0
    """How long a cancelled or expired batch waits for its job to stop before its files are written anyway."""
    max_submissions: int = 3
    """Submissions of one job at most (a job the cluster lost is sent again and resumes)."""
