"""Bearer tokens of the batch service (mapreduce_llm.service.auth)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapreduce_llm.errors import ConfigError
from mapreduce_llm.service.auth import TOKEN_ENV, authorized, load_tokens


def test_tokens_from_a_file_one_per_line(tmp_path: Path) -> None:
    """Blank lines and surrounding spaces are ignored."""
    path = tmp_path / "tokens"
    path.write_text("  first-token-0123456789 \n\nsecond-token-0123456789\n")
    assert load_tokens(path, tmp_path)[0] == ["first-token-0123456789", "second-token-0123456789"]


def test_tokens_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Comma-separated in the variable."""
    monkeypatch.setenv(TOKEN_ENV, "env-token-0123456789,other-token-0123456789")
    tokens, source = load_tokens(None, tmp_path)
    assert tokens == ["env-token-0123456789", "other-token-0123456789"] and source == f"${TOKEN_ENV}"


def test_without_a_token_one_is_generated_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """STATE/token, readable by its owner only, the same on the next start."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    first = load_tokens(None, tmp_path)[0]
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
    assert load_tokens(None, tmp_path)[0] == first and len(first[0]) >= 32


def test_short_tokens_are_refused(tmp_path: Path) -> None:
    """A guessable token stops the service at start, saying how to make a good one."""
    path = tmp_path / "tokens"
    path.write_text("secret\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_tokens(path, tmp_path)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer good-token-0123456789", True),
        ("bearer good-token-0123456789", True),
        ("Bearer good-token-012345678", False),
        ("Bearer ", False),
        ("good-token-0123456789", False),
        (None, False),
    ],
)
def test_authorized(header: str | None, ok: bool) -> None:
    """Only the bearer scheme with a known token."""
    assert authorized(header, ["good-token-0123456789"]) is ok
