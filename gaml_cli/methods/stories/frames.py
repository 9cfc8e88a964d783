"""Per-frame helpers for keyframe extraction: colour space, sharpness, perceptual hash, crop.

All take numpy arrays (H, W, 3) uint8 RGB and need no model weights.
"""

from __future__ import annotations

import numpy as np


def rgb_to_hsv8(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 -> HSV on OpenCV's 8-bit scale (H in [0, 180), S and V in [0, 255]), float32,
    the space PySceneDetect's ContentDetector compares frames in. Computed by Pillow's HSV
    conversion (C, about 8x faster than numpy here) with the hue rescaled from 0-255 to 0-180;
    S and V agree with cv2.cvtColor to 1 level, H except where it wraps around red."""
    from PIL import Image

    hsv = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("HSV"), np.float32).copy()
    hsv[..., 0] *= 180.0 / 256.0
    return hsv


def gray(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float32)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


EDGE_MIN = 4.0  # strongest gradients (99.5th percentile, summed over RGB) under this: no edges


def sharpness(rgb: np.ndarray) -> float:
    """Edge sharpness: mean |Laplacian| / mean |gradient| over the strongest edge pixels
    (gradient at least half its 99.5th percentile), both summed over R, G and B.

    A step edge blurred over about s pixels keeps its gradient sum but spreads its Laplacian, so
    the ratio falls like 1/s whatever the edge's contrast and however few edges the frame has
    (the variance of the Laplacian, the usual measure, also falls with less content). Measured
    on gaml's synthetic frames at 256 x 192: sharp frames 1.3-2.1, Gaussian blur sigma 1 about
    0.55, sigma 2 about 0.27. A frame without edges (flat) scores 0.
    """
    x = rgb.astype(np.float32)
    if x.shape[0] < 3 or x.shape[1] < 3:
        return 0.0
    lap = np.abs(x[1:-1, :-2] + x[1:-1, 2:] + x[:-2, 1:-1] + x[2:, 1:-1] - 4 * x[1:-1, 1:-1]).sum(-1)
    gx = (x[1:-1, 2:] - x[1:-1, :-2]) / 2
    gy = (x[2:, 1:-1] - x[:-2, 1:-1]) / 2
    grad = np.hypot(gx, gy).sum(-1)
    q = float(np.quantile(grad, 0.995))
    if q < EDGE_MIN:
        return 0.0
    m = grad >= 0.5 * q
    return float(lap[m].mean() / grad[m].mean())


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT32 = _dct_matrix(32)


def phash(rgb: np.ndarray) -> np.ndarray:
    """64-bit perceptual hash (the pHash of imagehash): grey 32x32, 2-D DCT, the 8x8 lowest
    frequencies compared with their median. Returns 64 booleans."""
    from PIL import Image

    g = Image.fromarray(rgb).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    x = np.asarray(g, np.float32)
    c = _DCT32 @ x @ _DCT32.T
    low = c[:8, :8]
    return (low > np.median(low)).reshape(-1)


def thumb(rgb: np.ndarray, side: int = 8) -> np.ndarray:
    """A side x side colour thumbnail (float32, 0-255): pHash ignores colour, this does not."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BOX), np.float32)


def is_near_duplicate(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                      max_hamming: int, max_color: float) -> bool:
    """(phash, thumb) pairs: near-duplicates when the hashes differ in at most `max_hamming`
    bits and the colour thumbnails by at most `max_color` (mean absolute, 0-255)."""
    return int(np.count_nonzero(a[0] != b[0])) <= max_hamming and float(np.abs(a[1] - b[1]).mean()) <= max_color


def resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize so the short side is `size` (Lanczos), then crop the centre size x size."""
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = Image.fromarray(rgb).resize((nw, nh), Image.Resampling.LANCZOS)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))
