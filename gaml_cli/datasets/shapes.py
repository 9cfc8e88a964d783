"""Synthetic captioned shapes: a coloured shape on a coloured background.

Each image is drawn from its own random stream `default_rng([seed, index])`, so image i is
the same whatever `n` is (a run with n=100 starts with the n=50 run's images). Shapes are
rendered at 4x resolution and box-filtered down (anti-aliased edges). The caption states
the three attributes, e.g. "a red circle on a blue background"; size and position vary
but are not in the caption.
"""

from __future__ import annotations

import numpy as np

SHAPES = ["circle", "square", "triangle", "diamond"]
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (140, 60, 190),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
COLOR_NAMES = list(COLORS)
SUPERSAMPLE = 4
JITTER = 12


def caption(shape: str, color: str, background: str) -> str:
    return f"a {color} {shape} on a {background} background"


def _mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = r * 0.86
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r * 1.15
    if shape == "triangle":
        # equilateral, apex up (image y grows downwards), circumradius 1.2 r
        R = 1.2 * r
        verts = [(cx + R * np.cos(a), cy - R * np.sin(a)) for a in np.deg2rad([90, 210, 330])]
        inside = np.ones_like(xx, dtype=bool)
        for (x1, y1), (x2, y2) in zip(verts, verts[1:] + verts[:1]):
            # points on the same side of each edge as the centroid
            side = (x2 - x1) * (yy - y1) - (y2 - y1) * (xx - x1)
            ref = (x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)
            inside &= side * ref >= 0
        return inside
    raise ValueError(f"unknown shape {shape!r}")


SPEC_KEYS = {"shape", "color", "background", "radius", "x", "y"}
RADIUS_RANGE = (0.2, 0.32)


def validate_spec(rec: dict) -> None:
    """Check one --spec record; raises ValueError with a message naming the bad field."""
    unknown = set(rec) - SPEC_KEYS - {"index", "caption", "split", "kind"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} (allowed: {sorted(SPEC_KEYS)})")
    if "shape" in rec and rec["shape"] not in SHAPES:
        raise ValueError(f"shape {rec['shape']!r} is not one of {SHAPES}")
    for key in ("color", "background"):
        if key in rec and rec[key] not in COLORS:
            raise ValueError(f"{key} {rec[key]!r} is not one of {COLOR_NAMES}")
    if "color" in rec and rec.get("background") == rec["color"]:
        raise ValueError("color and background must differ")
    for key in ("radius", "x", "y"):
        if key in rec and not isinstance(rec[key], (int, float)):
            raise ValueError(f"{key} must be a number")
    if "radius" in rec and not RADIUS_RANGE[0] <= rec["radius"] <= RADIUS_RANGE[1]:
        raise ValueError(f"radius must be in [{RADIUS_RANGE[0]}, {RADIUS_RANGE[1]}]")
    r = rec.get("radius", RADIUS_RANGE[1])
    for key in ("x", "y"):
        if key in rec and not 1.2 * r + 0.04 <= rec[key] <= 1 - 1.2 * r - 0.04:
            raise ValueError(f"{key}={rec[key]} puts the shape outside the image for radius {r}")


def draw_one(seed: int, index: int, size: int = 32, spec: dict | None = None) -> tuple[np.ndarray, dict]:
    """One image (3, size, size) in [-1, 1] and its attribute record.

    `spec` fixes any of shape/color/background/radius/x/y; the rest are drawn from the
    image's own stream, in the same order as without a spec.
    """
    spec = spec or {}
    rng = np.random.default_rng([seed, index])
    shape = SHAPES[rng.integers(len(SHAPES))]
    ci = int(rng.integers(len(COLOR_NAMES)))
    bi = int(rng.integers(len(COLOR_NAMES) - 1))
    shape = spec.get("shape", shape)
    if "color" in spec:
        ci = COLOR_NAMES.index(spec["color"])
    if "background" in spec:
        bi = COLOR_NAMES.index(spec["background"])
        if bi == ci:  # only possible when the colour was drawn: redraw it away from bi
            ci = (ci + 1 + int(rng.integers(len(COLOR_NAMES) - 1))) % len(COLOR_NAMES)
    else:
        bi = bi + 1 if bi >= ci else bi  # background differs from the shape's colour
    color, background = COLOR_NAMES[ci], COLOR_NAMES[bi]
    r = float(rng.uniform(*RADIUS_RANGE))
    r = float(spec.get("radius", r))
    margin = 1.2 * r + 0.04
    cx, cy = (float(v) for v in rng.uniform(margin, 1 - margin, size=2))
    cx, cy = float(spec.get("x", cx)), float(spec.get("y", cy))
    fg = np.clip(np.array(COLORS[color], np.float32) + rng.integers(-JITTER, JITTER + 1, 3), 0, 255)
    bg = np.clip(np.array(COLORS[background], np.float32) + rng.integers(-JITTER, JITTER + 1, 3), 0, 255)

    big = size * SUPERSAMPLE
    coords = (np.arange(big, dtype=np.float32) + 0.5) / big
    xx, yy = np.meshgrid(coords, coords)
    m = _mask(shape, xx, yy, cx, cy, r).astype(np.float32)
    cover = m.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))  # box filter
    img = cover[None] * fg[:, None, None] + (1 - cover[None]) * bg[:, None, None]
    img = img / 127.5 - 1.0
    split_rng = np.random.default_rng([seed, index, 1])
    rec = {
        "index": index,
        "caption": caption(shape, color, background),
        "shape": shape,
        "color": color,
        "background": background,
        "radius": round(r, 4),
        "x": round(cx, 4),
        "y": round(cy, 4),
        "_u": float(split_rng.random()),
    }
    return img.astype(np.float32), rec


def generate(n: int, seed: int, size: int = 32, test_fraction: float = 0.2, progress=None,
             specs: list[dict] | None = None):
    """(tensors, records): images (n,3,s,s), attrs (n,3) [shape, color, background], split.

    With `specs`, image i follows specs[i] (n = len(specs)).
    """
    if specs is not None:
        n = len(specs)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    attrs = np.empty((n, 3), dtype=np.int64)
    split = np.empty(n, dtype=np.uint8)
    records = []
    for i in range(n):
        img, rec = draw_one(seed, i, size, spec=specs[i] if specs is not None else None)
        images[i] = img
        attrs[i] = (SHAPES.index(rec["shape"]), COLOR_NAMES.index(rec["color"]),
                    COLOR_NAMES.index(rec["background"]))
        u = rec.pop("_u")
        split[i] = 1 if u < test_fraction else 0
        rec["split"] = "test" if split[i] else "train"
        records.append(rec)
        if progress is not None:
            progress.update(1)
    return {"images": images, "attrs": attrs, "split": split}, records


def config(n: int, seed: int, size: int, test_fraction: float, captions_file: str) -> dict:
    return {
        "dataset": "shapes",
        "n": n,
        "seed": seed,
        "shape": [3, size, size],
        "value_range": [-1.0, 1.0],
        "attributes": {"shape": SHAPES, "color": COLOR_NAMES, "background": COLOR_NAMES},
        "attrs_columns": ["shape", "color", "background"],
        "caption_template": "a {color} {shape} on a {background} background",
        "split_names": ["train", "test"],
        "test_fraction": test_fraction,
        "captions_file": captions_file,
    }
