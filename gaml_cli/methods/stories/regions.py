"""The offline `shapes` detector and segmenter: flat-coloured objects on a smooth background.

For gaml's synthetic videos (datasets/videos.py) and anything like them; no model weights.

1. Background: a cubic polynomial in (x, y) per colour channel, fitted by least squares on a
   64 x 64 thumbnail and refitted three times on the pixels it explains best (residual under
   the larger of FG_RESIDUAL / 2 and its upper quartile: trimmed least squares, so the objects
   do not pull it and a strong gradient is not mistaken for them). Pixels whose residual (mean over RGB) is at least
   FG_RESIDUAL are foreground.
2. Colours: the most common colour of the foreground that is left (16-level bins), its pixels
   within MAX_COLOR_DIST (mean absolute RGB) of the bin's mean, repeatedly.
3. Instances: 4-connected components of each colour's pixels, at least MIN_AREA of the image;
   each instance mask is grown by up to GROW pixels into foreground nothing claimed yet
   (anti-aliased rims, widened when the frame was upscaled), which then forms no colour of its own.
4. Labels: "<colour> <shape>": the nearest of the shapes data set's seven colour names, and the
   shape from the mask's geometry (box fill: square ~1, circle ~0.79, triangle and diamond 0.5;
   a triangle has a quarter of its area in the upper half, a diamond half). `logit` is how well
   the fill matches the chosen shape, in [0, 1]; instances under `min_logit` (0.5) are dropped
   (slivers of background or rim left over).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FG_RESIDUAL = 24.0
MAX_COLOR_DIST = 20.0
MIN_AREA = 0.002  # share of the image
GROW = 3  # pixels an instance grows into unclaimed foreground (anti-aliased and resized rims)
MIN_LOGIT = 0.5
FILL = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5, "diamond": 0.5}
COLOR_NAMES = ("red", "green", "blue", "yellow", "purple", "white", "black")
COLORS = np.array([(220, 40, 40), (40, 170, 60), (40, 80, 220), (235, 215, 40), (140, 60, 190), (240, 240, 240),
                   (20, 20, 20)], np.float32)  # the shapes data set's (datasets/shapes.py); a test keeps them equal


@dataclass
class Instance:
    mask: np.ndarray  # (H, W) bool
    color: str
    rgb: tuple[int, int, int]
    shape: str
    logit: float
    box: list[int]  # x1, y1, x2, y2 (x2, y2 exclusive)

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"


def color_name(rgb) -> str:
    d = np.abs(COLORS - np.asarray(rgb, np.float32)[None]).sum(axis=1)
    return COLOR_NAMES[int(np.argmin(d))]


def _design(h: int, w: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    u = xs / max(w - 1, 1) * 2 - 1
    v = ys / max(h - 1, 1) * 2 - 1
    return np.stack([u ** i * v ** j for i in range(4) for j in range(4 - i)], axis=-1).astype(np.float64)


def background(rgb: np.ndarray, iters: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(background model (H, W, 3) float32, foreground mask (H, W) bool)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    side = 64
    small = np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BOX), np.float64)
    yy, xx = np.mgrid[0:side, 0:side]
    A = _design(h, w, (yy.ravel() + 0.5) * h / side - 0.5, (xx.ravel() + 0.5) * w / side - 0.5)
    b = small.reshape(-1, 3)
    keep = np.ones(len(b), bool)
    coef = None
    for _ in range(iters + 1):
        if keep.sum() < A.shape[1] * 3:
            break
        coef, *_ = np.linalg.lstsq(A[keep], b[keep], rcond=None)
        res = np.abs(A @ coef - b).mean(axis=1)
        keep = res < max(FG_RESIDUAL / 2, float(np.quantile(res, 0.75)))  # trimmed: objects are few
    yy, xx = np.mgrid[0:h, 0:w]
    bg = (_design(h, w, yy.ravel().astype(np.float64), xx.ravel().astype(np.float64)) @ coef).reshape(h, w, 3)
    fg = np.abs(rgb.astype(np.float64) - bg).mean(axis=-1) >= FG_RESIDUAL
    return bg.astype(np.float32), fg


def _shape(mask: np.ndarray, box: list[int]) -> tuple[str, float]:
    x1, y1, x2, y2 = box
    m = mask[y1:y2, x1:x2]
    fill = m.mean()
    if fill > 0.9:
        shape = "square"
    elif fill > 0.64:
        shape = "circle"
    else:
        top = m[: m.shape[0] // 2].sum() / max(m.sum(), 1)
        shape = "triangle" if top < 0.38 else "diamond"
    logit = float(max(0.0, 1.0 - abs(fill - FILL[shape]) / FILL[shape]))
    return shape, round(logit, 4)


def detect(rgb: np.ndarray, min_area: float = MIN_AREA, min_logit: float = MIN_LOGIT) -> list[Instance]:
    """Instances of a frame (H, W, 3) uint8, largest first."""
    from scipy import ndimage

    h, w = rgb.shape[:2]
    px = rgb.astype(np.float32)
    _, fg = background(rgb)
    free = fg.copy()
    claimed = np.zeros((h, w), bool)
    min_px = max(4, int(min_area * h * w))
    out: list[Instance] = []
    for _ in range(32):
        if free.sum() < min_px:
            break
        cols = px[free]
        bins = (cols // 16).astype(np.int32)
        keys = bins[:, 0] * 256 + bins[:, 1] * 16 + bins[:, 2]
        vals, counts = np.unique(keys, return_counts=True)
        top = vals[np.argmax(counts)]
        centre = cols[keys == top].mean(axis=0)
        member = free & (np.abs(px - centre).mean(axis=-1) <= MAX_COLOR_DIST)
        free &= ~member
        if member.sum() < min_px:
            continue
        labels, n = ndimage.label(member)
        for k in range(1, n + 1):
            m = labels == k
            if m.sum() < min_px:
                continue
            grown = ndimage.binary_dilation(m, iterations=GROW) & fg & ~claimed & ~member | m
            claimed |= grown
            free &= ~grown  # the rim is this instance's, not a colour of its own
            ys, xs = np.nonzero(grown)
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            shape, logit = _shape(grown, box)
            rgb_mean = tuple(int(round(v)) for v in px[m].mean(axis=0))
            if logit >= min_logit:
                out.append(Instance(grown, color_name(rgb_mean), rgb_mean, shape, logit, box))
    out.sort(key=lambda i: -i.area)
    return out


def index_mask(instances: list[Instance], h: int, w: int) -> np.ndarray:
    """(H, W) uint8: 0 background, instance i (1-based, largest first) drawn in order, so a
    smaller mask is drawn last and stays visible (as the released Openstory++ code)."""
    out = np.zeros((h, w), np.uint8)
    for i, inst in enumerate(instances, 1):
        out[inst.mask] = i
    return out


PALETTE = [0, 0, 0, 230, 25, 75, 60, 180, 75, 255, 225, 25, 0, 130, 200, 245, 130, 48, 145, 30, 180, 70, 240, 240,
           240, 50, 230]  # background black, then 8 distinct colours (values 1-8)


def palette_png(index: np.ndarray, path) -> None:
    """Write the instance-index mask as a palette PNG whose pixel values are the indices."""
    from PIL import Image

    h, w = index.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(index, np.uint8).tobytes())
    im.putpalette(PALETTE + [128] * (768 - len(PALETTE)))
    im.save(path, format="PNG")


def iou_box(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
