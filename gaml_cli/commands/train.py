"""gaml train: train a diffusion teacher on an image artifact.

Thin: the job is gaml_cli.diffusion.jobs.train.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, Precision, QuietOpt, Split, check_folder_out, check_out, out_file, setup, value


class Cond(str, Enum):
    auto = "auto"
    class_ = "class"
    text = "text"
    none = "none"


def train(
    data: Annotated[str, typer.Option("--data", "-d", help="An 'images' artifact (gaml dataset digits|shapes).")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_file(".safetensors"), help="Teacher artifact to write (.safetensors).")],
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 4000,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step.")] = 128,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate (after linear warm-up).")] = 5e-4,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up steps of the learning rate.")] = 200,
    ema: Annotated[float, typer.Option(min=0.0, max=1.0, help="EMA decay of the saved weights.")] = 0.999,
    p_uncond: Annotated[float, typer.Option(min=0.0, max=1.0, help="Condition dropout (for classifier-free guidance).")] = 0.1,
    cond: Annotated[Cond, typer.Option(help="auto (captions > labels > none), class, text or none.")] = "auto",
    split: Annotated[Split, typer.Option(help="Which images to train on: train, test or all.")] = "train",
    channels: Annotated[Optional[str], typer.Option(help="UNet channels per level, e.g. 48,96,96 (default: by image size).")] = None,
    layers_per_block: Annotated[Optional[int], typer.Option(min=1, max=4, help="ResNet layers per UNet level (default: by image size).")] = None,
    guidance: Annotated[float, typer.Option(min=0.0, help="Default guidance scale stored for `gaml sample`.")] = 1.0,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a resumable checkpoint every N steps (0: only on Ctrl-C).")] = 500,
    checkpoint_dir: Annotated[Optional[str], typer.Option(help="Checkpoint folder (default: OUT without .safetensors + '.ckpt').")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    resume_from: Annotated[Optional[str], typer.Option(help="Continue from this checkpoint file (e.g. an earlier step).")] = None,
    save_precision: Annotated[Precision, typer.Option(help="Stored weight dtype: fp32, fp16 or bf16.")] = "fp32",
    seed: Annotated[int, typer.Option(min=0, help="Seed of initialisation, batches and noise.")] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """Train a conditional EDM diffusion teacher (diffusers UNet2DModel) on an image artifact.

    Class labels (digits) or captions (shapes, through a small text encoder that ships
    inside the teacher) condition the model; p_uncond of them are dropped so classifier-free
    guidance works. The EMA weights are saved. Ctrl-C saves a checkpoint; --resume goes on.

    Example:

    \b
        gaml dataset digits --out data/digits.safetensors
        gaml train --data data/digits.safetensors --steps 4000 --out digits-teacher.safetensors
    """
    setup(fmt, quiet)
    from ..core import console
    from ..diffusion.jobs import TrainOptions, train as run_train

    opts = TrainOptions(data=data, out=out, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, ema=ema,
                        p_uncond=p_uncond, cond=value(cond), split=value(split), channels=channels,
                        layers_per_block=layers_per_block, guidance=guidance, checkpoint_every=checkpoint_every,
                        checkpoint_dir=checkpoint_dir, resume=resume, resume_from=resume_from,
                        save_precision=value(save_precision), seed=seed, device=value(device))
    check_out(out, ".safetensors", inputs={"--data": data, "--resume-from": resume_from})
    check_folder_out(str(opts.ckpt_dir), "--checkpoint-dir", inputs={"--data": data})
    console.summary(run_train(opts), title="teacher")
