"""Teacher training: the EDM loss on an image artifact, explicit loop (setup / train / save).

Per step: draw a batch, drop its condition with probability p_uncond (so the same network
is also the unconditional model that classifier-free guidance needs), draw
ln(sigma) ~ N(P_mean, P_std^2), take one Adam step on the EDM loss, update the EMA copy.
Checkpoints (model, EMA, optimizer, RNG, step) go to a folder every N steps and on
Ctrl-C; `--resume` continues from the last one and reproduces the uninterrupted run.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import console
from ..core.checkpoint import CheckpointDir, StepLoop
from ..core.runtime import require_finite
from ..core.ema import ema_decay, ema_update
from ..core.errors import UsageError
from .data import ImageData, vocabulary
from .edm import EDMPrecond, edm_loss, sample_sigma_train
from .models import build, default_unet, param_count


@dataclass
class TrainConfig:
    steps: int = 4000
    batch_size: int = 128
    lr: float = 5e-4
    warmup: int = 200
    betas: tuple[float, float] = (0.9, 0.999)
    ema: float = 0.999
    p_uncond: float = 0.1
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    seed: int = 0
    unet: dict[str, Any] = field(default_factory=dict)


def model_config(data: ImageData, tc: TrainConfig) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": data.cond_type}
    if data.cond_type == "class":
        cond["num_classes"] = len(data.info["classes"])
    elif data.cond_type == "text":
        cond.update({"vocab": vocabulary(data.captions), "dim": 64, "layers": 2, "heads": 4, "max_len": 16,
                     "pool": "mean"})
    return {
        "arch": "edm-unet2d",
        "image_shape": data.info["image_shape"],
        "sigma_data": tc.sigma_data,
        "cond": cond,
        "unet": tc.unet or default_unet(data.info["image_shape"]),
    }


def _lr(step: int, tc: TrainConfig) -> float:
    return tc.lr * min(1.0, (step + 1) / max(1, tc.warmup))


def train_teacher(data: ImageData, tc: TrainConfig, ckpt_dir: Path, device: torch.device,
                  resume: bool = False, resume_from: Path | None = None
                  ) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """Returns (EMA model, model config, training report)."""
    # ---- setup
    torch.manual_seed(tc.seed)
    mcfg = model_config(data, tc)
    model = build(mcfg).to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tc.betas)
    gen = torch.Generator(device="cpu").manual_seed(tc.seed)
    images = torch.from_numpy(data.images).to(device)
    n = len(images)
    if data.cond_type == "class":
        conds = torch.from_numpy(data.labels).to(device)
        null = model.null_condition(1, device)
    elif data.cond_type == "text":
        conds = model.text.tokenize(data.captions, device)
        null = model.null_condition(1, device)
    else:
        conds, null = None, None
    precond = EDMPrecond(tc.sigma_data)
    ckpt = CheckpointDir(ckpt_dir, keep=2)
    start, seconds = 0, 0.0
    last_loss_resumed = None
    if resume or resume_from is not None:
        step, state, run_cfg = ckpt.load(resume_from, device="cpu")
        if run_cfg.get("model") != mcfg:
            raise UsageError(f"{ckpt_dir}: checkpoint was made for another model/data configuration")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, seconds = step, float(state.get("seconds", 0.0))
        last_loss_resumed = state.get("loss")
        console.log(f"resumed from {resume_from or ckpt.latest()} at step {start}")

    def save_ckpt(step: int) -> None:
        ckpt.save(step, {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                         "gen": gen.get_state(), "seconds": seconds + time.perf_counter() - t0,
                         "loss": None if last_loss != last_loss else last_loss},
                  config={"model": mcfg, "train": asdict(tc)}, seed=tc.seed)

    # ---- train
    console.log(f"training a {data.cond_type}-conditional EDM teacher: {param_count(model) / 1e6:.2f}M parameters, "
                f"{n} images {tuple(images.shape[1:])}, {tc.steps} steps of {tc.batch_size} on {device}")
    t0 = time.perf_counter()
    last_loss = float("nan") if last_loss_resumed is None else float(last_loss_resumed)
    loop = StepLoop(start, tc.steps, save_ckpt, ckpt, every=tc.checkpoint_every, save_at_end=bool(tc.checkpoint_every))
    with loop, console.progress(tc.steps, "train", completed=start) as bar:
        for step in loop:
            idx = torch.randint(n, (tc.batch_size,), generator=gen).to(device)
            x0 = images[idx]
            cond = None
            if conds is not None:
                cond = conds[idx].clone()
                drop = (torch.rand(tc.batch_size, generator=gen) < tc.p_uncond).to(device)
                cond[drop] = null[0]
            sigma = sample_sigma_train(tc.batch_size, tc.p_mean, tc.p_std, generator=gen).to(device)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            loss = edm_loss(model, x0, cond, sigma, noise, precond).mean()
            require_finite(step, loss=loss)
            for g in opt.param_groups:
                g["lr"] = _lr(step, tc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            ema_update(ema, model, ema_decay(step, tc.ema))
            last_loss = float(loss.detach())
            bar.update(1, loss=last_loss)
    # ---- report
    seconds += time.perf_counter() - t0
    if start >= tc.steps:
        console.warn(f"the checkpoint is already at step {start} >= --steps {tc.steps}; saving it as it is")
    report = {"steps": max(start, tc.steps), "final_loss": None if last_loss != last_loss else last_loss, "train_seconds": round(seconds, 1),
              "parameters": param_count(ema), "images": n, "device": str(device)}
    return ema, mcfg, report
