"""Stable Diffusion 1.x/2.x for the preference loop (train.align): the model family object and
the run folder.

The policy is the pipeline's UNet behind gaml's EDM adapter (diffusion/sd.VPEpsDenoiser,
epsilon or v prediction); the VAE and the CLIP text encoder stay frozen outside it. In the
adapter's form x_t = x0 + sigma n (sigma_t = sqrt((1 - abar_t) / abar_t)), with D the adapter's
x0-estimate, the UNet's own training targets give

    epsilon-MSE = mean (eps_hat - n)^2 = mean (D - x0)^2 / sigma^2
    v-MSE       = mean (v_hat - v)^2   = mean (D - x0)^2 (1 + sigma^2) / sigma^2

(D - x0 = sigma (n - eps_hat) for epsilon; D - x0 = -sqrt(1 - abar) (v_hat - v) and
1 - abar = sigma^2 / (1 + sigma^2) for v), so `SDFamily.loss_weight` makes the loop's per-sample
error exactly Diffusion-DPO's MSE on the UNet's target (tests/test_align_sd.py checks both
identities against the raw UNet output).

Pairs are VAE-encoded once before training: the latent distribution's MEAN times the scaling
factor (diffusion/sd.SDComponents.encode). The diffusers example draws latent_dist.sample()
at every step instead; the mean is deterministic, lets the latents be cached for the run and
differs from a draw by the VAE's small posterior noise.

The run folder (besides checkpoints/ and log.jsonl): LoRA -> pytorch_lora_weights.safetensors
in peft's key format with its LoraConfig as metadata, which plain diffusers loads with
`StableDiffusionPipeline.from_pretrained(BASE).load_lora_weights(RUN)`; full fine-tuning ->
unet/ (a diffusers UNet folder, safetensors). align.json names the base pipeline and which of
the two the run holds, so `gaml sample --model RUN` loads base + LoRA or base + unet/.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch


def sd_loss_weight(sigma: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The weight that turns mean (D - x0)^2 into the UNet's own MSE (module docstring)."""
    s2 = sigma.float() ** 2
    if prediction_type == "epsilon":
        return 1.0 / s2
    return (1.0 + s2) / s2


class SDFamily:
    """What train.align needs of a Stable Diffusion pipeline (see train.EDMFamily):

    - noise levels: t ~ randint(0, 1000) of the DDPM steps (Diffusion-DPO), sigma = the
      adapter's sigma table at t (the same draw as SDTeacher._timestep_sigma of gaml distill);
    - loss weight: Diffusion-DPO's MSE on the UNet's target (sd_loss_weight);
    - condition: the frozen CLIP text encoder's last hidden states (B, tokens, dim);
    - RPO's embeddings: the mean of those hidden states over the tokens (padding included, as
      the UNet sees them), one vector per prompt; the cosine of RPO's weights compares these.
    """

    def __init__(self, comp):
        self.comp = comp
        self.prediction_type = comp.denoiser.prediction_type
        self.sigmas = comp.denoiser.sigmas.detach().float().cpu()

    def draw_sigma(self, n: int, gen: torch.Generator, ac) -> torch.Tensor:
        t = torch.randint(0, len(self.sigmas), (n,), generator=gen)
        return self.sigmas[t]

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return sd_loss_weight(sigma, self.prediction_type)

    @torch.no_grad()
    def encode(self, prompts: list[str], device) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), 64):
            out.append(self.comp.encode_prompts(list(prompts[i:i + 64])).float().to(device))
        return torch.cat(out)

    def embed(self, cond: torch.Tensor) -> torch.Tensor:
        return cond.mean(1)


def vae_factor(comp) -> int:
    return 2 ** (len(comp.vae.config.block_out_channels) - 1)


def pixel_size(comp) -> int:
    """The pipeline's image side: the UNet's latent side times the VAE's downsampling factor."""
    return comp.latent_shape[-1] * vae_factor(comp)


@torch.no_grad()
def encode_images(comp, images: torch.Tensor, device, batch: int = 16) -> torch.Tensor:
    """Images in [-1, 1] (N, 3, H, W) -> latents (N, 4, h, w): the VAE's mean times the scaling
    factor, once for the run (module docstring)."""
    out = []
    for i in range(0, len(images), batch):
        out.append(comp.encode(images[i:i + batch].to(device)).float().cpu())
    return torch.cat(out)


def base_name(model: str, path: Path) -> str:
    """How align.json names the base pipeline: an absolute path when the user gave a path,
    else the alias or hub id as given (resolved again when the run is loaded)."""
    return str(Path(path).resolve()) if Path(model).expanduser().exists() else model


def save_sd_run(policy, comp, out: Path, lora_rank: int, base: str, meta: dict[str, Any]) -> Path:
    """Write the aligned UNet (LoRA weights or unet/) and align.json into the run folder."""
    from ...core.artifacts import atomic_write
    from ...diffusion.sd import ALIGN_CONFIG, LORA_FILE

    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=out))
    try:
        if lora_rank > 0:
            from diffusers import StableDiffusionPipeline
            from peft import get_peft_model_state_dict

            unet = policy.unet
            layers = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
            StableDiffusionPipeline.save_lora_weights(
                tmp, unet_lora_layers=layers, safe_serialization=True, weight_name=LORA_FILE,
                unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())
            os.replace(tmp / LORA_FILE, out / LORA_FILE)
            held = {"lora": LORA_FILE}
        else:
            policy.unet.save_pretrained(tmp / "unet", safe_serialization=True)
            final = out / "unet"
            if final.exists():
                shutil.rmtree(final)
            (tmp / "unet").rename(final)
            held = {"unet": "unet"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cfg = {"kind": "sd-align", "pipeline": base, "prediction_type": comp.denoiser.prediction_type, **held,
           "align": meta}
    path = out / ALIGN_CONFIG
    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(cfg, indent=2) + "\n")
    return path
