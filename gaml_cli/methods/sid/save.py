"""Writing the distilled generator.

gaml teachers: `generator.safetensors` (kind "generator", the teacher's architecture with G's
weights, config["generator"]["sigma_init"]); `gaml sample` draws x = D(sigma_init z; sigma_init, c).

Stable Diffusion: `unet/` is a plain diffusers UNet2DConditionModel folder (LoRA merged), and
`generator.safetensors` (kind "generator") records the base pipeline, sigma_init and the
scheduler's alphas_cumprod, so `gaml sample --model RUN` can rebuild the one-step sampler.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .model import merged_state_dict

from ...diffusion.io import RUN_GENERATOR as GENERATOR_FILE


def _meta(dc, report: dict[str, Any], teacher, forget: dict | None = None) -> dict[str, Any]:
    method = "SiD-LSG (arXiv 2406.01561; SiD arXiv 2404.04057)"
    if forget:
        method = "SFD, score forgetting distillation (arXiv 2409.11219) on " + method
    return {"method": method, **asdict(dc),
            **{k: v for k, v in report.items() if k != "history"}, "eval_history": report.get("history", []),
            "teacher": teacher.describe(), **({"forget": forget} if forget else {})}


def save_generator(teacher, G: torch.nn.Module, dc, report: dict[str, Any], out_dir: Path,
                   forget: dict | None = None) -> Path:
    """forget: the ForgetPlan of gaml unlearn, recorded in the artifact (gaml eval forget reads it)."""
    out_dir = Path(out_dir)
    if teacher.family == "sd":
        return _save_sd(teacher, G, dc, report, out_dir, forget)
    from ...diffusion.io import save_model
    from ...diffusion.models import build

    plain = build(teacher.config["model"])
    plain.load_state_dict(merged_state_dict(G))
    cfg = {"model": teacher.config["model"], "data": teacher.config.get("data", {}),
           "generator": {"sigma_init": dc.sigma_init}, "distill": _meta(dc, report, teacher, forget)}
    return save_model(out_dir / GENERATOR_FILE, plain, kind="generator", config=cfg, seed=dc.seed,
                      parents=[teacher.path])


def _save_sd(teacher, G, dc, report, out_dir: Path, forget: dict | None = None) -> Path:
    from diffusers import UNet2DConditionModel

    from ...core.artifacts import save_artifact

    base = teacher.net.unet
    unet = UNet2DConditionModel.from_config(base.config)
    unet.load_state_dict(merged_state_dict(G.unet))
    tmp = Path(tempfile.mkdtemp(prefix=".unet-", dir=out_dir))
    try:
        unet.save_pretrained(tmp, safe_serialization=True)
        final = out_dir / "unet"
        old = None
        if final.exists():
            old = out_dir / f".unet-old-{tmp.name}"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    abar = (1.0 / (1.0 + teacher.net.sigmas.double().cpu() ** 2)).float()
    cfg = {"sd": {"pipeline": str(teacher.path), "unet": "unet", "prediction_type": teacher.net.prediction_type},
           "generator": {"sigma_init": dc.sigma_init}, "distill": _meta(dc, report, teacher, forget)}
    return save_artifact(out_dir / GENERATOR_FILE, {"alphas_cumprod": abar}, kind="generator", config=cfg,
                         seed=dc.seed, parents=[{"path": str(teacher.path), "kind": "sd-pipeline"}])
