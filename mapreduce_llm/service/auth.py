"""Bearer tokens: every request to the service needs ``Authorization: Bearer <token>``.

Tokens come from ``--token-file`` (one per line; several let a token be rotated), else from the environment
variable :data:`TOKEN_ENV` (comma-separated), else a new random token is written once to ``STATE/token``
(mode 0600) and reused on later starts. A token sent is compared with each known one in constant time
(:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from mapreduce_llm.errors import ConfigError

TOKEN_ENV = "MAPREDUCE_LLM_SERVICE_TOKEN"  # noqa: S105 - a variable name, not a token
"""Environment variable holding the service's token(s), when no token file is given."""
MIN_TOKEN_CHARS = 16


def load_tokens(token_file: Path | None, state: Path) -> tuple[list[str], str]:
    """The tokens the service accepts and where they came from (for the start-up log line)."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the token file {token_file}: {exc.strerror or exc}", parameter="token_file"
            ) from None
        tokens, source = [line.strip() for line in text.splitlines() if line.strip()], str(token_file)
    elif os.environ.get(TOKEN_ENV, "").strip():
        tokens, source = [t.strip() for t in os.environ[TOKEN_ENV].split(",") if t.strip()], f"${TOKEN_ENV}"
    else:
        path = state / "token"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
        tokens, source = [path.read_text(encoding="utf-8").strip()], f"{path} (generated)"
    short = [t for t in tokens if len(t) < MIN_TOKEN_CHARS]
    if not tokens or short:
        raise ConfigError(
            f"the service's tokens ({source}) must be at least {MIN_TOKEN_CHARS} characters each; "
            "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
            parameter="token_file",
        )
    return tokens, source


def authorized(header: str | None, tokens: Sequence[str]) -> bool:
    """Whether an ``Authorization`` header holds one of ``tokens`` as a bearer token (constant-time compare)."""
    if not header:
        return False
    scheme, _, sent = header.partition(" ")
    if scheme.lower() != "bearer" or not sent.strip():
        return False
    given = sent.strip().encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token.encode())
    return matched
