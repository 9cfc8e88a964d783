"""Image helpers shared by data and sampling commands: value ranges and PNG grids."""

from __future__ import annotations

import math
import os

import numpy as np

IMAGE_KIND = "images"


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> (N, H, W, C) uint8."""
    x = np.clip((np.asarray(images, dtype=np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return x.transpose(0, 2, 3, 1)


def grid(images: np.ndarray, nrow: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (H', W', 3) uint8 picture."""
    x = to_uint8(images)
    n, h, w, c = x.shape
    if c == 1:
        x = np.repeat(x, 3, axis=3)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    canvas = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y0:y0 + h, x0:x0 + w] = x[i]
    if scale > 1:
        canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    return canvas


def save_grid(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None,
              scale: int | None = None) -> None:
    """Write a PNG grid atomically; small images are upscaled to stay legible."""
    from PIL import Image

    from .artifacts import atomic_write

    h = images.shape[-1]
    scale = scale or max(1, 64 // max(h, 1))
    pic = grid(images, nrow=nrow, scale=scale)
    with atomic_write(path, "wb") as fh:
        Image.fromarray(pic).save(fh, format="PNG")


def check_finite_images(images, path: str | os.PathLike) -> None:
    """Refuse (InputError, exit 2) an images tensor holding nan or inf, naming how many images
    and the first one, instead of letting a metric fail deep inside scipy."""
    from .errors import InputError

    arr = np.asarray(images)
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path}: {int(bad.sum())} of {len(arr)} images hold nan or inf values "
                         f"(the first is image {first}); was the model that made them diverged?")
