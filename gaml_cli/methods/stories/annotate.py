"""`gaml dataset annotate`: instance boxes and masks per frame, in Openstory++'s released record.

For each record (a keyframe from `keyframes`, or any JSONL line with an `image`), a backend
finds the instances; frames with fewer than --min-instances or more than --max-instances (1
and 8, as Openstory++) are dropped. A kept frame gets:

- an instance-index palette PNG, OUT/<group>/<stem>.png: pixel value 0 background, i for the
  i-th instance; instances are sorted by mask area, largest first, and drawn in that order, so
  smaller masks are drawn last (as the released code);
- in its record: `mask_image` (that PNG's path) and `mask`, the released list
  `[{"value": 0, "label": "background"}, {"value": i, "label", "logit", "box": [x1, y1, x2, y2]}]`;
  when the record has a `caption`, `origin_caption` keeps the first one.

Backends: `shapes` (offline, regions.py: flat-coloured objects on a smooth background, labels
"<colour> <shape>"). Open-vocabulary detection + SAM through transformers is not built yet.

Resume: each frame's result is also written to OUT/<group>/<stem>.json (with the options); a
rerun with the same options reuses it. A missing or unreadable image is reported in one line,
listed under `failed`, and the rest is processed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BACKENDS = ("shapes",)
SIDE_KIND = "gaml.annotation"


@dataclass
class AnnotateOptions:
    records: str
    out: str
    backend: str = "shapes"
    min_instances: int = 1
    max_instances: int = 8
    min_logit: float = 0.5
    shard: tuple[int, int] | None = None

    def config(self) -> dict:
        return {"backend": self.backend, "min_logit": self.min_logit}


def validate_record(rec: dict) -> None:
    if not isinstance(rec.get("image"), str) or not rec["image"]:
        raise ValueError("no 'image' (path of the frame) in the record")


def _group(rec: dict, image: Path) -> str:
    if isinstance(rec.get("video_id"), str) and rec["video_id"]:
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in rec["video_id"])
    parent = os.path.realpath(image.parent)
    return f"{image.parent.name or 'images'}-{hashlib.sha1(parent.encode('utf-8')).hexdigest()[:8]}"


def _resolve(p: str, base: Path | None) -> Path:
    q = Path(p)
    if q.is_absolute() or q.exists() or base is None:
        return q
    return base / q


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def annotate_image(image: Path, opt: AnnotateOptions) -> tuple[list[dict], object, tuple[int, int]]:
    """(mask list in the released format, the index mask (H, W) uint8, (H, W))."""
    import numpy as np
    from PIL import Image

    from . import regions as R

    with Image.open(image) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w = rgb.shape[:2]
    inst = R.detect(rgb, min_logit=opt.min_logit)
    mask = [{"value": 0, "label": "background"}]
    for i, it in enumerate(inst, 1):
        mask.append({"value": i, "label": it.label, "logit": it.logit, "box": it.box})
    index = R.index_mask(inst, h, w) if len(inst) < 256 else None
    return mask, index, (h, w)


def annotate(opt: AnnotateOptions, records: list[tuple[int, dict]], emit: Callable[[dict], None],
             warn: Callable[[str], None] | None = None, progress=None) -> dict:
    from ...core.artifacts import atomic_path, atomic_write
    from ...core.shards import take_shard
    from . import regions as R

    t0 = time.perf_counter()
    base = Path(opt.records).resolve().parent if opt.records != "-" else None
    name = "<stdin>" if opt.records == "-" else opt.records
    items = take_shard(records, opt.shard)
    cfg = opt.config()
    failed: list[dict] = []
    kept = resumed = 0
    dropped = {"no_instances": 0, "too_many": 0}
    instances = 0
    for lineno, rec in items:
        image = _resolve(rec["image"], base)
        folder = Path(opt.out) / _group(rec, image)
        png = folder / (image.stem + ".png")
        side = folder / (image.stem + ".json")
        try:
            if not image.is_file():
                raise OSError("no such file")
            stamp = _stamp(image)
            done = None
            if side.is_file():
                try:
                    done = json.loads(side.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    done = None
                if not (isinstance(done, dict) and done.get("kind") == SIDE_KIND and done.get("config") == cfg
                        and done.get("source") == stamp and (png.is_file() or not done.get("kept"))):
                    done = None
            if done is not None:
                resumed += 1
                mask = done["mask"]
            else:
                mask, index, _ = annotate_image(image, opt)
                n = len(mask) - 1
                keep = opt.min_instances <= n <= opt.max_instances
                if keep:
                    with atomic_path(png, immediate=True) as tmp:
                        R.palette_png(index, tmp)
                with atomic_write(side, "w", immediate=True) as fh:
                    fh.write(json.dumps({"kind": SIDE_KIND, "image": str(image), "config": cfg, "source": stamp,
                                         "kept": keep, "mask": mask}) + "\n")
        except OSError as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            failed.append({"line": lineno, "image": rec["image"], "reason": reason})
            if warn is not None:
                warn(f"{name} line {lineno}: {rec['image']}: {reason}")
            if progress is not None:
                progress.update(1)
            continue
        except Exception as exc:  # PIL's UnidentifiedImageError and friends: not an image
            if type(exc).__name__ not in ("UnidentifiedImageError", "DecompressionBombError", "SyntaxError"):
                raise
            failed.append({"line": lineno, "image": rec["image"], "reason": "cannot read as an image"})
            if warn is not None:
                warn(f"{name} line {lineno}: {rec['image']}: cannot read as an image")
            if progress is not None:
                progress.update(1)
            continue
        n = len(mask) - 1
        if n < opt.min_instances:
            dropped["no_instances"] += 1
        elif n > opt.max_instances:
            dropped["too_many"] += 1
        else:
            out = dict(rec)
            if "caption" in rec:
                out.setdefault("origin_caption", rec["caption"])
            out["mask_image"] = str(png)
            out["mask"] = mask
            emit(out)
            kept += 1
            instances += n
        if progress is not None:
            progress.update(1)
    return {"records": len(items), "kept": kept, "resumed": resumed, "dropped": dropped, "instances": instances,
            "failed": failed, "backend": opt.backend, "out": opt.out,
            "shard": f"{opt.shard[0]}/{opt.shard[1]}" if opt.shard else None,
            "seconds": round(time.perf_counter() - t0, 3)}
