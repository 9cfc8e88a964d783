"""gaml completion: print the static completion script for a shell."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(ctx: typer.Context, shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.")]):
    """Print a completion script; it lists every command and option, so TAB never runs Python.

    Example:

    \b
        gaml completion bash > ~/.local/share/bash-completion/completions/gaml
        gaml completion fish > ~/.config/fish/completions/gaml.fish
    """
    from ..core.completion import GENERATORS

    root = ctx.find_root().command  # the command tree, passed down: core imports no command
    typer.echo(GENERATORS[shell.value](root), nl=False)
