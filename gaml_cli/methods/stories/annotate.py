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
"<colour> <shape>"); `transformers`: the frame's entity nouns (`entities`' shapes, else the
caption's nouns by polish.nouns_of, "background" left out) prompt an open-vocabulary detector
(--detector: OWLv2, OWL-ViT, Grounding DINO, ... through AutoModelForZeroShotObjectDetection),
detections at least --threshold are kept after class-agnostic non-maximum suppression (IoU 0.5),
and each box prompts a segmenter (--segmenter: SAM through SamModel) for its mask; `label` is the
noun, `logit` the detection score. A frame without nouns is dropped ("no_nouns").

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
    detector: str | None = None
    segmenter: str | None = None
    threshold: float = 0.1
    device: str = "cpu"

    def config(self) -> dict:
        if self.backend == "shapes":
            return {"backend": self.backend, "min_logit": self.min_logit}
        return {"backend": self.backend, "detector": self.detector, "segmenter": self.segmenter,
                "threshold": self.threshold}


def _nms(boxes, scores, iou: float = 0.5) -> list[int]:
    from .regions import iou_box

    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if all(iou_box(boxes[i], boxes[j]) < iou for j in keep):
            keep.append(i)
    return keep


class TransformersAnnotator:
    """Nouns -> boxes (zero-shot detector) -> masks (SAM), through transformers."""

    def __init__(self, detector: str, segmenter: str, threshold: float = 0.1, device: str = "cpu"):
        from ...core import hub
        from ...core.errors import InputError

        det_path = hub.resolve(detector, option="--detector")
        seg_path = hub.resolve(segmenter, option="--segmenter")
        try:
            import transformers
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

            from ...diffusion.sd import _quiet_libraries

            _quiet_libraries()
            self.det_proc = AutoProcessor.from_pretrained(det_path, local_files_only=True)
            self.det = AutoModelForZeroShotObjectDetection.from_pretrained(
                det_path, use_safetensors=True, local_files_only=True).to(device).eval()
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{det_path}: cannot load a zero-shot object detector ({first})") from None
        try:
            self.seg_proc = AutoProcessor.from_pretrained(seg_path, local_files_only=True)
            self.seg = transformers.SamModel.from_pretrained(seg_path, use_safetensors=True,
                                                             local_files_only=True).to(device).eval()
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{seg_path}: cannot load a SAM segmenter ({first})") from None
        self.threshold = threshold
        self.device = device

    def detect(self, rgb, nouns: list[str]) -> list[tuple[list[float], float, str]]:
        import torch
        from PIL import Image

        h, w = rgb.shape[:2]
        img = Image.fromarray(rgb)
        enc = self.det_proc(text=[nouns], images=img, return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.det(**enc)
        post = getattr(self.det_proc, "post_process_grounded_object_detection", None)
        if post is not None:
            try:
                r = post(outputs=out, threshold=self.threshold, target_sizes=[(h, w)], text_labels=[nouns])[0]
            except TypeError:  # Grounding DINO's signature
                r = post(out, enc["input_ids"], threshold=self.threshold, text_threshold=self.threshold,
                         target_sizes=[(h, w)])[0]
        else:
            r = self.det_proc.post_process_object_detection(outputs=out, threshold=self.threshold,
                                                            target_sizes=[(h, w)])[0]
        labels = r.get("text_labels") or r.get("labels")
        out_list = []
        for box, score, lab in zip(r["boxes"].tolist(), r["scores"].tolist(), labels):
            if not isinstance(lab, str):
                lab = nouns[int(lab)] if int(lab) < len(nouns) else str(int(lab))
            x1, y1, x2, y2 = (max(0.0, min(float(v), lim)) for v, lim in zip(box, (w, h, w, h)))
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                out_list.append(([x1, y1, x2, y2], float(score), lab))
        keep = _nms([b for b, _, _ in out_list], [s for _, s, _ in out_list])
        return [out_list[i] for i in keep]

    def masks(self, rgb, boxes: list[list[float]]):
        import torch
        from PIL import Image

        if not boxes:
            return []
        inp = self.seg_proc(images=Image.fromarray(rgb), input_boxes=[boxes], return_tensors="pt").to(self.device)
        with torch.no_grad():
            o = self.seg(**inp, multimask_output=False)
        m = self.seg_proc.image_processor.post_process_masks(o.pred_masks.cpu(), inp["original_sizes"].cpu(),
                                                             inp["reshaped_input_sizes"].cpu())[0]
        return [m[i, 0].numpy().astype(bool) for i in range(m.shape[0])]


def frame_nouns(rec: dict) -> list[str]:
    from .polish import nouns_of

    if rec.get("entities"):
        words = [e["shape"] for e in rec["entities"] if isinstance(e, dict) and "shape" in e]
    else:
        words = nouns_of(rec.get("caption") or "")
    out = []
    for w in words:
        if w != "background" and w not in out:
            out.append(w)
    return out


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


def annotate_image(image: Path, opt: AnnotateOptions, model=None, nouns: list[str] | None = None
                   ) -> tuple[list[dict], object, tuple[int, int]]:
    """(mask list in the released format, the index mask (H, W) uint8, (H, W))."""
    import numpy as np
    from PIL import Image

    from . import regions as R

    with Image.open(image) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w = rgb.shape[:2]
    if model is None:
        inst = R.detect(rgb, min_logit=opt.min_logit)
    else:
        dets = model.detect(rgb, nouns or [])
        masks = model.masks(rgb, [b for b, _, _ in dets])
        inst = []
        for (box, score, lab), m in zip(dets, masks):
            inst.append(R.Instance(m, "", (0, 0, 0), lab, round(score, 4),
                                   [int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3]))]))
        inst.sort(key=lambda i: -i.area)
    mask = [{"value": 0, "label": "background"}]
    for i, it in enumerate(inst, 1):
        mask.append({"value": i, "label": it.label if model is None else it.shape, "logit": it.logit, "box": it.box})
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
    dropped = {"no_instances": 0, "too_many": 0, "no_nouns": 0}
    instances = 0
    model = None
    if opt.backend == "transformers":
        model = TransformersAnnotator(opt.detector, opt.segmenter, threshold=opt.threshold, device=opt.device)
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
            nouns = frame_nouns(rec) if model is not None else None
            if model is not None and not nouns:
                dropped["no_nouns"] += 1
                if progress is not None:
                    progress.update(1)
                continue
            if done is not None:
                resumed += 1
                mask = done["mask"]
            else:
                mask, index, _ = annotate_image(image, opt, model, nouns)
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
