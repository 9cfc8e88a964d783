"""The whole SiD-LSG / SFD job from one options object: `gaml distill` and `gaml unlearn` are
thin wrappers around `run`, and Python users call it directly:

    from gaml_cli.methods.sid.run import RunOptions, ForgetOptions, run
    summary = run(RunOptions(teacher="digits", out="runs/sid", steps=200))
    summary = run(RunOptions(teacher="digits", out="runs/sfd", forget=ForgetOptions(["0"], ["1"])))

`None` in an option means "the default for this teacher's family" (gaml's EDM teachers or
Stable Diffusion), resolved here from the loaded teacher, as the command's help lists them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ForgetOptions:
    """SFD's forgetting options (`gaml unlearn`)."""

    forget: list[str] = field(default_factory=list)  # conditions to forget: 0, color=red, nudity
    into: list[str] = field(default_factory=list)  # what each becomes
    pairs: str | None = None  # JSONL of {"forget", "into"} pairs
    forget_weight: float | None = None  # lambda_f [EDM teachers 0.01; SD 1.0]
    forget_share: float = 0.5  # share of each batch drawn with forget conditions


@dataclass
class RunOptions:
    """Every option of `gaml distill`, by the same names (None: the family default)."""

    teacher: str
    out: str
    steps: int = 800
    batch_size: int | None = None
    micro_batch: int = 0
    lr: float | None = None
    lr_fake: float | None = None
    betas: str = "0,0.999"
    alpha: float | None = None
    init_sigma: float | None = None
    lsg: float | None = None
    kappa1: float | None = None
    kappa2: float | None = None
    kappa4: float | None = None
    p_uncond: float | None = None
    t_min: int | None = None
    t_max: int | None = None
    ema_halflife: float | None = None
    ema_rampup: float | None = None
    prompts: str | None = None
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    lora_rank: int = 0
    init_from: str | None = None
    real_data: str | None = None  # SiDA: real images for the discriminator
    adversarial_weight: float | None = None  # SiDA: weight of G's adversarial term [1 with --real-data]
    checkpoint_every: int = 200
    eval_every: int = 0
    eval_n: int = 1000
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    forget: ForgetOptions | None = None  # set: SFD (`gaml unlearn`)

    @property
    def label(self) -> str:
        return "distill" if self.forget is None else "unlearn"


FLOAT_OPTIONS = ("lr", "lr_fake", "alpha", "init_sigma", "lsg", "kappa1", "kappa2", "kappa4", "p_uncond",
                 "ema_halflife", "ema_rampup", "adversarial_weight")


def parse_betas(betas: str) -> tuple[float, float]:
    from ...core.errors import UsageError

    try:
        b = tuple(float(v) for v in betas.split(","))
        assert len(b) == 2 and all(0 <= v < 1 for v in b)
    except (ValueError, AssertionError):
        raise UsageError(f"--betas {betas!r}: expected two numbers in [0, 1), e.g. 0,0.999") from None
    return b  # type: ignore[return-value]


def check_options(o: RunOptions) -> tuple[float, float]:
    """Refuse impossible options before anything is loaded; returns the parsed betas."""
    from ...core.errors import UsageError

    for name in FLOAT_OPTIONS:
        v = getattr(o, name)
        if v is not None and not math.isfinite(v):
            raise UsageError(f"--{name.replace('_', '-')} {v}: expected a finite number")
    if o.forget is not None:
        w = o.forget.forget_weight
        if w is not None and not math.isfinite(w):
            raise UsageError(f"--forget-weight {w}: expected a finite number")
        if not math.isfinite(o.forget.forget_share):
            raise UsageError(f"--forget-share {o.forget.forget_share}: expected a finite number")
    b = parse_betas(o.betas)
    if o.t_min is not None and o.t_max is not None and o.t_min >= o.t_max:
        raise UsageError(f"--t-min {o.t_min} must be below --t-max {o.t_max}")
    if o.init_sigma is not None and o.init_sigma <= 0:
        raise UsageError("--init-sigma must be positive")
    if o.adversarial_weight is not None and o.real_data is None:
        raise UsageError("--adversarial-weight needs --real-data (SiDA's discriminator learns from real images)")
    if o.adversarial_weight is not None and o.adversarial_weight < 0:
        raise UsageError("--adversarial-weight must be at least 0")
    return b


def check_out_dir(o: RunOptions) -> Path:
    from ...core.paths import check_run_folder

    return check_run_folder(o.out, o.resume, "generator.safetensors, checkpoints/, log.jsonl")


def resolve_config(o: RunOptions, teacher, betas: tuple[float, float]):
    """DistillConfig with every None replaced by the teacher family's default (the help's [...])."""
    from ...core.errors import UsageError
    from .train import DistillConfig

    sd = teacher.family == "sd"
    scale = o.lsg if o.lsg is not None else (1.5 if sd else 1.0)
    k1, k2, k4 = (scale if k is None else k for k in (o.kappa1, o.kappa2, o.kappa4))
    if teacher.cond_type == "none" and any(k != 1.0 for k in (k1, k2, k4)):
        raise UsageError("guidance (--lsg/--kappa*) needs a conditional teacher")
    lo, hi = teacher.default_t_range
    init_path, init_sigma = None, o.init_sigma
    if o.init_from is not None:
        from .model import read_init

        init_path, init_run_sigma = read_init(o.init_from, teacher)
        if init_sigma is None:
            init_sigma = init_run_sigma
    prec = o.precision
    dc = DistillConfig(
        steps=o.steps, batch_size=o.batch_size or (512 if sd else 64), micro_batch=o.micro_batch,
        lr=o.lr if o.lr is not None else (1e-6 if sd else 1e-4), betas=betas,
        alpha=o.alpha if o.alpha is not None else (1.0 if sd else 1.2),
        sigma_init=init_sigma if init_sigma is not None else teacher.default_sigma_init,
        kappa1=k1, kappa2=k2, kappa4=k4,
        p_uncond=o.p_uncond if o.p_uncond is not None else (0.1 if (k1 != 1.0 or k2 != 1.0) else 0.0),
        t_min=o.t_min if o.t_min is not None else lo, t_max=o.t_max if o.t_max is not None else hi,
        ema_halflife_kimg=o.ema_halflife if o.ema_halflife is not None else (50.0 if sd else 25.0),
        ema_rampup=o.ema_rampup if o.ema_rampup is not None else (0.05 if sd else 0.5), precision=prec,
        grad_clip_value=1.0 if prec == "fp16" else 0.0,
        gradient_checkpointing=o.gradient_checkpointing, lora_rank=o.lora_rank, init_from=str(init_path or ""),
        real_data=o.real_data or "",
        adv_weight=(o.adversarial_weight if o.adversarial_weight is not None else 1.0) if o.real_data else 0.0,
        checkpoint_every=o.checkpoint_every, eval_every=o.eval_every, eval_n=o.eval_n, seed=o.seed)
    dc.lr_fake = o.lr_fake if o.lr_fake is not None else (dc.lr if sd else 2 * dc.lr)
    if dc.t_min >= dc.t_max:
        raise UsageError(f"--t-min {dc.t_min} must be below --t-max {dc.t_max}")
    if dc.sigma_init <= 0:
        raise UsageError("--init-sigma must be positive")
    return dc


def run(o: RunOptions) -> dict | None:
    """Distil (or, with o.forget, distil and forget) o.teacher into a one-step generator in o.out.

    Returns the summary (written generator path, losses, times) on the main process, None on the
    other processes of a multi-GPU run."""
    from ...core import runtime

    betas = check_options(o)
    out_dir = check_out_dir(o)
    dev = runtime.pick_device(o.device)
    dtype = runtime.pick_dtype(o.precision, dev)  # refuses fp16 on CPU with one line
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dev.type == "cuda":  # accelerate launch / torchrun
        import torch

        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)

    from ...core.prompts import read_prompts
    from .model import load_teacher
    from .train import check_evaluable, distill

    texts = read_prompts(o.prompts) if o.prompts is not None else None
    t = load_teacher(o.teacher, dev, texts, dtype=dtype)  # SD: frozen parts in the compute dtype; trained copies fp32
    sd = t.family == "sd"
    if o.eval_every:
        check_evaluable(t)
    dc = resolve_config(o, t, betas)
    plan = None
    if o.forget is not None:
        from ..sfd.plan import build_plan

        f = o.forget
        weight = f.forget_weight if f.forget_weight is not None else (1.0 if sd else 0.01)
        plan = build_plan(t, f.forget or [], f.into or [], f.pairs, weight, f.forget_share)
    real = None
    if o.real_data is not None:
        from .adversarial import RealImages

        real = RealImages(o.real_data, t, plan)  # refuses bad data before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    G, report, rank = distill(t, dc, out_dir, dev, resume=o.resume, progress_label=o.label, plan=plan, real=real)
    if rank != 0:
        return None
    from .save import save_generator

    path = save_generator(t, G, dc, report, out_dir, forget=plan.describe() if plan else None)
    last = report["history"][-1] if report["history"] else {}
    return {"out": str(path), "steps": report["steps"], "loss_fake": report["loss_fake"],
            "loss_g": report["loss_g"], **({"fd": last["fd"], "accuracy": last.get("accuracy")} if last else {}),
            **({"forget": plan.describe()["pairs"], "forget_weight": plan.weight} if plan else {}),
            **({"real_data": o.real_data, "adversarial_weight": dc.adv_weight} if real is not None else {}),
            "train_seconds": report["train_seconds"], "trainable_parameters": report["trainable_parameters"]}
