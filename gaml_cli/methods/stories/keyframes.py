"""`gaml dataset keyframes`: videos -> shots -> keyframes, one JSONL record per keyframe.

For each video (decoded with PyAV):

1. pass one decodes every frame at detection size (width <= 256) and feeds the content detector
   (shots.py); it keeps each frame's time;
2. each shot of L frames gets K = min(--per-shot, L) slots at (j + 1/2) L / K, each with a
   window of up to 3 frames either side (one frame kept clear of the shot's ends);
3. pass two decodes the video again up to the last window; in each window the frame with the
   highest edge sharpness (frames.sharpness, at detection size) is the candidate, so a blurred
   frame loses to a sharp neighbour; filters: a candidate under --min-sharpness is dropped
   ("blurry"); a video whose short side is under --min-side gives no keyframes ("small");
4. each candidate is resized so the short side is --size and centre-cropped (512 by default,
   as Openstory++), and dropped if it is a near-duplicate of a keyframe already kept from the
   same video: pHash within --max-hamming bits and 8x8 colour thumbnails within --max-color
   (pHash alone ignores colour);
5. the keyframes are written as JPEG to OUT/<video-id>/<shot>-<frame>.jpg, then the video's
   record file OUT/<video-id>/keyframes.json, which marks the video as done.

Resume: a rerun with the same options skips a video whose keyframes.json exists and matches
(same options, same source size and modification time) and emits its records again, so the
JSONL of a rerun is complete. A video that cannot be opened or decoded is reported in one line
and listed under `failed`; the others are processed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import frames as F
from .shots import DETECT_WIDTH, MIN_SHOT, THRESHOLD, ContentDetector, shots_from_cuts

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
DONE_NAME = "keyframes.json"
DONE_KIND = "gaml.keyframes"


@dataclass
class KeyframesOptions:
    """Every option of `gaml dataset keyframes`, by the same names."""

    videos: list[str]
    out: str
    size: int = 512
    per_shot: int = 1
    threshold: float = THRESHOLD
    min_shot: int = MIN_SHOT
    min_sharpness: float = 0.8
    min_side: int = 128
    max_hamming: int = 6
    max_color: float = 12.0
    quality: int = 95
    shard: tuple[int, int] | None = None

    def config(self) -> dict:
        """The options that decide a video's output (a resumed video must match them)."""
        d = asdict(self)
        for k in ("videos", "out", "shard"):
            d.pop(k)
        return d


class VideoError(Exception):
    """A video that cannot be opened or decoded (reported, the run goes on)."""


def expand_inputs(videos: list[str]) -> list[str]:
    """Files as given; a folder gives its video files (sorted, by VIDEO_EXTENSIONS); repeats
    of one file are kept once. Missing paths stay in the list: they fail in their turn."""
    out: list[str] = []
    seen: set[str] = set()
    for v in videos:
        p = Path(v)
        items = [str(q) for q in sorted(p.iterdir()) if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS] \
            if p.is_dir() else [v]
        for it in items:
            key = os.path.realpath(it)
            if key not in seen:
                seen.add(key)
                out.append(it)
    return out


def video_id(path: str) -> str:
    """Folder name of a video's outputs: its stem and 8 hex digits of its absolute path."""
    p = Path(path)
    digest = hashlib.sha1(os.path.realpath(p).encode("utf-8")).hexdigest()[:8]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in p.stem) or "video"
    return f"{stem}-{digest}"


def _open(path: str):
    import av

    p = Path(path)
    if not p.exists():
        raise VideoError("no such file")
    if p.is_dir():
        raise VideoError("is a folder")
    try:
        container = av.open(str(p))
    except av.FFmpegError as exc:
        raise VideoError(f"cannot open as a video ({_av_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError("has no video stream")
    return container


def _av_reason(exc: Exception) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(msg).split())


def _decode(container):
    """Frames of the first video stream; a decoding error becomes VideoError."""
    import av

    stream = container.streams.video[0]
    try:
        for frame in container.decode(stream):
            yield frame
    except av.FFmpegError as exc:
        raise VideoError(f"decoding failed ({_av_reason(exc)})") from None


def _detect_size(w: int, h: int) -> tuple[int, int]:
    if w <= DETECT_WIDTH:
        return w, h
    return DETECT_WIDTH, max(2, round(h * DETECT_WIDTH / w / 2) * 2)


@dataclass
class _Scan:
    frames: int
    width: int
    height: int
    fps: float
    cuts: list[int]
    times: np.ndarray


def scan(path: str, opt: KeyframesOptions) -> _Scan:
    """Pass one: shot cuts and frame times, at detection size."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        det = ContentDetector(threshold=opt.threshold, min_shot=opt.min_shot)
        times: list[float] = []
        w = h = 0
        for frame in _decode(container):
            if not w:
                w, h = frame.width, frame.height
            dw, dh = _detect_size(frame.width, frame.height)
            det.push(frame.reformat(width=dw, height=dh, format="rgb24").to_ndarray())
            t = frame.time
            times.append(float(t) if t is not None else (len(times) / fps if fps else float("nan")))
    finally:
        container.close()
    if det.frames == 0:
        raise VideoError("no frames could be decoded")
    return _Scan(det.frames, w, h, fps, det.cuts, np.asarray(times))


WINDOW = 3  # frames either side of a slot where the sharpest frame is looked for


def windows(shot: tuple[int, int], k: int) -> list[tuple[int, int, float]]:
    """(lo, hi, centre) of the min(k, L) keyframe slots of one shot, windows inclusive."""
    s, e = shot
    length = e - s + 1
    k = max(1, min(k, length))
    guard = 1 if length > 4 else 0
    half = min(float(WINDOW), max(0.5, length / (4 * k)))
    out = []
    for j in range(k):
        c = s + (j + 0.5) * length / k - 0.5
        lo = max(s + guard, math.ceil(c - half))
        hi = min(e - guard, math.floor(c + half))
        if lo > hi:
            lo = hi = min(max(round(c), s), e)
        if out and lo <= out[-1][1]:
            lo = out[-1][1] + 1
            if lo > hi:
                continue
        out.append((lo, hi, c))
    return out


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    from PIL import Image

    from ...core.artifacts import atomic_path

    with atomic_path(path, immediate=True) as tmp:  # lands now: a resumed run finds it
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality)


def _source_stamp(path: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _load_done(folder: Path, path: str, cfg: dict) -> dict | None:
    done = folder / DONE_NAME
    if not done.is_file():
        return None
    try:
        rec = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if rec.get("kind") != DONE_KIND or rec.get("config") != cfg or rec.get("source") != _source_stamp(path):
        return None
    if not all((folder / r["image"]).is_file() for r in rec.get("records", [])):
        return None
    return rec


def process_video(path: str, opt: KeyframesOptions, counts: dict) -> dict:
    """Both passes for one video; returns its done record (records with image names relative
    to the video's folder). Raises VideoError."""
    folder = Path(opt.out) / video_id(path)
    sc = scan(path, opt)
    counts["frames_decoded"] += sc.frames
    shots = shots_from_cuts(sc.cuts, sc.frames)
    slots: list[tuple[int, int, float, int]] = []  # lo, hi, centre, shot
    if min(sc.width, sc.height) < opt.min_side:
        counts["dropped"]["small"] += sum(len(windows(sh, opt.per_shot)) for sh in shots)
    else:
        slots = [(lo, hi, c, si) for si, sh in enumerate(shots) for lo, hi, c in windows(sh, opt.per_shot)]
    records = []
    kept: list[tuple[np.ndarray, np.ndarray]] = []

    def finish(best, slot):
        sharp, i, rgb = best
        si = slot[3]
        if sharp < opt.min_sharpness:
            counts["dropped"]["blurry"] += 1
            return
        crop = F.resize_crop(rgb, opt.size)
        sig = (F.phash(crop), F.thumb(crop))
        if opt.max_hamming >= 0 and any(F.is_near_duplicate(sig, k, opt.max_hamming, opt.max_color) for k in kept):
            counts["dropped"]["duplicate"] += 1
            return
        kept.append(sig)
        name = f"{si:04d}-{i:06d}.jpg"
        _write_jpeg(folder / name, crop, opt.quality)
        s, e = shots[si]
        t = float(sc.times[i])
        records.append({"shot": si, "start_frame": s, "end_frame": e, "frame_index": i,
                        "time": round(t, 6) if math.isfinite(t) else None, "image": name,
                        "sharpness": round(sharp, 3)})

    if slots:
        container = _open(path)
        k = 0
        best = None  # (sharpness, frame index, full-size RGB) of the current slot
        try:
            for i, frame in enumerate(_decode(container)):
                if k >= len(slots):
                    break
                lo, hi = slots[k][0], slots[k][1]
                if i < lo:
                    continue
                dw, dh = _detect_size(frame.width, frame.height)
                sharp = F.sharpness(frame.reformat(width=dw, height=dh, format="rgb24").to_ndarray())
                if best is None or sharp > best[0] or (sharp == best[0] and abs(i - slots[k][2]) < abs(best[1] - slots[k][2])):
                    best = (sharp, i, frame.to_ndarray(format="rgb24"))
                if i == hi:
                    finish(best, slots[k])
                    k, best = k + 1, None
        finally:
            container.close()
        if k < len(slots):  # the second decode ended early (a file changed under us)
            raise VideoError(f"decoded fewer frames than the first pass ({sc.frames})")
    for old in folder.glob("*.jpg") if folder.is_dir() else []:  # leftovers of an older run
        if old.name not in {r["image"] for r in records}:
            old.unlink()
    done = {"kind": DONE_KIND, "video": path, "config": opt.config(), "source": _source_stamp(path),
            "frames": sc.frames, "fps": sc.fps, "width": sc.width, "height": sc.height,
            "shots": [list(s) for s in shots], "records": records}
    from ...core.artifacts import atomic_write

    with atomic_write(folder / DONE_NAME, "w", immediate=True) as fh:
        fh.write(json.dumps(done) + "\n")
    return done


def _public(done: dict, path: str, folder: Path) -> list[dict]:
    vid = folder.name
    return [{"video": path, "video_id": vid, **{k: v for k, v in r.items() if k != "image"},
             "image": str(folder / r["image"])} for r in done["records"]]


def keyframes(opt: KeyframesOptions, emit: Callable[[dict], None], progress=None,
              warn: Callable[[str], None] | None = None) -> dict:
    """Run the whole job: every video of the shard; `emit` gets each keyframe record. Returns
    the summary; `failed` lists the videos that could not be read (with the reason)."""
    from ...core.shards import take_shard

    items = take_shard(expand_inputs(opt.videos), opt.shard)
    counts = {"frames_decoded": 0, "dropped": {"blurry": 0, "duplicate": 0, "small": 0}}
    failed: list[dict] = []
    processed = resumed = shots = n_kf = 0
    t0 = time.perf_counter()
    cfg = opt.config()
    for path in items:
        folder = Path(opt.out) / video_id(path)
        try:
            done = _load_done(folder, path, cfg) if Path(path).is_file() else None
            if done is not None:
                resumed += 1
            else:
                done = process_video(path, opt, counts)
                processed += 1
        except VideoError as exc:
            failed.append({"video": path, "reason": str(exc)})
            if warn is not None:
                warn(f"{path}: {exc}")
            if progress is not None:
                progress.update(1)
            continue
        for rec in _public(done, path, folder):
            emit(rec)
        shots += len(done["shots"])
        n_kf += len(done["records"])
        if progress is not None:
            progress.update(1, keyframes=n_kf)
    seconds = time.perf_counter() - t0
    return {
        "videos": len(items),
        "processed": processed,
        "resumed": resumed,
        "failed": failed,
        "shots": shots,
        "keyframes": n_kf,
        "dropped": counts["dropped"],
        "frames_decoded": counts["frames_decoded"],
        "seconds": round(seconds, 3),
        "decode_fps": round(counts["frames_decoded"] / seconds, 1) if seconds > 0 and counts["frames_decoded"] else None,
        "out": opt.out,
        "shard": f"{opt.shard[0]}/{opt.shard[1]}" if opt.shard else None,
    }
