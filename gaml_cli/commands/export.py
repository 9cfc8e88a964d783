"""gaml export: a gaml teacher or one-step generator as a folder plain diffusers loads."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import FormatOpt, QuietOpt, setup


def export(
    model: Annotated[str, typer.Option("--model", "-m", help="A 'teacher' or 'generator' artifact, a gaml distill/unlearn run folder, or a shipped alias (digits, shapes).")],
    diffusers: Annotated[str, typer.Option("--diffusers", help="Folder to write: unet/ (diffusers UNet2DModel), gaml_edm.json, README.md (+ text_encoder/).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing non-empty --diffusers folder.")] = False,
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Export a gaml teacher or one-step generator for plain diffusers.

    Writes unet/ with UNet2DModel.save_pretrained (load it with
    UNet2DModel.from_pretrained(DIR + "/unet")), gaml_edm.json with the EDM preconditioning
    (sigma_data, c_skip/c_out/c_in/c_noise, the timestep scale), the conditioning (null label,
    or gaml's caption encoder in text_encoder/) and sigma_init or the sampling defaults, and a
    README.md whose snippet rebuilds gaml's denoiser D(x; sigma, c). Stable Diffusion models
    need no export: their unet/ is already a diffusers folder.

    Example:

    \b
        gaml export --model digits --diffusers digits-diffusers
        gaml export --model runs/sid-digits --diffusers onestep-diffusers --force
    """
    setup(fmt, quiet)
    from ..core import console
    from ..diffusion.export import export_diffusers

    summary = export_diffusers(model, diffusers, force=force)
    console.summary(summary, title="export")
