"""gaml distill: data-free one-step distillation by SiD with long and short guidance (SiD-LSG).

Thin: the options live in _sid_options (shared with gaml unlearn), the job in methods/sid/run.py.
"""

from __future__ import annotations

from ._sid_options import run_command, signature


def distill(**kw):
    """Distil a diffusion teacher into a one-step generator, data-free (SiD-LSG).

    Three networks as in the paper: the frozen teacher, a fake score network and the
    generator, both initialised from the teacher; each iteration updates the fake score on the
    generator's samples, then the generator by the SiD loss. --lsg puts classifier-free
    guidance on both score networks (long and short guidance). The run folder's
    generator.safetensors samples with one function evaluation in `gaml sample`; for Stable
    Diffusion, unet/ is a diffusers UNet folder. Several GPUs: `torchrun --nproc_per_node N -m gaml_cli distill ...`
    (or `accelerate launch --multi_gpu -m gaml_cli distill ...`), same options.

    Example:

    \b
        gaml distill --teacher digits --out runs/sid-digits
        gaml sample --model runs/sid-digits -n 1000 --out onestep.safetensors
        gaml eval fd --images onestep.safetensors --ref digits
        gaml distill --teacher sd15 --lsg 1.5 --prompts captions.txt --precision bf16 --out runs/sid-sd15
    """
    run_command(kw)


distill.__signature__ = signature()
