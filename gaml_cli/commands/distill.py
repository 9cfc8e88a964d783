"""gaml distill: data-free one-step distillation by SiD with long and short guidance (SiD-LSG)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._common import DeviceOpt, FormatOpt, PrecisionOpt, QuietOpt, setup


def distill(
    teacher: Annotated[str, typer.Option("--teacher", "-t", help="digits (shipped), a teacher artifact (gaml train, e.g. recipes/teacher-shapes.yaml), sd15 or an SD pipeline folder / hub id.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Run folder: generator.safetensors, checkpoints/, log.jsonl (+ unet/ for SD).")],
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
    checkpoint_every: Annotated[int, typer.Option(min=0, help="Save a resumable checkpoint every N iterations (0: at the end and on Ctrl-C).")] = 200,
    eval_every: Annotated[int, typer.Option(min=0, help="Every N iterations score the EMA generator's FD on a fixed batch (digits/shapes teachers).")] = 0,
    eval_n: Annotated[int, typer.Option(min=10, help="Samples of that fixed batch.")] = 1000,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of noise, conditions and LoRA init.")] = 0,
    device: DeviceOpt = "auto",
    fmt: FormatOpt = "human",
    quiet: QuietOpt = False,
):
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
    run_sid(dict(locals()))


def run_sid(o: dict, forget: dict | None = None) -> None:
    """The body of gaml distill and gaml unlearn: o holds distill's options by name; forget, when
    given, unlearn's (forget, into, pairs, forget_weight, forget_share)."""
    teacher, out, steps, batch_size, micro_batch = o["teacher"], o["out"], o["steps"], o["batch_size"], o["micro_batch"]
    lr, lr_fake, betas, alpha, init_sigma, lsg = o["lr"], o["lr_fake"], o["betas"], o["alpha"], o["init_sigma"], o["lsg"]
    kappa1, kappa2, kappa4, p_uncond, t_min, t_max = o["kappa1"], o["kappa2"], o["kappa4"], o["p_uncond"], o["t_min"], o["t_max"]
    ema_halflife, ema_rampup, prompts, precision = o["ema_halflife"], o["ema_rampup"], o["prompts"], o["precision"]
    gradient_checkpointing, lora_rank, checkpoint_every = o["gradient_checkpointing"], o["lora_rank"], o["checkpoint_every"]
    init_from = o["init_from"]
    eval_every, eval_n, resume, seed, device = o["eval_every"], o["eval_n"], o["resume"], o["seed"], o["device"]
    setup(o["fmt"], o["quiet"])
    from pathlib import Path

    from ..core import console, runtime
    from ..core.errors import UsageError

    out_dir = Path(out)
    if out_dir.suffix == ".safetensors" or (out_dir.exists() and not out_dir.is_dir()):
        raise UsageError(f"--out {out}: give a folder (the run writes generator.safetensors, checkpoints/, log.jsonl)")
    ckpt_dir = out_dir / "checkpoints"
    if resume and not ckpt_dir.is_dir():
        raise UsageError(f"--resume: {out_dir} has no checkpoints/ to resume from")
    if not resume and ckpt_dir.is_dir() and any(ckpt_dir.glob("step-*.safetensors")):
        raise UsageError(f"--out {out} already holds a run; add --resume to continue it or pick a new folder")
    try:
        b = tuple(float(v) for v in betas.split(","))
        assert len(b) == 2 and all(0 <= v < 1 for v in b)
    except (ValueError, AssertionError):
        raise UsageError(f"--betas {betas!r}: expected two numbers in [0, 1), e.g. 0,0.999") from None
    if t_min is not None and t_max is not None and t_min >= t_max:
        raise UsageError(f"--t-min {t_min} must be below --t-max {t_max}")
    prec = precision.value if hasattr(precision, "value") else precision
    dev = runtime.pick_device(device.value if hasattr(device, "value") else device)
    dtype = runtime.pick_dtype(prec, dev)  # refuses fp16 on CPU with one line
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dev.type == "cuda":  # accelerate launch / torchrun
        import torch

        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)

    from ..core.prompts import read_prompts
    from ..methods.sid.model import load_teacher
    from ..methods.sid.train import DistillConfig, check_evaluable, distill as run_distill

    texts = read_prompts(prompts) if prompts is not None else None
    t = load_teacher(teacher, dev, texts, dtype=dtype)  # SD: frozen parts in the compute dtype; trained copies fp32
    sd = t.family == "sd"
    scale = lsg if lsg is not None else (1.5 if sd else 1.0)
    k1, k2, k4 = (scale if k is None else k for k in (kappa1, kappa2, kappa4))
    if t.cond_type == "none" and any(k != 1.0 for k in (k1, k2, k4)):
        raise UsageError("guidance (--lsg/--kappa*) needs a conditional teacher")
    if eval_every:
        check_evaluable(t)
    lo, hi = t.default_t_range
    init_path = None
    if init_from is not None:
        from ..methods.sid.model import read_init

        init_path, init_run_sigma = read_init(init_from, t)
        if init_sigma is None:
            init_sigma = init_run_sigma
    dc = DistillConfig(
        steps=steps, batch_size=batch_size or (512 if sd else 64), micro_batch=micro_batch,
        lr=lr if lr is not None else (1e-6 if sd else 1e-4), betas=b, alpha=alpha if alpha is not None else (1.0 if sd else 1.2),
        sigma_init=init_sigma if init_sigma is not None else t.default_sigma_init,
        kappa1=k1, kappa2=k2, kappa4=k4,
        p_uncond=p_uncond if p_uncond is not None else (0.1 if (k1 != 1.0 or k2 != 1.0) else 0.0),
        t_min=t_min if t_min is not None else lo, t_max=t_max if t_max is not None else hi,
        ema_halflife_kimg=ema_halflife if ema_halflife is not None else (50.0 if sd else 25.0),
        ema_rampup=ema_rampup if ema_rampup is not None else (0.05 if sd else 0.5), precision=prec, grad_clip_value=1.0 if prec == "fp16" else 0.0,
        gradient_checkpointing=gradient_checkpointing, lora_rank=lora_rank, init_from=str(init_path or ""),
        checkpoint_every=checkpoint_every, eval_every=eval_every, eval_n=eval_n, seed=seed)
    dc.lr_fake = lr_fake if lr_fake is not None else (dc.lr if sd else 2 * dc.lr)
    if dc.t_min >= dc.t_max:
        raise UsageError(f"--t-min {dc.t_min} must be below --t-max {dc.t_max}")
    if dc.sigma_init <= 0:
        raise UsageError("--init-sigma must be positive")
    plan = None
    if forget is not None:
        from ..methods.sfd.plan import build_plan

        weight = forget["forget_weight"] if forget["forget_weight"] is not None else (1.0 if sd else 0.01)
        plan = build_plan(t, forget["forget"] or [], forget["into"] or [], forget["pairs"], weight, forget["forget_share"])
    out_dir.mkdir(parents=True, exist_ok=True)
    label = "distill" if plan is None else "unlearn"
    G, report, rank = run_distill(t, dc, out_dir, dev, resume=resume, progress_label=label, plan=plan)
    if rank != 0:
        return
    from ..methods.sid.save import save_generator

    path = save_generator(t, G, dc, report, out_dir, forget=plan.describe() if plan else None)
    last = report["history"][-1] if report["history"] else {}
    console.summary({"out": str(path), "steps": report["steps"], "loss_fake": report["loss_fake"],
                     "loss_g": report["loss_g"], **({"fd": last["fd"], "accuracy": last.get("accuracy")} if last else {}),
                     **({"forget": plan.describe()["pairs"], "forget_weight": plan.weight} if plan else {}),
                     "train_seconds": report["train_seconds"], "trainable_parameters": report["trainable_parameters"]},
                    title=label)
