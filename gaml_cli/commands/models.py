"""gaml models: model aliases and where they resolve."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import FormatOpt, QuietOpt, setup

app = typer.Typer(help="Model aliases (sd15, sd21, sdxl, gaml's own) and where they load from.\n\nExample:\n\n\b\n    gaml models ls\n    gaml models where sd15",
                  no_args_is_help=True)


@app.command("ls")
def ls(fmt: FormatOpt = "human", quiet: QuietOpt = False):
    """List every alias with its source and whether a local copy is present (no network).

    Example:

    \b
        gaml models ls --format json | jq -r '.[] | select(.present) | .alias'
    """
    setup(fmt, quiet)
    from ..core import console, hub, registry

    rows = []
    for e in registry.entries():
        loc = hub.locate(e)
        rows.append({**e.to_dict(), "present": loc.present, "path": str(loc.path) if loc.path else None})
    if console.state.format == "json":
        console.print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("alias", "kind", "source", "present", "description"):
        table.add_column(col)
    for r in rows:
        src = f"{r['hub_id']}@{r['revision']}" if r["source"] == "hub" else r.get("asset") or r.get("path")
        table.add_row(r["alias"], r["kind"], src, "yes" if r["present"] else "no", r["description"])
    import sys

    # piped: never truncate (stdout is data); a terminal: fit its width
    Console(highlight=False, width=None if sys.stdout.isatty() else 240).print(table)


@app.command("where")
def where(
    alias: Annotated[str, typer.Argument(help="An alias (sd15), a hub id (org/name) or a path.")],
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Say where ALIAS would load from and whether it is present locally (no network).

    Example:

    \b
        gaml models where sd15
        HF_HOME=/data/hf gaml models where sd15 --format json
    """
    setup(fmt, quiet)
    from pathlib import Path

    from ..core import console, hub

    if Path(alias).expanduser().exists():
        data = {"alias": None, "source": "path", "present": True, "path": str(Path(alias).expanduser().resolve()),
                "looked_in": [alias]}
    else:
        data = hub.locate(hub.entry_for(alias)).to_dict()
        data["cache"] = str(hub.hub_cache_dir()) if data["source"] == "hub" else None
        data["offline"] = hub.offline()
    if console.state.format == "json":
        console.print_json(data)
        return
    for key in ("alias", "kind", "source", "hub_id", "revision", "present", "path", "looked_in",
                "missing_files", "cache", "offline"):
        value = data.get(key)
        if value in (None, [], ""):
            continue
        if isinstance(value, list):
            value = ", ".join(value)
        if isinstance(value, bool):
            value = "yes" if value else "no"
        typer.echo(f"{key}: {value}")


@app.command("download")
def download(
    alias: Annotated[str, typer.Argument(help="An alias (sd15) or a hub id (org/name).")],
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Download a hub model into the Hugging Face cache (configs, tokenizers, safetensors).

    Prints the local folder. With HF_HUB_OFFLINE=1 (or GAML_OFFLINE=1) it fails with one
    line that says what to do instead.

    Example:

    \b
        gaml models download sd15 && gaml models where sd15
    """
    setup(fmt, quiet)
    from ..core import console, hub

    entry = hub.entry_for(alias)
    loc = hub.locate(entry)
    path = loc.path if loc.present else hub.download_entry(entry)
    if console.state.format == "json":
        console.print_json({"alias": entry.alias, "path": str(path), "downloaded": not loc.present})
    else:
        typer.echo(str(path))
