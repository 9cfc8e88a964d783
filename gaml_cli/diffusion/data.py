"""Training data for image models: an `images` artifact plus its labels or captions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.artifacts import file_sha256, load_artifact, read_jsonl
from ..core.errors import InputError, UsageError


@dataclass
class ImageData:
    images: np.ndarray  # (N, C, H, W) float32 in [-1, 1]
    cond_type: str  # class | text | none
    labels: np.ndarray | None
    captions: list[str] | None
    info: dict[str, Any]  # what the model needs to know about its data (classes, vocab, ...)
    path: Path


def load_image_data(path: str, split: str = "train", cond: str = "auto") -> ImageData:
    art = load_artifact(path, "images")
    cfg = art.config
    x = art["images"]
    keep = np.ones(len(x), dtype=bool)
    if split not in ("train", "test", "all"):
        raise UsageError(f"--split must be train, test or all (got {split!r})")
    if split != "all" and "split" in art.tensors:
        keep = art["split"] == (1 if split == "test" else 0)
    captions = None
    cap_file = cfg.get("captions_file")
    if cap_file and cond in ("auto", "text"):
        cap_path = Path(path).parent / cap_file
        if not cap_path.is_file():
            raise InputError(f"{path}: its captions file {cap_path} is missing")
        if cfg.get("captions_sha256") and file_sha256(cap_path) != cfg["captions_sha256"]:
            raise InputError(f"{cap_path}: does not match {path} (sha256 differs); regenerate both")
        recs = list(read_jsonl(cap_path))
        if len(recs) != len(x):
            raise InputError(f"{cap_path}: {len(recs)} captions for {len(x)} images")
        captions = [str(r["caption"]) for r in recs]
    if cond == "auto":
        cond = "text" if captions is not None else ("class" if "labels" in art.tensors else "none")
    info: dict[str, Any] = {"dataset": cfg.get("dataset"), "image_shape": list(x.shape[1:])}
    labels = None
    if cond == "class":
        if "labels" not in art.tensors:
            raise UsageError(f"{path} has no labels; use --cond text or none")
        labels = art["labels"][keep].astype(np.int64)
        classes = cfg.get("classes") or [str(i) for i in range(int(labels.max()) + 1)]
        info["classes"] = classes
    elif cond == "text":
        if captions is None:
            raise UsageError(f"{path} has no captions; use --cond class or none")
        captions = [c for c, k in zip(captions, keep) if k]
        info["attributes"] = cfg.get("attributes")
        info["caption_template"] = cfg.get("caption_template")
    elif cond != "none":
        raise UsageError(f"--cond must be auto, class, text or none (got {cond!r})")
    images = x[keep].astype(np.float32)
    if len(images) == 0:
        raise InputError(f"{path}: no images in split {split!r}")
    return ImageData(images, cond, labels, captions if cond == "text" else None, info, Path(path))


def vocabulary(captions: list[str]) -> list[str]:
    from .models import words

    seen: dict[str, None] = {}
    for c in captions:
        for w in words(c):
            seen.setdefault(w, None)
    return list(seen)
