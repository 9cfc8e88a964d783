"""`gaml dataset bench`: Cohere-Bench-style scores of image stories (unofficial).

Cohere-Bench (Openstory++, arXiv 2408.03695) judges story generation on semantic alignment,
background, style and instance consistency; its formulas and code are not released, so these
are gaml's definitions, in the spirit of ViStoryBench's published ones. With `--features shapes`
(offline: the shipped shapes classifier, gaml_cli/assets/shapes-classifier.md) for the shapes
world:

- semantic alignment, per frame: for each "a <colour> <shape>" of the caption, the highest
  classifier probability p(shape) p(colour) over the frame's instance crops, and p(background)
  of the whole frame for "on a <colour> background"; their mean (CLIP-T's place);
- background consistency, per story: mean cosine similarity over frame pairs of the classifier
  features of the backgrounds (instances painted over with the background model);
- style consistency: the same over the Gram matrices of the classifier's first block on the
  whole frames (Gatys-style texture and colour statistics);
- instance consistency: instances are grouped by their noun (the label's last word: "circle"),
  and each group seen in two or more frames scores the mean cosine similarity of its crops'
  features over frame pairs (CLIP-I/DINO on instance crops); the story's score is the mean over
  groups.

Instances come from a frame's `mask` and `mask_image` (gaml dataset annotate) when it has them,
else from the `--detector` backend (`shapes`: regions.py). CLIP/DINO features through
transformers are not built yet (docs/stories.md).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

FEATURES = ("shapes",)
DETECTORS = ("shapes",)
_ENTITY = re.compile(r"\ban? (\w+) (circle|square|triangle|diamond)\b")
_BG = re.compile(r"\bon an? (\w+) background\b")


@dataclass
class _Inst:
    mask: np.ndarray
    box: list[int]
    label: str


def validate_story(rec: dict) -> None:
    if "frames" in rec:
        if not isinstance(rec["frames"], list) or not rec["frames"]:
            raise ValueError("'frames' must be a non-empty list")
        for f in rec["frames"]:
            if not isinstance(f, dict) or not isinstance(f.get("image"), str):
                raise ValueError("every frame needs an 'image'")
    elif not (isinstance(rec.get("image"), str) and "story" in rec):
        raise ValueError("expected a story {\"id\", \"frames\": [...]} or a frame record with 'story' and 'image'")


def stories_of(records: list[dict]) -> list[dict]:
    """Story lines as they are; frame records (e.g. polish's output) grouped by `story`."""
    out: list[dict] = []
    groups: dict[str, dict] = {}
    for rec in records:
        if "frames" in rec:
            out.append({"id": str(rec.get("id", len(out))), "frames": rec["frames"]})
        else:
            sid = str(rec["story"])
            if sid not in groups:
                groups[sid] = {"id": sid, "frames": []}
                out.append(groups[sid])
            groups[sid]["frames"].append(rec)
    for s in out:
        if all("story_frame" in f for f in s["frames"]):
            s["frames"] = sorted(s["frames"], key=lambda f: f["story_frame"])
    return out


def _cos_pairs(feats: list[np.ndarray]) -> float | None:
    if len(feats) < 2:
        return None
    sims = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8)) for a, b in combinations(feats, 2)]
    return float(np.mean(sims))


class ShapesFeatures:
    def __init__(self):
        from .caption import ShapesCaptioner

        self.cap = ShapesCaptioner()
        self.model = self.cap.model
        self.classes = self.cap.classes

    def _x(self, batch: list[np.ndarray]):
        import torch

        return torch.from_numpy(np.stack(batch).astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)

    def run(self, batch: list[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """(features (N, D), head probabilities, flattened normalised Gram matrices (N, C*C))."""
        import torch

        x = self._x(batch)
        with torch.no_grad():
            f1 = self.model.body[0](x)
            feats = self.model.features(x)
            probs = {k: torch.softmax(h(feats), dim=1).numpy() for k, h in self.model.heads.items()}
        n, c = f1.shape[:2]
        flat = f1.reshape(n, c, -1)
        gram = (flat @ flat.transpose(1, 2) / flat.shape[-1]).reshape(n, -1).numpy()
        return feats.numpy(), probs, gram

    def small(self, rgb: np.ndarray) -> np.ndarray:
        return self.cap._small(rgb)


def _instances(frame: dict, rgb: np.ndarray, base: Path | None, detector: str) -> list[_Inst]:
    from PIL import Image

    from . import regions as R

    if frame.get("mask_image") and isinstance(frame.get("mask"), list):
        p = Path(frame["mask_image"])
        if not p.is_absolute() and not p.exists() and base is not None:
            p = base / p
        with Image.open(p) as im:
            idx = np.asarray(im)
        out = []
        for m in frame["mask"]:
            if m.get("value", 0) == 0:
                continue
            mask = idx == m["value"]
            if mask.any():
                out.append(_Inst(mask, list(m["box"]), str(m["label"])))
        return out
    return [_Inst(i.mask, i.box, i.label) for i in R.detect(rgb)]


def score_story(story: dict, fx: ShapesFeatures, base: Path | None, detector: str) -> dict:
    from PIL import Image

    from . import regions as R

    align, bg_feats, grams = [], [], []
    groups: dict[str, list[np.ndarray]] = {}
    for frame in story["frames"]:
        p = Path(frame["image"])
        if not p.is_absolute() and not p.exists() and base is not None:
            p = base / p
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"))
        bg, _ = R.background(rgb)
        insts = _instances(frame, rgb, base, detector)
        plain = rgb.astype(np.float32).copy()
        for it in insts:
            plain[it.mask] = bg[it.mask]
        crops = fx.cap.crops(rgb, insts, bg) if insts else []
        batch = [fx.small(rgb), fx.small(np.clip(plain, 0, 255))] + crops
        feats, probs, gram = fx.run(batch)
        grams.append(gram[0])
        bg_feats.append(feats[1])
        seen = set()
        for k, it in enumerate(insts):
            noun = it.label.split()[-1] if it.label.split() else it.label
            if noun in seen:
                continue  # one crop per noun and frame: the largest (instances come largest first)
            seen.add(noun)
            groups.setdefault(noun, []).append(feats[2 + k])
        cap = frame.get("caption") or ""
        parts = []
        for color, shape in _ENTITY.findall(cap):
            if color in fx.classes["color"] and crops:
                ci, si = fx.classes["color"].index(color), fx.classes["shape"].index(shape)
                parts.append(max(float(probs["color"][2 + k, ci] * probs["shape"][2 + k, si]) for k in range(len(crops))))
            elif color in fx.classes["color"]:
                parts.append(0.0)
        m = _BG.search(cap)
        if m and m.group(1) in fx.classes["background"]:
            parts.append(float(probs["background"][0, fx.classes["background"].index(m.group(1))]))
        if parts:
            align.append(float(np.mean(parts)))
    inst_scores = [s for s in (_cos_pairs(v) for v in groups.values()) if s is not None]
    return {
        "id": story["id"],
        "frames": len(story["frames"]),
        "semantic_alignment": float(np.mean(align)) if align else None,
        "background_consistency": _cos_pairs(bg_feats),
        "style_consistency": _cos_pairs(grams),
        "instance_consistency": float(np.mean(inst_scores)) if inst_scores else None,
    }


KEYS = ("semantic_alignment", "background_consistency", "style_consistency", "instance_consistency")


def bench(records: list[dict], source: str, features: str = "shapes", detector: str = "shapes",
          progress=None) -> dict:
    t0 = time.perf_counter()
    base = Path(source).resolve().parent if source != "-" else None
    stories = stories_of(records)
    fx = ShapesFeatures()
    rows = []
    for s in stories:
        rows.append(score_story(s, fx, base, detector))
        if progress is not None:
            progress.update(1)
    out: dict = {"unofficial": "Cohere-Bench-style scores (gaml's definitions; the benchmark's code is unreleased)",
                 "features": features, "detector": detector}
    for k in KEYS:
        vals = [r[k] for r in rows if r[k] is not None]
        out[k] = float(np.mean(vals)) if vals else None
    out["stories"] = rows
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out
