"""`models` commands (cli/models.py): the embedded model's folder."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mapreduce_llm.cli import Library, cli


def test_prepare_prints_the_model_folder(tmp_path: Path) -> None:
    """`models prepare` converts the embedded model once (through the library) and prints its folder."""
    calls: list[None] = []

    def prepare_model() -> Path:
        calls.append(None)
        return tmp_path / "smollm2"

    result = CliRunner().invoke(cli, ["models", "prepare"], obj=Library(prepare_model=prepare_model))
    assert result.exit_code == 0 and result.output == f"{tmp_path / 'smollm2'}\n" and len(calls) == 1
