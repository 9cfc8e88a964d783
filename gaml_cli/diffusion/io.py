"""Image-model artifacts: save/load gaml's denoisers and generators without pickle.

kind "teacher": a multi-step EDM denoiser (sampled with Heun/Euler).
kind "generator": a one-step generator x = D(sigma_init z; sigma_init, c) (SiD/SFD output).
Both store the network's state dict as tensors and `config["model"]` to rebuild it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.artifacts import load_artifact, read_header, save_artifact, expect_kind
from ..core.errors import InputError

IMAGE_MODEL_KINDS = ("teacher", "generator")
RUN_GENERATOR = "generator.safetensors"  # what a gaml distill / unlearn run folder holds
RUN_MODEL = "model.safetensors"  # what a gaml align run folder holds (a fine-tuned teacher)


def run_artifact(path: Path) -> Path:
    """A gaml distill / unlearn run folder -> its generator artifact, a gaml align run folder ->
    its fine-tuned model; any other path as it is."""
    path = Path(path)
    if path.is_dir():
        for name in (RUN_GENERATOR, RUN_MODEL):
            if (path / name).is_file():
                return path / name
    return path
SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def save_model(path, model: torch.nn.Module, *, kind: str, config: dict[str, Any], seed: int | None,
               parents=(), dtype: str = "fp32") -> Path:
    sd = {k: (v.to(SAVE_DTYPES[dtype]) if v.is_floating_point() else v)
          for k, v in model.state_dict().items()}
    cfg = dict(config)
    cfg["weights_dtype"] = dtype
    return save_artifact(path, sd, kind=kind, config=cfg, seed=seed, parents=parents)


def load_model(path, kinds=IMAGE_MODEL_KINDS, device="cpu"):
    """(model in eval mode, float32, on device; its artifact info)."""
    from .models import build

    info = expect_kind(read_header(path), kinds)
    cfg = info.config
    if "model" not in cfg:
        raise InputError(f"{path}: '{info.kind}' artifact without a model config")
    art = load_artifact(path, info.kind, framework="pt")
    try:
        model = build(cfg["model"])
        missing, unexpected = model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in art.tensors.items()}, strict=False)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise InputError(f"{path}: weights do not fit the model config ({str(exc).splitlines()[0]})") from None
    if missing or unexpected:
        raise InputError(f"{path}: weights do not fit the model config "
                         f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    return model.to(device).eval().requires_grad_(False), info
