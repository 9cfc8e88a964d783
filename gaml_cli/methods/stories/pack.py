"""`gaml dataset pack`: JSONL records -> webdataset tar shards (`jpg`, `json`, `png`).

One sample per record: `<key>.jpg` the record's `image` (JPEG bytes copied as they are, other
formats re-encoded), `<key>.png` its `mask_image` when it has one (the instance-index palette
PNG of annotate), `<key>.json` the record without those two paths. The key is
`<video_id>-<shot>-<frame_index>` for keyframe records (else the record's line number); dots
become '_' because webdataset splits a member name at its first dot.

A shard is closed before the sample that would take it over --max-size bytes (the tar's real
size: 512-byte headers, padding and the end blocks counted) or over --max-count samples; a
sample bigger than --max-size alone gets a shard of its own. Member metadata is fixed (mtime 0,
uid 0, mode 0444), so the same records give the same bytes. `--shard i/N` packs slice i of the
records into PREFIX-IIIII-NNNNNN.tar with its own index shards-IIIII.json. The index holds a
digest of the records, their files' sizes and times, and the options: a rerun that matches it
(and finds every tar at its recorded size) writes nothing. Relative paths in a record are
resolved against the current folder first, then against the JSONL file's folder.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BLOCK = 512
RECORD = 20 * BLOCK  # tarfile pads the archive to a multiple of this
PATH_KEYS = ("image", "mask_image")
SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
              "kib": 2**10, "mib": 2**20, "gib": 2**30}


@dataclass
class PackOptions:
    records: str  # JSONL file or '-'
    out: str  # folder for the shards
    max_size: int = 10**9
    max_count: int = 10000
    prefix: str = "shard"
    shard: tuple[int, int] | None = None

    @property
    def stem(self) -> str:
        """Shard file names: PREFIX-NNNNNN.tar, or PREFIX-IIIII-NNNNNN.tar for slice I of --shard."""
        return self.prefix if self.shard is None else f"{self.prefix}-{self.shard[0]:05d}"

    @property
    def index_name(self) -> str:
        return "shards.json" if self.shard is None else f"shards-{self.shard[0]:05d}.json"


def parse_size(text: str) -> int:
    """'500MB', '1GiB', '2e6' -> bytes; ValueError with a message otherwise."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in SIZE_UNITS:
        raise ValueError(f"{text!r}: expected a size such as 500MB, 1GB or 1GiB")
    try:
        n = float(m.group(1)) * SIZE_UNITS[m.group(2).lower()]
    except ValueError:
        raise ValueError(f"{text!r}: expected a size such as 500MB, 1GB or 1GiB") from None
    if n < RECORD:
        raise ValueError(f"{text!r}: a tar file takes at least {RECORD} bytes")
    return int(n)


def validate_record(rec: dict) -> None:
    if not isinstance(rec.get("image"), str) or not rec["image"]:
        raise ValueError("no 'image' (path of the frame) in the record")
    if "mask_image" in rec and not isinstance(rec["mask_image"], str):
        raise ValueError("'mask_image' must be a path")


def _member_size(n: int) -> int:
    return BLOCK + -(-n // BLOCK) * BLOCK


def _tar_size(members: int) -> int:
    return -(-(members + 2 * BLOCK) // RECORD) * RECORD


def _resolve(p: str, base: Path | None) -> Path:
    q = Path(p)
    if q.is_absolute() or q.exists() or base is None:
        return q
    return base / q


def _key(rec: dict, lineno: int) -> str:
    if "video_id" in rec and "frame_index" in rec:
        key = f"{rec['video_id']}-{int(rec.get('shot', 0)):04d}-{int(rec['frame_index']):06d}"
    else:
        key = f"{lineno:08d}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)


def _jpeg_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:3] == b"\xff\xd8\xff":
        return data
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _png_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    return data


class _ShardWriter:
    def __init__(self, opt: PackOptions):
        self.opt = opt
        self.index = 0
        self.shards: list[dict] = []
        self._samples: list[tuple[str, list[tuple[str, bytes]]]] = []
        self._size = 0

    def add(self, key: str, members: list[tuple[str, bytes]]) -> None:
        size = sum(_member_size(len(b)) for _, b in members)
        if self._samples and (_tar_size(self._size + size) > self.opt.max_size
                              or len(self._samples) >= self.opt.max_count):
            self.flush()
        self._samples.append((key, members))
        self._size += size

    def flush(self) -> None:
        if not self._samples:
            return
        from ...core.artifacts import atomic_path

        name = f"{self.opt.stem}-{self.index:06d}.tar"
        path = Path(self.opt.out) / name
        with atomic_path(path, immediate=True) as tmp:
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for key, members in self._samples:
                    for ext, data in members:
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size, info.mtime, info.mode = len(data), 0, 0o444
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        tar.addfile(info, io.BytesIO(data))
        self.shards.append({"shard": name, "samples": len(self._samples), "bytes": path.stat().st_size})
        self.index += 1
        self._samples, self._size = [], 0


def _digest(opt: PackOptions, records: list[tuple[int, dict]]) -> str:
    import hashlib

    h = hashlib.sha256(json.dumps([opt.max_size, opt.max_count, opt.prefix, opt.shard]).encode())
    for lineno, rec in records:
        h.update(json.dumps([lineno, rec], sort_keys=True, ensure_ascii=False).encode("utf-8"))
        for key in PATH_KEYS:
            if isinstance(rec.get(key), str):
                try:
                    st = Path(rec[key]).stat()
                    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
                except OSError:
                    h.update(b"missing")
    return h.hexdigest()


def _resumable(opt: PackOptions, digest: str) -> dict | None:
    p = Path(opt.out) / opt.index_name
    try:
        index = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if index.get("digest") != digest or index.get("failed"):
        return None
    for sh in index.get("shards", []):
        f = Path(opt.out) / sh["shard"]
        if not f.is_file() or f.stat().st_size != sh["bytes"]:
            return None
    return index


def pack(opt: PackOptions, records: list[tuple[int, dict]], warn: Callable[[str], None] | None = None,
         progress=None) -> dict:
    """Write the shards; `records` are (line number, record), all of them: --shard takes its
    slice here. A record whose files are missing or unreadable is reported, skipped and listed
    under `failed`. A rerun whose records, files and options are unchanged finds the index
    file complete and writes nothing."""
    from ...core.artifacts import atomic_write
    from ...core.shards import take_shard

    t0 = time.perf_counter()
    records = take_shard(records, opt.shard)
    digest = _digest(opt, records)
    done = _resumable(opt, digest)
    if done is not None:
        return {"out": opt.out, "shards": len(done["shards"]), "samples": done["samples"],
                "bytes": sum(s["bytes"] for s in done["shards"]), "failed": [], "resumed": True,
                "shard": f"{opt.shard[0]}/{opt.shard[1]}" if opt.shard else None,
                "seconds": round(time.perf_counter() - t0, 3)}
    base = Path(opt.records).resolve().parent if opt.records != "-" else None
    w = _ShardWriter(opt)
    failed: list[dict] = []
    seen: dict[str, int] = {}
    name = "<stdin>" if opt.records == "-" else opt.records
    for lineno, rec in records:
        try:
            members = [("jpg", _jpeg_bytes(_resolve(rec["image"], base)))]
            if rec.get("mask_image"):
                members.append(("png", _png_bytes(_resolve(rec["mask_image"], base))))
        except (OSError, ValueError) as exc:
            reason = "no such file" if isinstance(exc, FileNotFoundError) else (
                getattr(exc, "strerror", None) or str(exc))
            failed.append({"line": lineno, "reason": f"{getattr(exc, 'filename', None) or rec['image']}: {reason}"})
            if warn is not None:
                warn(f"{name} line {lineno}: {failed[-1]['reason']}")
            if progress is not None:
                progress.update(1)
            continue
        meta = {k: v for k, v in rec.items() if k not in PATH_KEYS}
        members.append(("json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")))
        key = _key(rec, lineno)
        if key in seen:
            seen[key] += 1
            key = f"{key}-{seen[key]}"
        else:
            seen[key] = 0
        w.add(key, members)
        if progress is not None:
            progress.update(1)
    w.flush()
    index = {"kind": "gaml.webdataset", "shards": w.shards, "samples": sum(s["samples"] for s in w.shards),
             "digest": digest, "failed": len(failed)}
    with atomic_write(Path(opt.out) / opt.index_name, "w", immediate=True) as fh:
        fh.write(json.dumps(index, indent=1) + "\n")
    return {"out": opt.out, "shards": len(w.shards), "samples": index["samples"],
            "bytes": sum(s["bytes"] for s in w.shards), "failed": failed, "resumed": False,
            "shard": f"{opt.shard[0]}/{opt.shard[1]}" if opt.shard else None,
            "seconds": round(time.perf_counter() - t0, 3)}
