"""gaml train: train a diffusion teacher on an image artifact."""

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
    from pathlib import Path

    from ..core import console, runtime
    from ..core.errors import UsageError
    from ..diffusion.data import load_image_data
    from ..diffusion.io import SAVE_DTYPES, save_model
    from ..diffusion.train import TrainConfig, train_teacher

    cond, split, save_precision = value(cond), value(split), value(save_precision)
    check_out(out, ".safetensors", inputs={"--data": data, "--resume-from": resume_from})
    if save_precision not in SAVE_DTYPES:
        raise UsageError(f"--save-precision must be one of {', '.join(SAVE_DTYPES)}")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else Path(out[: -len(".safetensors")] + ".ckpt")
    check_folder_out(str(ckpt_dir), "--checkpoint-dir", inputs={"--data": data})
    dev = runtime.pick_device(device.value if hasattr(device, "value") else device)
    d = load_image_data(data, split=split, cond=cond)
    if resume and resume_from:
        raise UsageError("give --resume or --resume-from, not both")
    if resume and not ckpt_dir.is_dir():
        raise UsageError(f"--resume: no checkpoint folder {ckpt_dir}")
    if resume_from:
        from ..core.artifacts import expect_kind, read_header

        expect_kind(read_header(resume_from), "checkpoint")
    from ..diffusion.models import default_unet, unet_config

    unet = default_unet(d.info["image_shape"])
    if channels is not None or layers_per_block is not None:
        try:
            ch = [int(c) for c in channels.split(",")] if channels else unet["block_out_channels"]
        except ValueError:
            raise UsageError(f"--channels {channels!r}: expected integers like 48,96,96") from None
        if any(c <= 0 or c % 8 for c in ch):
            raise UsageError("--channels must be positive multiples of 8 (GroupNorm uses 8 groups)")
        side = d.info["image_shape"][-1]
        if side % (2 ** (len(ch) - 1)):
            raise UsageError(f"--channels: {len(ch)} levels need the image side ({side}) divisible by {2 ** (len(ch) - 1)}")
        unet = unet_config(ch, layers_per_block or unet["layers_per_block"])
    tc = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, ema=ema, p_uncond=p_uncond,
                     checkpoint_every=checkpoint_every, seed=seed, unet=unet)
    model, mcfg, report = train_teacher(d, tc, ckpt_dir, dev, resume=resume,
                                        resume_from=Path(resume_from) if resume_from else None)
    from dataclasses import asdict

    config = {"model": mcfg, "data": d.info, "train": {**asdict(tc), **report},
              "sampling": {"sampler": "heun", "steps": 18, "guidance": guidance}}
    path = save_model(out, model, kind="teacher", config=config, seed=seed, parents=[data], dtype=save_precision)
    console.summary({"out": str(path), **report, "checkpoints": str(ckpt_dir)}, title="teacher")
