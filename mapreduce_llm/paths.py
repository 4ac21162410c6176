"""Every default the environment decides, in one place: folders and the Ray cluster to join.

A job spec or a flag always wins; these are what applies when neither says. Each function reads its variable
when called, so a test or a caller can set the variable after import.

=========================  ==========================================================================
``MAPREDUCE_LLM_PROMPTS``  folder of prompt files (else ./prompts, else the project's prompts/)
``MAPREDUCE_LLM_BASELINES`` folder of drift baselines (else ./baselines)
``MAPREDUCE_LLM_CACHE``    converted models and file hashes (else ~/.cache/mapreduce-llm)
``RAY_ADDRESS``            the Ray cluster a job joins (else a local one is started for the job)
=========================  ==========================================================================

Secrets are not defaults and are read where they are used: the OpenAI API key from the variable named by
``engine.api_key_env``, the Ray auth token in :mod:`mapreduce_llm.submission`.
"""

from __future__ import annotations

import os
from pathlib import Path

PROMPTS_ENV = "MAPREDUCE_LLM_PROMPTS"
BASELINES_ENV = "MAPREDUCE_LLM_BASELINES"
CACHE_ENV = "MAPREDUCE_LLM_CACHE"
RAY_ADDRESS_ENV = "RAY_ADDRESS"

PROJECT_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
"""The prompts/ folder beside the package (a source checkout or an editable install)."""


def _env(name: str) -> str | None:
    """The variable's value, None when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def prompts_dir() -> Path:
    """``$MAPREDUCE_LLM_PROMPTS``, else ./prompts when it exists, else the project's prompts/."""
    env = _env(PROMPTS_ENV)
    if env:
        return Path(env)
    local = Path("prompts")
    if local.is_dir():
        return local.resolve()
    return PROJECT_PROMPTS


def baselines_dir() -> Path:
    """``$MAPREDUCE_LLM_BASELINES``, else ./baselines."""
    return Path(_env(BASELINES_ENV) or "baselines")


def cache_dir() -> Path:
    """``$MAPREDUCE_LLM_CACHE``, else ``~/.cache/mapreduce-llm``: converted models and remembered file hashes."""
    env = _env(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "mapreduce-llm"


def ray_address() -> str | None:
    """``$RAY_ADDRESS``: the Ray cluster a job joins; None: start a local one for the job."""
    return _env(RAY_ADDRESS_ENV)
