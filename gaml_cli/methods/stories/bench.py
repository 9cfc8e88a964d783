"""`gaml dataset bench`: Cohere-Bench-style scores of image stories (unofficial).

Cohere-Bench (Openstory++, arXiv 2408.03695) judges story generation on semantic alignment,
background, style and instance consistency; its formulas and code are not released, so these
are gaml's definitions, in the spirit of ViStoryBench's published ones. With `--features shapes`
(offline: the shipped shapes classifier, gaml_cli/assets/shapes-classifier.md) for the shapes
world, or `--features ALIAS|PATH`, a CLIP model through transformers (clip-l14, a local folder):

- semantic alignment, per frame: CLIP-T, the cosine of the frame's and the caption's CLIP
  embeddings; with `shapes`, for each "a <colour> <shape>" of the caption the highest classifier
  probability p(shape) p(colour) over the frame's instance crops, and p(background) of the whole
  frame for "on a <colour> background", their mean;
- background consistency, per story: mean cosine similarity over frame pairs of the classifier
  features of the backgrounds (instances painted over with the background model);
- style consistency: the same over the Gram matrices of the classifier's first block on the
  whole frames (Gatys-style texture and colour statistics); with CLIP, over the whole frames'
  embeddings (no style encoder such as CSD yet);
- instance consistency: instances are grouped by their noun (the label's last word: "circle"),
  and each group seen in two or more frames scores the mean cosine similarity of its crops'
  features over frame pairs (CLIP-I on instance crops); the story's score is the mean over
  groups.

Instances come from a frame's `mask` and `mask_image` (gaml dataset annotate) when it has them,
else from the `--detector` backend (`shapes`: regions.py, made for flat-coloured objects).
DINO features are not built yet (docs/stories.md).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

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
    """--features shapes: the shipped shapes classifier (16 x 16 inputs)."""

    name = "shapes"

    def __init__(self):
        from .caption import ShapesCaptioner

        self.cap = ShapesCaptioner()
        self.model = self.cap.model
        self.classes = self.cap.classes

    def _run(self, batch: list[np.ndarray]):
        import torch

        x = torch.from_numpy(np.stack([self.cap._small(b) for b in batch]).astype(np.float32) / 127.5 - 1.0)
        x = x.permute(0, 3, 1, 2)
        with torch.no_grad():
            f1 = self.model.body[0](x)
            feats = self.model.features(x)
            probs = {k: torch.softmax(h(feats), dim=1).numpy() for k, h in self.model.heads.items()}
        n, c = f1.shape[:2]
        flat = f1.reshape(n, c, -1)
        gram = (flat @ flat.transpose(1, 2) / flat.shape[-1]).reshape(n, -1).numpy()
        return feats.numpy(), probs, gram

    def frame(self, rgb, plain, crops, caption):
        """(style vector, background vector, crop vectors, semantic alignment or None)."""
        feats, probs, gram = self._run([rgb, plain, *crops])
        parts = []
        for color, shape in _ENTITY.findall(caption):
            if color not in self.classes["color"]:
                continue
            if not crops:
                parts.append(0.0)
                continue
            ci, si = self.classes["color"].index(color), self.classes["shape"].index(shape)
            parts.append(max(float(probs["color"][2 + k, ci] * probs["shape"][2 + k, si]) for k in range(len(crops))))
        m = _BG.search(caption)
        if m and m.group(1) in self.classes["background"]:
            parts.append(float(probs["background"][0, self.classes["background"].index(m.group(1))]))
        return gram[0], feats[1], list(feats[2:]), (float(np.mean(parts)) if parts else None)


class ClipFeatures:
    """--features ALIAS|PATH: a CLIP model through transformers (gaml_cli.diffusion.clip)."""

    def __init__(self, name: str, device: str = "cpu"):
        from ...diffusion.clip import ClipScorer

        self.scorer = ClipScorer(name, device=device)
        self.name = name

    def _images(self, batch: list[np.ndarray]) -> np.ndarray:
        return np.stack([np.asarray(b, np.float32).transpose(2, 0, 1) / 127.5 - 1.0 for b in batch])

    def frame(self, rgb, plain, crops, caption):
        import torch

        sq = [rgb, plain]
        emb = [self.scorer.image_embeds(self._images([x]))[0].numpy() for x in sq]
        crop_emb = [self.scorer.image_embeds(self._images([c]))[0].numpy() for c in crops]
        align = None
        if caption:
            t = self.scorer.text_embeds([caption])[0]
            i = torch.from_numpy(emb[0])
            align = float(torch.nn.functional.cosine_similarity(i, t, dim=0))
        return emb[0], emb[1], crop_emb, align


def load_features(name: str, device: str = "cpu"):
    return ShapesFeatures() if name == "shapes" else ClipFeatures(name, device=device)


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


def score_story(story: dict, fx, base: Path | None, detector: str) -> dict:
    from PIL import Image

    from . import regions as R
    from .caption import cutouts

    align, bg_feats, styles = [], [], []
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
        crops = cutouts(rgb, insts, bg) if insts else []
        style, back, crop_vecs, a = fx.frame(rgb.astype(np.float32), np.clip(plain, 0, 255), crops,
                                             frame.get("caption") or "")
        styles.append(style)
        bg_feats.append(back)
        if a is not None:
            align.append(a)
        seen = set()
        for it, vec in zip(insts, crop_vecs):
            noun = it.label.split()[-1] if it.label.split() else it.label
            if noun in seen:
                continue  # one crop per noun and frame: the largest (instances come largest first)
            seen.add(noun)
            groups.setdefault(noun, []).append(vec)
    inst_scores = [s for s in (_cos_pairs(v) for v in groups.values()) if s is not None]
    return {
        "id": story["id"],
        "frames": len(story["frames"]),
        "semantic_alignment": float(np.mean(align)) if align else None,
        "background_consistency": _cos_pairs(bg_feats),
        "style_consistency": _cos_pairs(styles),
        "instance_consistency": float(np.mean(inst_scores)) if inst_scores else None,
    }


KEYS = ("semantic_alignment", "background_consistency", "style_consistency", "instance_consistency")


def bench(records: list[dict], source: str, features: str = "shapes", detector: str = "shapes",
          progress=None) -> dict:
    t0 = time.perf_counter()
    base = Path(source).resolve().parent if source != "-" else None
    stories = stories_of(records)
    fx = load_features(features)
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
