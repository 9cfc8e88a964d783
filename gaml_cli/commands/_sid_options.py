"""Options shared by `gaml distill` and `gaml unlearn` (one definition, so the two never drift
apart), and the call into methods/sid.run that both commands make."""

from __future__ import annotations

import inspect
from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, PrecisionOpt, QuietOpt, joined_signature, out_folder, setup


def sid_options(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="digits (shipped), a teacher artifact (gaml train, e.g. recipes/teacher-shapes.yaml), sd15 or an SD pipeline folder / hub id.")],
    out: Annotated[str, typer.Option("--out", "-o", callback=out_folder, help="Run folder: generator.safetensors, checkpoints/, log.jsonl (+ unet/ for SD).")],
    steps: Annotated[int, typer.Option(min=1, help="SiD iterations (one fake-score and one generator update each).")] = 800,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Samples per update, over all processes [gaml teachers 64; SD 512 as in the paper].")] = None,
    micro_batch: Annotated[int, typer.Option(min=0, help="Split each process's batch into passes of this size (gradient accumulation; 0 = no split).")] = 0,
    lr: Annotated[Optional[float], typer.Option(min=0.0, help="Generator learning rate [gaml teachers 1e-4; SD 1e-6].")] = None,
    lr_fake: Annotated[Optional[float], typer.Option(min=0.0, help="Fake-score learning rate [gaml teachers 2 x --lr; SD = --lr].")] = None,
    betas: Annotated[str, typer.Option(help="Adam betas of both networks.")] = "0,0.999",
    alpha: Annotated[Optional[float], typer.Option(help="alpha of the SiD generator loss (L2 - alpha L1) [EDM teachers 1.2; SD 1.0 as in SiD-LSG].")] = None,
    init_sigma: Annotated[Optional[float], typer.Option(min=0.0, help="sigma_init of G(z) = D(sigma_init z; sigma_init) [EDM teachers 2.5; SD: sigma of t_init 625].")] = None,
    lsg: Annotated[Optional[float], typer.Option(min=0.0, help="Long-and-short guidance scale: sets kappa1 = kappa2 = kappa3 = kappa4 [gaml teachers 1 (plain SiD); SD 1.5].")] = None,
    kappa1: Annotated[Optional[float], typer.Option(min=0.0, help="CFG of the fake score in its own loss [= --lsg].")] = None,
    kappa2: Annotated[Optional[float], typer.Option(min=0.0, help="CFG of the fake score in the generator loss (kappa2 = kappa3) [= --lsg].")] = None,
    kappa4: Annotated[Optional[float], typer.Option(min=0.0, help="CFG of the teacher in the generator loss [= --lsg].")] = None,
    p_uncond: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Null-condition rate when training the fake score [0.1 if kappa1 or kappa2 != 1, else 0].")] = None,
    t_min: Annotated[Optional[int], typer.Option(min=0, max=1000, help="Smallest t (of 1000) of the score evaluations [EDM 0; SD 20].")] = None,
    t_max: Annotated[Optional[int], typer.Option(min=1, max=1000, help="Largest t (of 1000) [EDM 800, sigma 24.4; SD 980].")] = None,
    ema_halflife: Annotated[Optional[float], typer.Option(min=0.0, help="EMA half-life of G in thousands of images, 0 = no EMA [gaml teachers 25; SD 50].")] = None,
    ema_rampup: Annotated[Optional[float], typer.Option(min=0.0, help="EMA ramp-up: the half-life is at most this fraction of the images seen so far (EDM's ema_rampup_ratio; 0 = off) [gaml teachers 0.5; SD 0.05].")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Prompts, one a line (text) or JSONL with 'prompt'/'caption' (SD: required; shapes: instead of random captions).")] = None,
    precision: PrecisionOpt = "fp32",
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute UNet activations in backward (less memory, slower).")] = False,
    lora_rank: Annotated[int, typer.Option(min=0, help="Train rank-r LoRA adapters (peft) on G and the fake score instead of all weights (0 = full).")] = 0,
    init_from: Annotated[Optional[str], typer.Option(help="Start G from a finished gaml distill/unlearn run of this teacher (e.g. SFD's two-stage variant: distil first, then unlearn from it); its sigma_init unless --init-sigma.")] = None,
    real_data: Annotated[Optional[str], typer.Option(help="SiDA (arXiv 2410.14919): real images for an adversarial loss whose discriminator is the fake score network's encoder: digits, shapes or an images artifact (gaml dataset ...). Off: plain SiD, data-free. E.g. --real-data digits, or with --init-from a finished SiD run.")] = None,
    adversarial_weight: Annotated[Optional[float], typer.Option(min=0.0, help="SiDA: weight of the adversarial term in the generator loss, L_SiD + w L_adv (needs --real-data) [1, the reference's equal mix].")] = None,
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a resumable checkpoint every N iterations (0: at the end and on Ctrl-C).")] = 200,
    eval_every: Annotated[int, typer.Option(min=0, help="Every N iterations score the EMA generator's FD on a fixed batch (digits/shapes teachers).")] = 0,
    eval_n: Annotated[int, typer.Option(min=10, help="Samples of that fixed batch.")] = 1000,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of noise, conditions and LoRA init.")] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
    """(Signature holder: the options of gaml distill, also taken by gaml unlearn.)"""


def signature(extra=None) -> inspect.Signature:
    """distill's signature, with `extra`'s parameters after --teacher and --out (unlearn's)."""
    return joined_signature(sid_options, *([extra] if extra else []), before="steps")


def run_command(kw: dict, forget: dict | None = None) -> None:
    """Parse nothing, decide nothing: hand the options to methods.sid.run and print its summary."""
    setup(kw.pop("fmt"), kw.pop("quiet"))
    from ..core import console
    from ..methods.sid.run import ForgetOptions, RunOptions, run

    for key in ("precision", "device"):
        kw[key] = kw[key].value if hasattr(kw[key], "value") else kw[key]
    opts = RunOptions(**kw, forget=ForgetOptions(**forget) if forget is not None else None)
    summary = run(opts)
    if summary is not None:
        console.summary(summary, title=opts.label)
