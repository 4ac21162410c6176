"""structlog setup: a readable console on a terminal, JSON lines otherwise (jobs, CI, Ray workers).

Log lines carry ids, counts and timings, never document text.
"""

from __future__ import annotations

import logging
import sys

import structlog


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger on the current ``sys.stderr``, looked up at each log call (loggers are not cached): a stream swapped
    after configuration (a CLI test runner's, which it closes afterwards) is never written to once gone."""
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog for the CLI. ``json=None`` picks JSON when stderr is not a terminal."""
    use_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
