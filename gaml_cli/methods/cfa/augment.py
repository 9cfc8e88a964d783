"""Augmentations for small images in torch, seeded per sample.

Each view of sample i draws its random parameters (crop, shift, flip, colour jitter, noise) from
its own generator, seeded from (run seed, step, sample index, view): a sample's augmentation does
not depend on the batch it lands in or on the other samples.

One view: a random resized crop (area share in [crop_min, 1], aspect ratio in [3/4, 4/3] for the
smallest crops, narrowing to 1 for the whole image) and a
shift of up to `shift` pixels, done by one affine resampling (bilinear, border padding); an
optional horizontal flip; for RGB a colour jitter (brightness, contrast and saturation each scaled
by a factor in [1 - jitter, 1 + jitter]); Gaussian pixel noise of std `noise`; clipped to [-1, 1].

Presets by data set (`preset_for`), the defaults of `gaml embed cfa|simclr|ncl`:

- 1 channel (digits, 8x8): crop_min 0.7, shift 1 px, no flip (a flipped 2 is no 2), no jitter,
  noise 0.1. The shipped digits classifier reads 0.95-0.96 of augmented test digits (0.989 clean;
  the test asks > 0.85).
- 3 channels (shapes, 32x32): crop_min 0.5, shift 3 px, flip, jitter 0.4, noise 0.05. The jitter
  makes the features less colour-bound: for colour labels set --jitter 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F


@dataclass
class AugmentConfig:
    crop_min: float = 0.7
    shift: float = 1.0
    flip: bool = False
    jitter: float = 0.0
    noise: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    1: AugmentConfig(crop_min=0.7, shift=1.0, flip=False, jitter=0.0, noise=0.1),
    3: AugmentConfig(crop_min=0.5, shift=3.0, flip=True, jitter=0.4, noise=0.05),
}


def preset_for(channels: int) -> AugmentConfig:
    return AugmentConfig(**asdict(PRESETS.get(channels, PRESETS[1])))


def view_seeds(seed: int, step: int, index: torch.Tensor, view: int) -> list[int]:
    """One 63-bit seed per sample from (seed, step, sample index, view) (splitmix-style mixing)."""
    out = []
    for i in index.tolist():
        h = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + int(i) * 0x94D049BB133111EB + view) & (2**64 - 1)
        h ^= h >> 31
        h = (h * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        h ^= h >> 29
        out.append(h & (2**63 - 1))
    return out


def augment(x: torch.Tensor, seeds: list[int], cfg: AugmentConfig) -> torch.Tensor:
    """One augmented view of x (N, C, H, W) in [-1, 1]; row i uses a generator seeded seeds[i]."""
    n, c, h, w = x.shape
    params = torch.empty(n, 10)
    noise = torch.empty_like(x, device="cpu")
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s))
        params[i] = torch.rand(10, generator=g)
        noise[i] = torch.randn((c, h, w), generator=g)
    params, noise = params.to(x.device), noise.to(x.device)
    area = cfg.crop_min + (1 - cfg.crop_min) * params[:, 0]
    # aspect ratio in [3/4, 4/3] for the smallest crops, narrowing to 1 as the crop nears the whole
    # image (so that no crop at all, crop_min 1, is the identity)
    reach = (1 - area) / (1 - cfg.crop_min) if cfg.crop_min < 1 else torch.zeros_like(area)
    log_r = math.log(4 / 3) * (2 * params[:, 1] - 1) * reach
    r = torch.exp(log_r)
    sx = torch.sqrt(area * r).clamp(max=1.0)  # width share of the crop
    sy = torch.sqrt(area / r).clamp(max=1.0)
    # the crop's centre may move so that the crop stays inside, plus the shift in pixels
    tx = (1 - sx) * (2 * params[:, 2] - 1) + cfg.shift * 2 / w * (2 * params[:, 3] - 1)
    ty = (1 - sy) * (2 * params[:, 4] - 1) + cfg.shift * 2 / h * (2 * params[:, 5] - 1)
    flip = torch.where((params[:, 6] < 0.5) & torch.tensor(cfg.flip, device=x.device), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.jitter > 0 and c == 3:
        f = 1 + cfg.jitter * (2 * params[:, 7:10] - 1)
        b, ct, sat = f[:, 0].view(n, 1, 1, 1), f[:, 1].view(n, 1, 1, 1), f[:, 2].view(n, 1, 1, 1)
        y = (out + 1) / 2 * b  # brightness, in [0, 1] units
        mean = y.mean(dim=(1, 2, 3), keepdim=True)
        y = (y - mean) * ct + mean  # contrast
        grey = y.mean(dim=1, keepdim=True)
        y = (y - grey) * sat + grey  # saturation
        out = y * 2 - 1
    if cfg.noise > 0:
        out = out + cfg.noise * noise
    return out.clamp(-1, 1)

