"""gaml grid: look at an image artifact."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._common import FormatOpt, QuietOpt, Split, check_out, out_file, setup, value


def grid(
    images: Annotated[str, typer.Argument(help="An 'images' artifact (.safetensors).")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".png"), help="PNG file to write.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=4096, help="How many images.")] = 64,
    nrow: Annotated[Optional[int], typer.Option(min=1, help="Images per row (default: square).")] = None,
    split: Annotated[Split, typer.Option(help="train, test or all (artifacts with a split).")] = "all",
    label: Annotated[Optional[int], typer.Option(help="Only images with this label.")] = None,
    scale: Annotated[Optional[int], typer.Option(min=1, max=16, help="Pixel upscaling (default: to about 64 px).")] = None,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Draw the first N images of an image artifact as a PNG grid.

    Example:

    \b
        gaml grid data/digits.safetensors --label 3 --split test --out threes.png
    """
    setup(fmt, quiet)
    import numpy as np

    from ..core import console
    from ..core.artifacts import load_artifact
    from ..core.errors import InputError, UsageError
    from ..core.images import IMAGE_KIND, save_grid

    check_out(out, ".png", inputs={"IMAGES": images})
    split = value(split)
    art = load_artifact(images, IMAGE_KIND)
    x = art["images"]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise InputError(f"{images}: 'images' must be (N, 1|3, H, W), got {tuple(x.shape)}")
    keep = np.ones(len(x), dtype=bool)
    if split != "all":
        if "split" not in art.tensors:
            raise UsageError(f"{images} has no train/test split; use --split all")
        keep &= art["split"] == (1 if split == "test" else 0)
    if label is not None:
        if "labels" not in art.tensors:
            raise UsageError(f"{images} has no labels; drop --label")
        keep &= art["labels"] == label
    chosen = x[keep][:n]
    if len(chosen) == 0:
        raise InputError(f"{images}: no images match (split={split}, label={label})")
    save_grid(chosen, out, nrow=nrow, scale=scale)
    console.summary({"out": out, "images": int(len(chosen)), "from": images}, title="grid")
