"""`gaml dataset caption`: a caption per frame from a named backend.

Backend `shapes` (offline): the instances of regions.py, each cut out onto a square of the
background (the shape's box takes about 55% of the side, as the shapes data set's shapes do),
scaled to 16 x 16 and named by the shipped shapes classifier (gaml_cli/assets/
shapes-classifier.md: shape and colour heads); the background is the nearest of the seven colour
names to the mean of regions.py's background model (the classifier's background head, trained
on flat backgrounds, agreed less with the ground truth on gradients: 59% against 65% of frames
on the development videos). Caption: "a red circle and a white square on a blue
background", the objects from left to right (the template of `gaml dataset videos`).

Backend `transformers` (`--model`: hub id, alias or folder): an image-to-text model through
transformers' AutoProcessor + AutoModelForImageTextToText (BLIP, BLIP-2, ...), greedy decoding
of up to 30 new tokens (the released Openstory++ code's setting); no `entities`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

BACKENDS = ("shapes", "transformers")
MAX_NEW_TOKENS = 30
CROP_FILL = 0.55  # the instance box's share of the square crop's side


@dataclass
class CaptionOptions:
    records: str
    backend: str = "shapes"
    shard: tuple[int, int] | None = None
    model: str | None = None
    device: str = "cpu"
    max_new_tokens: int = MAX_NEW_TOKENS


def cutouts(rgb: np.ndarray, instances, bg: np.ndarray) -> list[np.ndarray]:
    """Each instance (.mask, .box) alone on a square of its local background, its box taking
    CROP_FILL of the side, at the frame's resolution (float32 RGB)."""
    h, w = rgb.shape[:2]
    out = []
    for inst in instances:
        x1, y1, x2, y2 = inst.box
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        side = max(x2 - x1, y2 - y1) / CROP_FILL
        ring = np.zeros((h, w), bool)
        ring[max(y1 - 3, 0):min(y2 + 3, h), max(x1 - 3, 0):min(x2 + 3, w)] = True
        ring &= ~inst.mask
        colour = bg[ring].mean(axis=0) if ring.any() else bg.reshape(-1, 3).mean(axis=0)
        s = int(np.ceil(side))
        canvas = np.empty((s, s, 3), np.float32)
        canvas[:] = colour
        ox, oy = int(round(cx - s / 2)), int(round(cy - s / 2))
        ys, xs = np.nonzero(inst.mask)
        cy_, cx_ = ys - oy, xs - ox
        ok = (cy_ >= 0) & (cy_ < s) & (cx_ >= 0) & (cx_ < s)
        canvas[cy_[ok], cx_[ok]] = rgb[ys[ok], xs[ok]]
        out.append(np.clip(canvas, 0, 255))
    return out


class ShapesCaptioner:
    def __init__(self):
        from ...diffusion.eval import load_classifier

        self.model, _ = load_classifier("shapes-classifier", "shapes", {})
        self.classes = self.model.classes
        self.side = int(self.model.config["image_shape"][-1])

    def _predict(self, batch: list[np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(np.stack(batch).astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
        with torch.no_grad():
            out = self.model(x)
        return {k: v.argmax(dim=1).numpy() for k, v in out.items()}

    def _small(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize((self.side, self.side), Image.Resampling.BOX))

    def crops(self, rgb: np.ndarray, instances, bg: np.ndarray) -> list[np.ndarray]:
        return [self._small(c) for c in cutouts(rgb, instances, bg)]

    def caption(self, rgb: np.ndarray) -> tuple[str, list[dict]]:
        from . import regions as R

        bg, _ = R.background(rgb)
        instances = R.detect(rgb)
        batch = [self._small(rgb)] + self.crops(rgb, instances, bg)
        pred = self._predict(batch)
        background = R.color_name(bg.reshape(-1, 3).mean(axis=0))
        things = []
        for k, inst in enumerate(instances, 1):
            things.append({"shape": self.classes["shape"][int(pred["shape"][k])],
                           "color": self.classes["color"][int(pred["color"][k])], "x": inst.box[0]})
        things.sort(key=lambda t: t["x"])
        names = [f"a {t['color']} {t['shape']}" for t in things]
        if not names:
            text = f"a {background} background"
        else:
            joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            text = f"{joined} on a {background} background"
        return text, [{"color": t["color"], "shape": t["shape"]} for t in things]


class TransformersCaptioner:
    def __init__(self, name: str, device: str = "cpu", max_new_tokens: int = MAX_NEW_TOKENS):
        from ...core import hub
        from ...core.errors import InputError

        path = hub.resolve(name, option="--model")
        try:
            import transformers
            from transformers import AutoProcessor

            from ...diffusion.sd import _quiet_libraries

            _quiet_libraries()
            auto = getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            self.model = auto.from_pretrained(path, use_safetensors=True, local_files_only=True).to(device).eval()
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path}: cannot load an image-to-text model ({first})") from None
        self.device = device
        self.max_new_tokens = max_new_tokens

    def caption(self, rgb: np.ndarray) -> tuple[str, None]:
        import torch
        from PIL import Image

        enc = self.processor(images=Image.fromarray(rgb), return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False)
        text = self.processor.batch_decode(out, skip_special_tokens=True)[0]
        return " ".join(text.split()), None


def load_backend(name: str, model: str | None = None, device: str = "cpu", max_new_tokens: int = MAX_NEW_TOKENS):
    if name == "shapes":
        return ShapesCaptioner()
    if name == "transformers":
        return TransformersCaptioner(model, device=device, max_new_tokens=max_new_tokens)
    raise ValueError(f"unknown caption backend {name!r}")


def caption(opt: CaptionOptions, records: list[tuple[int, dict]], emit: Callable[[dict], None],
            warn: Callable[[str], None] | None = None, progress=None) -> dict:
    from PIL import Image

    from ...core.shards import take_shard

    t0 = time.perf_counter()
    base = Path(opt.records).resolve().parent if opt.records != "-" else None
    name = "<stdin>" if opt.records == "-" else opt.records
    items = take_shard(records, opt.shard)
    model = load_backend(opt.backend, opt.model, opt.device, opt.max_new_tokens)
    failed = []
    done = 0
    for lineno, rec in items:
        p = Path(rec["image"])
        if not p.is_absolute() and not p.exists() and base is not None:
            p = base / p
        try:
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as exc:
            reason = "no such file" if isinstance(exc, FileNotFoundError) else "cannot read as an image"
            failed.append({"line": lineno, "image": rec["image"], "reason": reason})
            if warn is not None:
                warn(f"{name} line {lineno}: {rec['image']}: {reason}")
            if progress is not None:
                progress.update(1)
            continue
        text, entities = model.caption(rgb)
        out = dict(rec)
        out["caption"] = text
        if entities is not None:
            out["entities"] = entities
        else:
            out.pop("entities", None)  # an earlier captioner's entities no longer describe the caption
        out["caption_backend"] = opt.backend
        if opt.model:
            out["caption_model"] = opt.model
        emit(out)
        done += 1
        if progress is not None:
            progress.update(1)
    return {"records": len(items), "captioned": done, "failed": failed, "backend": opt.backend, "model": opt.model,
            "shard": f"{opt.shard[0]}/{opt.shard[1]}" if opt.shard else None,
            "seconds": round(time.perf_counter() - t0, 3)}
