"""The root typer app: one add_typer per group; imports only the thin commands/* modules."""

from __future__ import annotations

from typing import Annotated

import typer

from . import __version__
from .commands import align_lm  # the LM commands (SAPO, TRL's SFT/DPO/ORPO) join the align group
from .commands import align, boost, completion, dataset, distill, embed, eval as eval_cmd, export, graphgen, grid, info, inspect, models, run, sample, topic, train, unlearn

app = typer.Typer(
    name="gaml",
    help=(
        "gaml: generative-AI research methods as composable commands. "
        "Artifacts are safetensors/JSONL files that describe themselves; stdout carries "
        "data, stderr carries logs and progress. Exit codes: 0 ok, 1 failure, 2 bad input."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gaml {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or logs on stderr.")] = False,
):
    """gaml: generative-AI research methods as composable commands."""
    from .core import console

    console.set_options(quiet=quiet)


app.add_typer(dataset.app, name="dataset")
app.add_typer(models.app, name="models")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(align.app, name="align")
for _name, _fn in align_lm.COMMANDS:
    align.app.command(_name)(_fn)
app.add_typer(embed.app, name="embed")
app.add_typer(boost.app, name="boost")
app.add_typer(graphgen.app, name="graphgen")
app.add_typer(topic.app, name="topic")
app.command("train")(train.train)
app.command("sample")(sample.sample)
app.command("export")(export.export)
app.command("distill")(distill.distill)
app.command("unlearn")(unlearn.unlearn)
app.command("run")(run.run)
app.command("inspect")(inspect.inspect)
app.command("grid")(grid.grid)
app.command("info")(info.info)
app.command("completion")(completion.completion)

_click = None


def click_app():
    """The click command tree behind `app` (built once)."""
    global _click
    if _click is None:
        from .core.clicompat import finite_floats

        _click = typer.main.get_command(app)
        finite_floats(_click)  # no option of gaml takes nan or inf
    return _click
