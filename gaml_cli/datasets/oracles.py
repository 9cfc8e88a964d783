"""Oracle rewards for captioned shapes: properties the caption leaves free, measured from pixels.

A caption such as "a red circle on a blue background" fixes the shape, its colour and the
background; the size and the position of the shape are free. An oracle scores one of those
free properties, so preference pairs of two samples of one caption differ in what the oracle
measures and nothing the caption asks for. The measurement is independent of gaml's shape
generator (gaml_cli/datasets/shapes.py): it never reads the generator's radius or position,
only the pixels, and segments them with scikit-image:

1. Background colour: the per-channel median of the image's border (its outer ring of
   pixels), in [0, 1] colour units (the image maps from [-1, 1] by (x + 1) / 2).
2. Colour distance of every pixel to that background: the Euclidean norm over channels
   (0 = the background's colour; at most sqrt(C)).
3. Candidates: pixels at distance > MIN_DISTANCE (0.15, i.e. about 38 of 255 in one
   channel; the sampler's noise and colour jitter stay below it). The foreground's own
   distance d_fg is the 90th percentile over the candidates (its interior; the percentile
   keeps anti-aliased edge pixels out of it).
4. Foreground: pixels at distance >= max(MIN_DISTANCE, HALF * d_fg) with HALF = 0.5, i.e. at
   least half-way from the background colour to the foreground's: an anti-aliased edge
   pixel counts when the shape covers about half of it, so the area is not biased by the
   colour contrast.
5. The shape: the largest 8-connected component of the foreground
   (`skimage.measure.label`, `skimage.measure.regionprops`): its area in pixels and its
   centroid. Stray specks elsewhere are ignored. An image with no foreground has area 0 and
   no centroid (the worst score of every oracle below).

Every score is "higher = preferred"; coordinates are in image sides (0 = left/top edge,
1 = right/bottom edge; pixel j's centre is at (j + 0.5) / W).
"""

from __future__ import annotations

import numpy as np

MIN_DISTANCE = 0.15  # colour distance (in [0, 1] units) below which a pixel is background
FG_PERCENTILE = 90  # of the candidates' distances: the foreground's own colour distance
HALF = 0.5  # foreground = at least this share of the way from the background to d_fg

ORACLES: dict[str, str] = {
    "size": "foreground area share: the shape's area / the image's area, 0..1 (larger preferred)",
    "small": "background share: 1 - the shape's area / the image's area, 0..1 (smaller shapes preferred; 1 when no shape)",
    "left": "1 - the shape centroid's x in image widths, 0..1 (further left preferred; 0 when no shape)",
    "centered": "minus the distance from the shape's centroid to the image centre, in image sides, "
                "-0.707..0 (closer to the centre preferred; -0.707 when no shape)",
}
NO_SHAPE_DISTANCE = float(np.sqrt(0.5))  # centre to corner: the score of an image with no shape


def _to_unit(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) float64 in [0, 1]."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    return np.clip((x.transpose(0, 2, 3, 1) + 1.0) / 2.0, 0.0, 1.0)


def background_colour(img: np.ndarray) -> np.ndarray:
    """The per-channel median of the border pixels of one (H, W, C) image."""
    ring = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]], axis=0)
    return np.median(ring, axis=0)


def foreground_mask(img: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels at least half-way in colour from the background to the
    foreground (steps 1-4 of the module docstring) of one (H, W, C) image in [0, 1]."""
    dist = np.sqrt(((img - background_colour(img)) ** 2).sum(axis=-1))
    cand = dist > MIN_DISTANCE
    if not cand.any():
        return cand
    d_fg = float(np.percentile(dist[cand], FG_PERCENTILE))
    return dist >= max(MIN_DISTANCE, HALF * d_fg)


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """The shape of each image (step 5): area share (N,), centroid x and y (N,) in image sides
    (nan where no shape), and found (N,) bool."""
    from skimage.measure import label, regionprops

    x = _to_unit(images)
    n, h, w = x.shape[:3]
    area = np.zeros(n)
    cx = np.full(n, np.nan)
    cy = np.full(n, np.nan)
    for i in range(n):
        mask = foreground_mask(x[i])
        if not mask.any():
            continue
        regions = regionprops(label(mask, connectivity=2))
        big = max(regions, key=lambda r: r.area)
        row, col = big.centroid
        area[i] = big.area / (h * w)
        cx[i] = (col + 0.5) / w
        cy[i] = (row + 0.5) / h
    return {"area": area, "x": cx, "y": cy, "found": ~np.isnan(cx)}


def from_measure(name: str, m: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle `name` from a `measure` result: (N,) float64, higher = preferred."""
    if name not in ORACLES:
        raise ValueError(f"unknown oracle {name!r} (one of {', '.join(ORACLES)})")
    if name == "size":
        return m["area"].copy()
    if name == "small":
        return 1.0 - m["area"]
    if name == "left":
        return np.where(m["found"], 1.0 - np.nan_to_num(m["x"]), 0.0)
    d = np.sqrt((m["x"] - 0.5) ** 2 + (m["y"] - 0.5) ** 2)
    return np.where(m["found"], -np.nan_to_num(d), -NO_SHAPE_DISTANCE) + 0.0  # + 0.0: no -0.0 at the centre


def score(name: str, images: np.ndarray) -> np.ndarray:
    """The oracle `name` (one of ORACLES) of each image: (N,) float64, higher = preferred.
    images: (N, C, H, W) in [-1, 1], as gaml's image artifacts hold them."""
    if name not in ORACLES:
        raise ValueError(f"unknown oracle {name!r} (one of {', '.join(ORACLES)})")
    return from_measure(name, measure(images))
