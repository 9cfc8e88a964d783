"""Sampling from gaml's image models with per-sample seeds.

Teachers (kind "teacher") run Heun or Euler on the Karras sigma schedule with optional
classifier-free guidance; generators (kind "generator") map noise to an image in one
function evaluation: x = D(sigma_init z; sigma_init, c) (SiD's generator parametrisation).
Sample i always starts from the noise of seed (seed, i), whatever the batch size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..core import runtime
from ..core.errors import UsageError
from .edm import SAMPLERS, cfg_denoiser, karras_sigmas, nfe

CAPTION = re.compile(r"^a (\w+) (\w+) on a (\w+) background$")


@dataclass
class SampleSpec:
    n: int
    seed: int = 0
    steps: int | None = None
    sampler: str | None = None
    guidance: float | None = None
    batch_size: int = 256
    sigma_max: float = 80.0
    sigma_min: float = 0.002
    rho: float = 7.0


def default_conditions(model, info_cfg: dict[str, Any], n: int, seed: int) -> list[Any] | None:
    """Balanced labels (i mod K) or a random caption per sample from the model's attributes."""
    if model.cond_type == "class":
        return [i % model.num_classes for i in range(n)]
    if model.cond_type == "text":
        attrs = (info_cfg.get("data") or {}).get("attributes")
        if not attrs:
            raise UsageError("this text-conditional model has no attribute list; give --prompt or --prompts")
        out = []
        for i in range(n):
            rng = np.random.default_rng([seed, i, 7])
            shape = attrs["shape"][rng.integers(len(attrs["shape"]))]
            color = attrs["color"][rng.integers(len(attrs["color"]))]
            bgs = [b for b in attrs["background"] if b != color]
            out.append(f"a {color} {shape} on a {bgs[rng.integers(len(bgs))]} background")
        return out
    return None


def caption_attrs(captions: Sequence[str], attributes: dict[str, list[str]] | None) -> np.ndarray:
    """(N, 3) shape/colour/background ids parsed from template captions; -1 where unknown."""
    out = np.full((len(captions), 3), -1, dtype=np.int64)
    if not attributes:
        return out
    for i, c in enumerate(captions):
        m = CAPTION.match(c.strip().lower())
        if not m:
            continue
        color, shape, bg = m.groups()
        for j, (key, val) in enumerate((("shape", shape), ("color", color), ("background", bg))):
            if val in attributes.get(key, []):
                out[i, j] = attributes[key].index(val)
    return out


@torch.no_grad()
def generate(model, kind: str, config: dict[str, Any], spec: SampleSpec, conds: list[Any] | None,
             device: torch.device, progress=None) -> tuple[torch.Tensor, dict[str, Any]]:
    """(images (N, C, H, W) float32 on CPU in about [-1, 1], sampling facts)."""
    shape = tuple(config["model"]["image_shape"])
    seeds = runtime.sample_seeds(spec.seed, range(spec.n))
    defaults = config.get("sampling", {})
    facts: dict[str, Any] = {}
    if kind == "generator":
        sigma_init = float(config["generator"]["sigma_init"])
        facts.update(nfe=1, sampler="one-step", sigma_init=sigma_init)
    else:
        sampler = spec.sampler or defaults.get("sampler", "heun")
        steps = spec.steps or defaults.get("steps", 18)
        if sampler not in SAMPLERS:
            raise UsageError(f"--sampler must be one of {', '.join(SAMPLERS)}")
        guidance = spec.guidance if spec.guidance is not None else defaults.get("guidance", 1.0)
        if guidance != 1.0 and model.cond_type == "none":
            raise UsageError("guidance needs a conditional model")
        sigmas = karras_sigmas(steps, spec.sigma_min, spec.sigma_max, spec.rho, device=device)
        facts.update(nfe=nfe(sampler, steps), sampler=sampler, steps=steps, guidance=guidance)
    out = []
    for b in range(0, spec.n, spec.batch_size):
        idx = slice(b, min(spec.n, b + spec.batch_size))
        cond_b = model.encode_condition(conds[idx], idx.stop - idx.start, device) if conds is not None else \
            model.null_condition(idx.stop - idx.start, device)
        z = runtime.randn_per_sample(shape, seeds[idx], device=device)
        if kind == "generator":
            s = torch.full((len(z),), sigma_init, device=device)
            x = model(sigma_init * z, s, cond_b)
        else:
            D = model
            if facts["guidance"] != 1.0:
                D = cfg_denoiser(model, model.null_condition(len(z), device), facts["guidance"])
            x = SAMPLERS[facts["sampler"]](D, z * sigmas[0], sigmas, cond_b)
        out.append(x.float().cpu())
        if progress is not None:
            progress.update(len(z))
    return torch.cat(out), facts


def _sd_batches(comp, spec: SampleSpec, prompts: list[str], device, dtype, to_latents, progress) -> torch.Tensor:
    """Per-sample-seeded noise and prompt embeddings in batches -> to_latents(z, cond) -> VAE decode."""
    seeds = runtime.sample_seeds(spec.seed, range(spec.n))
    out = []
    for b in range(0, spec.n, spec.batch_size):
        idx = slice(b, min(spec.n, b + spec.batch_size))
        cond = comp.encode_prompts(prompts[idx]).to(dtype)
        z = runtime.randn_per_sample(comp.latent_shape, seeds[idx], device=device, dtype=dtype)
        out.append(comp.decode(to_latents(z, cond)).float().cpu())
        if progress is not None:
            progress.update(len(z))
    return torch.cat(out)


@torch.no_grad()
def generate_sd(comp, spec: SampleSpec, prompts: list[str], device: torch.device, dtype=torch.float32,
                progress=None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Stable Diffusion through the adapter: EDM schedule over SD's own sigma range, Heun or
    Euler in latent space, CFG against the empty prompt, VAE decode. Returns images in [-1, 1]."""
    den = comp.denoiser
    sampler = spec.sampler or "heun"
    steps = spec.steps or 25
    guidance = 7.5 if spec.guidance is None else spec.guidance
    if sampler not in SAMPLERS:
        raise UsageError(f"--sampler must be one of {', '.join(SAMPLERS)}")
    sigmas = karras_sigmas(steps, den.sigma_min, den.sigma_max, spec.rho, device=device)

    def to_latents(z, cond):
        D = den if guidance == 1.0 else cfg_denoiser(den, comp.null_condition(len(z)).to(dtype), guidance)
        return SAMPLERS[sampler](D, z * sigmas[0], sigmas, cond)

    images = _sd_batches(comp, spec, prompts, device, dtype, to_latents, progress)
    return images, {"nfe": nfe(sampler, steps), "sampler": sampler, "steps": steps, "guidance": guidance}


@torch.no_grad()
def generate_sd_onestep(comp, sigma_init: float, spec: SampleSpec, prompts: list[str], device: torch.device,
                        dtype=torch.float32, progress=None) -> tuple[torch.Tensor, dict[str, Any]]:
    """A distilled SD generator: latents = D_theta(sigma_init z; sigma_init, c) in one UNet call
    (no guidance: SiD-LSG bakes it into the generator), then the VAE decode."""

    def to_latents(z, cond):
        return comp.denoiser(sigma_init * z, torch.full((len(z),), sigma_init, device=device, dtype=dtype), cond)

    images = _sd_batches(comp, spec, prompts, device, dtype, to_latents, progress)
    return images, {"nfe": 1, "sampler": "one-step", "sigma_init": sigma_init}
