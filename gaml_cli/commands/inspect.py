"""gaml inspect: what an artifact says about itself."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import FormatOpt, QuietOpt, setup


def inspect(
    paths: Annotated[list[str], typer.Argument(help="safetensors artifacts or JSONL files ('-' = stdin JSONL).")],
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Show an artifact's kind, config, provenance and tensors; check JSONL line by line.

    Any gaml artifact can be read without a side file. For JSONL every line is parsed and
    a broken one is reported with its number (exit code 2).

    Example:

    \b
        gaml inspect data/digits.safetensors
        gaml inspect --format json data/shapes.jsonl
    """
    setup(fmt, quiet)
    from collections import Counter

    from ..core import console
    from pathlib import Path

    from ..core.artifacts import file_sha256, read_header, read_jsonl
    from ..diffusion.io import run_artifact
    from ..diffusion.sd import ALIGN_CONFIG

    results = []
    for path in paths:
        if path == "-" or path.endswith((".jsonl", ".ndjson")):
            kinds: Counter = Counter()
            keys: Counter = Counter()
            n = 0
            for rec in read_jsonl(path):
                n += 1
                kinds[str(rec.get("kind", "-"))] += 1
                keys.update(rec.keys())
            results.append({"path": path, "format": "jsonl", "records": n,
                            "kinds": dict(kinds), "keys": sorted(keys)})
        elif (Path(path) / ALIGN_CONFIG).is_file():  # a `gaml align` run of a Stable Diffusion pipeline
            results.append(_sd_align_run(Path(path)))
        else:
            path = str(run_artifact(Path(path)))  # a distill / unlearn / align run folder -> its model
            info = read_header(path)
            d = info.to_dict()
            d["format"] = "safetensors"
            d["sha256"] = file_sha256(path)
            results.append(d)
    if console.state.format == "json":
        console.print_json(results if len(results) > 1 else results[0])
        return
    import json

    for r in results:
        typer.echo(f"{r['path']}")
        if r["format"] == "jsonl":
            typer.echo(f"  format: jsonl, {r['records']} records")
            typer.echo(f"  keys: {', '.join(r['keys'])}")
            continue
        if r["format"] == "sd-align-run":
            typer.echo(f"  kind: sd-align run of {r['config'].get('pipeline')} ({r['weights']})")
            typer.echo(f"  config: {json.dumps(r['config'], sort_keys=True)}")
            continue
        typer.echo(f"  kind: {r['kind'] or '(not a gaml artifact)'}   gaml {r['version'] or '-'}")
        typer.echo(f"  sha256: {r['sha256']}")
        prov = r["provenance"]
        if prov:
            typer.echo(f"  made by: {prov.get('command', '-')}")
            typer.echo(f"  seed: {prov.get('seed')}   created: {prov.get('created', '-')}")
            for parent in prov.get("parents", []):
                typer.echo(f"  parent: {parent.get('path')} ({parent.get('kind', '?')}, sha256 {str(parent.get('sha256'))[:12]})")
        if r["config"]:
            typer.echo(f"  config: {json.dumps(r['config'], sort_keys=True)}")
        for name, spec in r["tensors"].items():
            typer.echo(f"  tensor {name}: {spec['dtype']} {tuple(spec['shape'])}")


def _sd_align_run(folder):
    """What `gaml inspect` shows of a Stable Diffusion align run folder: align.json and which
    weights it holds (LoRA for pipe.load_lora_weights, or a diffusers unet/)."""
    import json

    from ..core.errors import InputError
    from ..diffusion.sd import ALIGN_CONFIG

    try:
        cfg = json.loads((folder / ALIGN_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder / ALIGN_CONFIG}: not readable JSON ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("kind") != "sd-align":
        raise InputError(f"{folder / ALIGN_CONFIG}: not a gaml align run's config (kind sd-align)")
    lora = folder / "pytorch_lora_weights.safetensors"
    weights = ("LoRA: pytorch_lora_weights.safetensors" if lora.is_file() else
               "unet/" if (folder / "unet" / "config.json").is_file() else "no weights found")
    return {"path": str(folder), "format": "sd-align-run", "kind": "sd-align", "weights": weights, "config": cfg}
