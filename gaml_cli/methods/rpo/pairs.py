"""Preference pairs for `gaml align rpo` and `gaml align diffusion-dpo`: a prompt, a preferred
("chosen", the paper's x_w) and a rejected (x_l) image, decoded once into tensors.

Two inputs are read as they are:

JSONL, one pair a line::

    {"prompt": "a red cube", "chosen": "img/a.png", "rejected": "img/b.jpg", "label": 1}

  IMAGE paths are relative to the JSONL file's folder (to the working folder for '-', stdin);
  absolute paths work too. PNG, JPEG and WebP (anything Pillow reads). "chosen" and "rejected"
  already say which image is preferred, so "label" is optional and means:

    1 (or absent)  the chosen image is preferred
    0.5            a tie: the pair is dropped (counted in `ties_dropped`)
    0              the *rejected* image is in fact preferred: the two are swapped (`swapped`)

  (Diffusion-DPO's data has label_0 = 1 when image 0 is preferred; "label" here is that label for
  the image named "chosen".) Any other value is refused. Every line is checked for its shape
  (a non-empty prompt, two image paths, a valid label, chosen and rejected not the same file);
  the images are decoded for the pairs that are kept.

Pick-a-Pic v2 parquet shards (a .parquet file, or a folder whose *.parquet files are read in
name order): the columns caption, jpg_0, jpg_1 (encoded image bytes, or the Hugging Face image
struct {bytes, path}) and label_0 (1: image 0 preferred, 0: image 1 preferred, 0.5: a tie,
dropped; null: unlabeled, dropped). Rows whose `has_label` is false are dropped
(`unlabeled_dropped`), and rows whose `are_different` is false, or whose two images are the
same bytes, are dropped (`same_dropped`). Dropped rows are not inspected further; a kept row
needs a non-empty caption and two readable images. Rows are numbered from 1 in each file.

Bad input raises InputError (exit 2) with one line naming the file and the line or row (and
the image path for an image that is missing or unreadable); nothing is returned.

Images are preprocessed as diffusers' Diffusion-DPO example does, with Pillow: the EXIF
orientation applied, transparency composited on white, converted to RGB (channels=3) or L
(channels=1; 16-bit images scaled to 8 bits), the short side resized to `size` (bicubic,
antialiased), then centre-cropped to `size` x `size`, and mapped from [0, 255] to [-1, 1].

Memory: images are held as uint8 while reading and turned into float32 at the end. The result
takes 2 * N * C * size^2 * 4 bytes (`tensor_bytes`; 1,000 RGB pairs at 512 px: 6.3 GB); the
peak while converting adds a quarter of that.
"""

from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ...core.artifacts import read_jsonl, require_piped_stdin
from ...core.errors import InputError, UsageError

PICKAPIC_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")
_PARQUET_MAGIC = b"PAR1"


@dataclass
class PairSet:
    """N preference pairs: prompts[i] with chosen[i] (preferred) and rejected[i], float32
    (N, C, size, size) in [-1, 1]. `where(i)` names the file and line/row pair i came from;
    the counts say what was dropped or swapped while reading."""

    prompts: list[str]
    chosen: torch.Tensor
    rejected: torch.Tensor
    source_files: list[str] = field(default_factory=list)
    source_lines: list[int] = field(default_factory=list)  # JSONL line, or parquet row (1-based)
    locations: list[str] = field(default_factory=list)  # "FILE line N" or "FILE row N"
    ties_dropped: int = 0
    unlabeled_dropped: int = 0
    same_dropped: int = 0  # parquet: are_different false, or identical image bytes
    swapped: int = 0  # JSONL: label 0, chosen and rejected exchanged

    def __len__(self) -> int:
        return len(self.prompts)

    def where(self, i: int) -> str:
        """Where pair i came from, for messages: 'pairs.jsonl line 3', 'shard.parquet row 17'."""
        return self.locations[i]

    def subset(self, idx: Sequence[int] | torch.Tensor | slice) -> "PairSet":
        """The pairs at idx (a slice, a sequence of indices or an index tensor), in that order.
        The counts describe the whole read and are carried over unchanged."""
        if isinstance(idx, slice):
            idx = range(len(self))[idx]
        rows = [int(i) for i in (idx.tolist() if isinstance(idx, torch.Tensor) else idx)]
        for i in rows:
            if not -len(self) <= i < len(self):
                raise IndexError(f"pair index {i} out of range for {len(self)} pairs")
        t = torch.as_tensor(rows, dtype=torch.long)
        return PairSet(
            prompts=[self.prompts[i] for i in rows],
            chosen=self.chosen[t], rejected=self.rejected[t],
            source_files=[self.source_files[i] for i in rows],
            source_lines=[self.source_lines[i] for i in rows],
            locations=[self.locations[i] for i in rows],
            ties_dropped=self.ties_dropped, unlabeled_dropped=self.unlabeled_dropped,
            same_dropped=self.same_dropped, swapped=self.swapped,
        )

    def counts(self) -> dict[str, int]:
        """What a command prints: pairs kept, dropped and swapped."""
        return {"pairs": len(self), "ties_dropped": self.ties_dropped,
                "unlabeled_dropped": self.unlabeled_dropped, "same_dropped": self.same_dropped,
                "swapped": self.swapped}


def tensor_bytes(n: int, size: int, channels: int = 3) -> int:
    """Bytes of the float32 chosen + rejected tensors of n pairs: 2 * n * C * size^2 * 4."""
    return 2 * n * channels * size * size * 4


def read_pairs(path: str | os.PathLike, size: int, channels: int = 3, limit: int | None = None) -> PairSet:
    """Read preference pairs from a JSONL file ('-': stdin), a Pick-a-Pic parquet file or a
    folder of parquet shards (told apart by the folder, the .parquet name or parquet's magic
    bytes) and decode their images to `size` x `size` with `channels` (3 RGB, 1 grey).
    `limit` stops after that many kept pairs (the rest of the input is not read)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UsageError(f"image size must be a positive whole number, got {size!r}")
    if channels not in (1, 3):
        raise UsageError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"limit must be at least 1, got {limit!r}")
    acc = _Accumulator(limit)
    text = str(path)
    if text == "-":
        _read_jsonl_pairs(None, size, channels, acc)
        return acc.finish("<stdin>", channels, size)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        shards = sorted(q for q in p.glob("*.parquet") if q.is_file())
        if not shards:
            raise InputError(f"{p}: a folder with no *.parquet files "
                             "(give a pairs JSONL file or Pick-a-Pic parquet shards)")
        for shard in shards:
            if acc.full:
                break
            _read_parquet_pairs(shard, size, channels, acc)
    elif p.suffix.lower() == ".parquet" or _starts_with(p, _PARQUET_MAGIC):
        _read_parquet_pairs(p, size, channels, acc)
    else:
        _read_jsonl_pairs(p, size, channels, acc)
    return acc.finish(str(p), channels, size)


# ---- the two readers ------------------------------------------------------------------------


class _Accumulator:
    """Kept pairs as uint8 arrays while reading, plus the counts."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.prompts: list[str] = []
        self.chosen: list[np.ndarray] = []
        self.rejected: list[np.ndarray] = []
        self.files: list[str] = []
        self.lines: list[int] = []
        self.locations: list[str] = []
        self.ties = self.unlabeled = self.same = self.swapped = 0

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.prompts) >= self.limit

    def add(self, prompt: str, chosen: np.ndarray, rejected: np.ndarray, file: str, line: int, where: str) -> None:
        self.prompts.append(prompt)
        self.chosen.append(chosen)
        self.rejected.append(rejected)
        self.files.append(file)
        self.lines.append(line)
        self.locations.append(where)

    def finish(self, name: str, channels: int, size: int) -> PairSet:
        if not self.prompts:
            dropped = []
            for count, what in ((self.ties, "ties"), (self.unlabeled, "unlabeled"),
                                (self.same, "with two identical images")):
                if count:
                    dropped.append(f"{count} {what}")
            why = f" (dropped: {', '.join(dropped)})" if dropped else ""
            raise InputError(f"{name}: no preference pairs to train on{why}")
        return PairSet(
            prompts=self.prompts,
            chosen=_to_float(self.chosen, channels, size),
            rejected=_to_float(self.rejected, channels, size),
            source_files=self.files, source_lines=self.lines, locations=self.locations,
            ties_dropped=self.ties, unlabeled_dropped=self.unlabeled, same_dropped=self.same,
            swapped=self.swapped,
        )


def _to_float(arrays: list[np.ndarray], channels: int, size: int) -> torch.Tensor:
    """uint8 (C, H, W) arrays -> one float32 (N, C, H, W) tensor in [-1, 1]; each array is
    released as soon as it is copied, so the peak is the float tensor plus the uint8 images."""
    out = torch.empty((len(arrays), channels, size, size), dtype=torch.float32)
    for i in range(len(arrays)):
        out[i] = torch.from_numpy(arrays[i])
        arrays[i] = None  # type: ignore[call-overload]
    return out.div_(127.5).sub_(1.0)


def _label_value(x: Any) -> float | None:
    """A label as a float, or None when it is not a number (bools are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _check_jsonl_record(rec: dict[str, Any]) -> None:
    """The shape of one pairs line; read_jsonl turns a ValueError into 'FILE line N: ...'."""
    prompt = rec.get("prompt")
    if "prompt" not in rec:
        raise ValueError('no "prompt" (each line needs "prompt", "chosen" and "rejected")')
    if not isinstance(prompt, str):
        raise ValueError(f'"prompt" must be text, got {type(prompt).__name__}')
    if not prompt.strip():
        raise ValueError('"prompt" is empty')
    for key in ("chosen", "rejected"):
        if key not in rec:
            raise ValueError(f'no "{key}" image path (each line needs "prompt", "chosen" and "rejected")')
        if not isinstance(rec[key], str) or not rec[key].strip():
            raise ValueError(f'"{key}" must be an image path (PNG/JPEG/WebP), got {rec[key]!r}')
    if "label" in rec and _label_value(rec["label"]) not in (0.0, 0.5, 1.0):
        raise ValueError(f'"label" must be 1 (chosen preferred), 0.5 (tie, dropped) or 0 '
                         f'(rejected preferred: swapped), got {rec["label"]!r}')


class _LineCounter:
    """A text stream that counts the lines read from it, so a record streamed by read_jsonl
    (which reads one line a record) can be named by its line number."""

    def __init__(self, fh):
        self.fh = fh
        self.n = 0

    def readline(self) -> str:
        line = self.fh.readline()
        if line:
            self.n += 1
        return line


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _read_jsonl_pairs(p: Path | None, size: int, channels: int, acc: _Accumulator) -> None:
    if p is None:
        require_piped_stdin("pairs JSONL")
        fh, name, base, close = sys.stdin, "<stdin>", Path.cwd(), False
    else:
        try:
            fh = open(p, "r", encoding="utf-8-sig")  # a BOM is not a malformed line
        except OSError as exc:
            raise InputError(f"{p}: could not be read ({exc.strerror or exc})") from None
        name, base, close = str(p), p.parent, True
    counter = _LineCounter(fh)
    try:
        for rec in read_jsonl(counter, validate=_check_jsonl_record, name=name):
            line = counter.n
            where = f"{name} line {line}"
            chosen, rejected = base / rec["chosen"], base / rec["rejected"]
            if _same_file(chosen, rejected):
                raise InputError(f"{where}: chosen and rejected are the same file ({chosen})")
            label = _label_value(rec.get("label", 1))
            if label == 0.5:
                acc.ties += 1
                continue
            if label == 0.0:
                chosen, rejected = rejected, chosen
                acc.swapped += 1
            acc.add(rec["prompt"],
                    _decode_file(chosen, size, channels, where),
                    _decode_file(rejected, size, channels, where),
                    name, line, where)
            if acc.full:
                break
    finally:
        if close:
            fh.close()


def _starts_with(p: Path, magic: bytes) -> bool:
    try:
        with open(p, "rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return False


def _image_bytes(value: Any) -> bytes | None:
    """An image cell: raw bytes, or Hugging Face's image struct {"bytes": ..., "path": ...}."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return None


def _read_parquet_pairs(p: Path, size: int, channels: int, acc: _Accumulator) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = str(p)
    try:
        pf = pq.ParquetFile(p)
        present = set(pf.schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{name}: not a readable parquet file ({' '.join(str(exc).split())})") from None
    missing = [c for c in PICKAPIC_COLUMNS if c not in present]
    if missing:
        raise InputError(f"{name}: missing the Pick-a-Pic column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)} (needs {', '.join(PICKAPIC_COLUMNS)})")
    flags = [c for c in ("has_label", "are_different") if c in present]
    row = 0
    try:
        batches: Iterator = pf.iter_batches(batch_size=16, columns=list(PICKAPIC_COLUMNS) + flags)
        for batch in batches:
            cols = {c: batch.column(c) for c in batch.schema.names}
            for k in range(batch.num_rows):
                row += 1
                where = f"{name} row {row}"
                if "has_label" in cols and cols["has_label"][k].as_py() is False:
                    acc.unlabeled += 1
                    continue
                if "are_different" in cols and cols["are_different"][k].as_py() is False:
                    acc.same += 1
                    continue
                raw_label = cols["label_0"][k].as_py()
                if raw_label is None:
                    acc.unlabeled += 1
                    continue
                label = _label_value(raw_label)
                if label not in (0.0, 0.5, 1.0):
                    raise InputError(f"{where}: label_0 must be 1 (image 0 preferred), 0 (image 1 "
                                     f"preferred) or 0.5 (tie), got {raw_label!r}")
                if label == 0.5:
                    acc.ties += 1
                    continue
                images = []
                for col in ("jpg_0", "jpg_1"):
                    data = _image_bytes(cols[col][k].as_py())
                    if not data:
                        raise InputError(f"{where}: {col} holds no image bytes")
                    images.append(data)
                if images[0] == images[1]:
                    acc.same += 1
                    continue
                caption = cols["caption"][k].as_py()
                if not isinstance(caption, str) or not caption.strip():
                    raise InputError(f"{where}: caption is empty" if isinstance(caption, str) or caption is None
                                     else f"{where}: caption must be text, got {type(caption).__name__}")
                first = 0 if label == 1.0 else 1
                acc.add(caption,
                        _decode_bytes(images[first], size, channels, f"{where}: jpg_{first}"),
                        _decode_bytes(images[1 - first], size, channels, f"{where}: jpg_{1 - first}"),
                        name, row, where)
                if acc.full:
                    return
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{name}: parquet data unreadable after row {row} ({' '.join(str(exc).split())})") from None


# ---- decoding ---------------------------------------------------------------------------------


def _decode_file(path: Path, size: int, channels: int, where: str) -> np.ndarray:
    if not path.exists():
        raise InputError(f"{where}: image {path} not found")
    if path.is_dir():
        raise InputError(f"{where}: image {path} is a folder")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{where}: image {path} could not be read ({exc.strerror or exc})") from None
    return _decode_bytes(data, size, channels, f"{where}: image {path}")


def _decode_bytes(data: bytes, size: int, channels: int, what: str) -> np.ndarray:
    """Encoded image bytes -> uint8 (C, size, size). `what` starts the error line."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _preprocess(img, size, channels)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{what}: too large to decode ({exc})") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{what}: not a readable image "
                         "(not a format Pillow recognises, e.g. PNG, JPEG, WebP)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{what}: not a readable image ({reason})") from None


def _preprocess(img, size: int, channels: int) -> np.ndarray:
    """Orientation, mode, short side to `size` (bicubic), centre crop -> uint8 (C, size, size)."""
    from PIL import Image, ImageOps

    if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation
        img = ImageOps.exif_transpose(img)
    img = _to_mode(img, "RGB" if channels == 3 else "L")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    a = np.asarray(img, dtype=np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return np.array(a, dtype=np.uint8, order="C")  # a writable copy, not Pillow's buffer


def _to_mode(img, mode: str):
    """RGB or L from any Pillow mode: 16-bit grey scaled to 8 bits, transparency on white."""
    from PIL import Image

    if img.mode.startswith("I;16") or (img.mode == "I" and np.asarray(img).max() > 255):
        a = np.asarray(img).astype(np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif img.mode in ("I", "F"):
        img = Image.fromarray(np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img if img.mode == mode else img.convert(mode)
