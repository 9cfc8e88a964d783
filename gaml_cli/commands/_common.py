"""Options shared by many commands, as Annotated aliases (one definition, one help text)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer


class Format(str, Enum):
    human = "human"
    json = "json"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Split(str, Enum):
    train = "train"
    test = "test"
    all = "all"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Oracle(str, Enum):
    """The oracle rewards of gaml_cli.datasets.oracles.ORACLES (a test keeps the two equal)."""

    size = "size"
    small = "small"
    left = "left"
    centered = "centered"


FormatOpt = Annotated[
    Format,
    typer.Option("--format", "-f", help="Summary format: 'human' (for people) or 'json' (one object on stdout)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or logs on stderr.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Base random seed; sample i uses a seed derived from (seed, i).")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto picks cuda, then mps, then cpu.")]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="Compute dtype: fp32, bf16 or fp16 (GPU).")]
OracleOpt = Annotated[
    Oracle,
    typer.Option("--oracle", help="What the reward measures, from the pixels: size (area share of the shape, larger "
                 "preferred), small (smaller preferred), left (centroid further left preferred), centered "
                 "(centroid closer to the image centre preferred)."),
]
OutOpt = Annotated[str, typer.Option("--out", "-o", help="Output path ('-' for stdout where the format streams).")]
OptionalPath = Optional[str]


def setup(fmt: Format | str = "human", quiet: bool = False) -> None:
    """Apply the per-command console options."""
    from ..core import console

    console.set_options(quiet=quiet, fmt=fmt.value if isinstance(fmt, Enum) else fmt)


def check_out(path: str | None, suffix: str, option: str = "--out", inputs: dict | None = None,
              stdout_ok: bool = False) -> None:
    """Refuse an output path that cannot be right before any work is done: '-' (unless
    stdout_ok), a folder, the wrong file type, one of the command's `inputs` ({option: path}:
    writing it would destroy the input), or a place that cannot be written (read-only folder,
    full disk). (None: the option was not given.)"""
    if path is None:
        return
    from pathlib import Path

    from ..core.errors import UsageError

    if path == "-":
        if stdout_ok:
            return
        raise UsageError(f"{option}: this is written to a file; give a path")
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name ending in {suffix}")
    if p.suffix != suffix:
        raise UsageError(f"{option} {path}: expected a file name ending in {suffix}")
    from ..core.paths import check_outputs

    check_outputs({option: path}, inputs)


def check_folder_out(path: str, option: str = "--out", inputs: dict | None = None) -> None:
    """The same checks for an output folder (created if missing)."""
    from ..core.paths import check_outputs

    check_outputs({}, inputs, folders={option: path})


def out_file(suffix: str, stdout: bool = False):
    """An option callback that refuses an output file name of the wrong type while the command
    line is parsed, so `gaml run --dry-run` catches it in a recipe before anything runs."""

    def check(value: str | None) -> str | None:
        if value is None or (stdout and value == "-"):
            return value
        if value == "-":
            raise typer.BadParameter("this is written to a file; give a path")
        if not value.endswith(suffix):
            raise typer.BadParameter(f"{value}: expected a file name ending in {suffix}")
        return value

    return check


def out_folder(value: str) -> str:
    """Option callback for a run folder: refuses a .safetensors file name while parsing."""
    if value.endswith(".safetensors"):
        raise typer.BadParameter(f"{value}: give a folder (the run writes generator.safetensors, checkpoints/, log.jsonl)")
    return value


def value(v):
    """The plain value of an Enum-typed option (typer passes the Enum member)."""
    return v.value if isinstance(v, Enum) else v


def joined_signature(base, *extras, before: str):
    """The signature of `base` (a function whose parameters are a command's options) with the
    parameters of `extras` inserted before the one named `before`: commands that share most of
    their options (distill/unlearn, the align commands) take them from one holder."""
    import inspect

    params = list(inspect.signature(base, eval_str=True).parameters.values())
    more = [p for e in extras for p in inspect.signature(e, eval_str=True).parameters.values()]
    cut = [p.name for p in params].index(before)
    return inspect.Signature(params[:cut] + more + params[cut:])
