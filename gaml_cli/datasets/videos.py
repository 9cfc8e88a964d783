"""Synthetic videos with known shots: moving shapes on drifting backgrounds, hard cuts.

Each video is a sequence of shots. A shot has a two-colour background gradient that pans and
slowly changes brightness, and 1-3 shapes from gaml's shapes renderer (datasets/shapes.py:
circle, square, triangle, diamond) that move in straight lines and bounce off the borders.
At a cut every colour, shape and position is drawn anew, and the new background differs from
the previous one by at least MIN_CUT_DISTANCE (mean absolute RGB difference of the two
gradient colours), so every cut is a visible hard cut. Nothing changes abruptly inside a shot.

Video i is drawn from its own random stream `default_rng([seed, i])`, so it does not depend
on `n`. The ground truth of each video (JSON beside it) holds the cut frames (the first frame
of every shot after the first), the shots with their captions, and every object's visible box
per frame ([x1, y1, x2, y2] in pixels, x2/y2 exclusive; null where the object is hidden).

Palettes: `shapes` draws colours from the shapes data set's seven named colours (with a little
jitter); `random` draws any RGB colour (named by the nearest of the seven in captions), for
checks on colours the detector was not tuned on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .shapes import COLOR_NAMES, COLORS, SHAPES, _mask

PALETTES = ("shapes", "random")
CODECS = {"h264": ".mp4", "ffv1": ".mkv"}  # lossy (the usual case) or lossless
CONTAINERS = {"h264": "mp4", "ffv1": "matroska"}
MIN_CUT_DISTANCE = 60.0  # mean |RGB| difference of consecutive shots' background colours
MIN_OBJECT_CONTRAST = 90.0  # mean |RGB| difference of an object's colour from its background
SUPERSAMPLE = 2
GT_KIND = "gaml.video-truth"


@dataclass
class VideoOptions:
    width: int = 256
    height: int = 192
    fps: int = 24
    shots: tuple[int, int] = (3, 6)  # shots per video, inclusive range
    shot_frames: tuple[int, int] = (12, 48)  # frames per shot, inclusive range
    objects: tuple[int, int] = (1, 3)  # objects per shot, inclusive range
    palette: str = "shapes"
    codec: str = "h264"

    def config(self) -> dict:
        return {"width": self.width, "height": self.height, "fps": self.fps, "shots": list(self.shots),
                "shot_frames": list(self.shot_frames), "objects": list(self.objects), "palette": self.palette,
                "codec": self.codec}


def nearest_color(rgb) -> str:
    rgb = np.asarray(rgb, np.float32)
    return min(COLOR_NAMES, key=lambda c: float(np.abs(np.asarray(COLORS[c], np.float32) - rgb).sum()))


def _draw_color(rng: np.random.Generator, palette: str) -> np.ndarray:
    if palette == "shapes":
        base = np.asarray(COLORS[COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]], np.float32)
        return np.clip(base + rng.integers(-12, 13, 3), 0, 255).astype(np.float32)
    return rng.integers(0, 256, 3).astype(np.float32)


def _dist(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@dataclass
class _Object:
    shape: str
    color: np.ndarray
    r: float  # circumradius-like size in pixels (the shapes renderer's r)
    x: float
    y: float
    vx: float
    vy: float
    boxes: list = field(default_factory=list)


@dataclass
class _Shot:
    start: int
    length: int
    bg: tuple[np.ndarray, np.ndarray]
    angle: float  # gradient direction
    pan: float  # gradient phase change per frame
    bright: float  # brightness change per frame (RGB units)
    objects: list[_Object]


def _plan(rng: np.random.Generator, opt: VideoOptions) -> list[_Shot]:
    n_shots = int(rng.integers(opt.shots[0], opt.shots[1] + 1))
    shots: list[_Shot] = []
    start = 0
    prev = None
    side = min(opt.width, opt.height)
    for _ in range(n_shots):
        length = int(rng.integers(opt.shot_frames[0], opt.shot_frames[1] + 1))
        for _try in range(200):  # a background clearly unlike the previous shot's
            c1, c2 = _draw_color(rng, opt.palette), _draw_color(rng, opt.palette)
            if _dist(c1, c2) > 120:  # keep the gradient gentle: two close colours
                continue
            if prev is None or min(_dist(c1, prev[0]), _dist(c2, prev[1]), _dist((c1 + c2) / 2, (prev[0] + prev[1]) / 2)) >= MIN_CUT_DISTANCE:
                break
        bg = (c1, c2)
        objects = []
        for _o in range(int(rng.integers(opt.objects[0], opt.objects[1] + 1))):
            for _try in range(200):
                col = _draw_color(rng, opt.palette)
                if min(_dist(col, c1), _dist(col, c2)) >= MIN_OBJECT_CONTRAST and all(
                        _dist(col, o.color) >= 40 for o in objects):
                    break
            r = float(rng.uniform(0.08, 0.16)) * side
            margin = 1.25 * r + 1
            x = float(rng.uniform(margin, opt.width - margin))
            y = float(rng.uniform(margin, opt.height - margin))
            speed = float(rng.uniform(0.5, 2.5))
            a = float(rng.uniform(0, 2 * np.pi))
            objects.append(_Object(SHAPES[int(rng.integers(len(SHAPES)))], col, r, x, y,
                                   speed * np.cos(a), speed * np.sin(a)))
        shots.append(_Shot(start, length, bg, float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(-0.01, 0.01)),
                           float(rng.uniform(-0.6, 0.6)), objects))
        start += length
        prev = bg
    return shots


def _background(shot: _Shot, t: int, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (np.cos(shot.angle) * xx / w + np.sin(shot.angle) * yy / h)
    u = 0.5 + 0.5 * np.sin(np.pi * (u + shot.pan * t))  # a smooth band that drifts
    c1, c2 = shot.bg
    img = c1[None, None] * (1 - u[..., None]) + c2[None, None] * u[..., None]
    return img + shot.bright * t


def _render_object(img: np.ndarray, obj: _Object, visible: np.ndarray, index: int) -> None:
    """Draw `obj` at its current position (anti-aliased) and mark its pixels in `visible`."""
    h, w = img.shape[:2]
    r = obj.r
    x0, x1 = max(int(obj.x - 1.3 * r) - 1, 0), min(int(obj.x + 1.3 * r) + 2, w)
    y0, y1 = max(int(obj.y - 1.3 * r) - 1, 0), min(int(obj.y + 1.3 * r) + 2, h)
    s = SUPERSAMPLE
    xs = x0 + (np.arange((x1 - x0) * s, dtype=np.float32) + 0.5) / s
    ys = y0 + (np.arange((y1 - y0) * s, dtype=np.float32) + 0.5) / s
    xx, yy = np.meshgrid(xs, ys)
    m = _mask(obj.shape, xx, yy, obj.x, obj.y, r).astype(np.float32)
    cover = m.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    patch = img[y0:y1, x0:x1]
    patch[:] = cover[..., None] * obj.color[None, None] + (1 - cover[..., None]) * patch
    vis = visible[y0:y1, x0:x1]
    vis[cover >= 0.5] = index


def _box(visible: np.ndarray, index: int):
    ys, xs = np.nonzero(visible == index)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _step(obj: _Object, w: int, h: int) -> None:
    obj.x += obj.vx
    obj.y += obj.vy
    m = 1.25 * obj.r + 1
    if not m <= obj.x <= w - m:
        obj.vx = -obj.vx
        obj.x = float(np.clip(obj.x, m, w - m))
    if not m <= obj.y <= h - m:
        obj.vy = -obj.vy
        obj.y = float(np.clip(obj.y, m, h - m))


def frames_and_truth(seed: int, index: int, opt: VideoOptions, on_visible=None):
    """(iterator of frames (H, W, 3) uint8, truth dict). The truth's boxes fill in as the frames
    are drawn: read it after the iterator is exhausted. `on_visible(frame, index_map)` gets each
    frame's visible-object map (H, W) int16: 0 background, k for the shot's object id k."""
    rng = np.random.default_rng([seed, index])
    shots = _plan(rng, opt)
    w, h = opt.width, opt.height
    truth = {
        "kind": GT_KIND,
        "index": index,
        "seed": seed,
        "fps": opt.fps,
        "width": w,
        "height": h,
        "frames": sum(s.length for s in shots),
        "cuts": [s.start for s in shots[1:]],
        "shots": [],
    }

    def gen():
        for si, shot in enumerate(shots):
            for t in range(shot.length):
                img = _background(shot, t, w, h)
                visible = np.zeros((h, w), np.int16)
                for oi, obj in enumerate(shot.objects):
                    _render_object(img, obj, visible, oi + 1)
                for oi, obj in enumerate(shot.objects):
                    obj.boxes.append(_box(visible, oi + 1))
                    _step(obj, w, h)
                if on_visible is not None:
                    on_visible(shot.start + t, visible)
                yield np.clip(np.rint(img), 0, 255).astype(np.uint8)
            truth["shots"].append(_shot_record(si, shot))

    return gen(), truth


def _shot_record(si: int, shot: _Shot) -> dict:
    bg_name = nearest_color((shot.bg[0] + shot.bg[1]) / 2)
    objs = []
    for oi, o in enumerate(shot.objects):
        objs.append({"id": oi + 1, "shape": o.shape, "color": nearest_color(o.color),
                     "rgb": [int(v) for v in o.color], "boxes": o.boxes})
    names = [f"a {o['color']} {o['shape']}" for o in objs]
    things = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return {
        "shot": si,
        "start_frame": shot.start,
        "end_frame": shot.start + shot.length - 1,
        "background": bg_name,
        "background_rgb": [[int(v) for v in c] for c in shot.bg],
        "caption": f"{things} on a {bg_name} background",
        "objects": objs,
    }


def visible_maps(seed: int, index: int, opt: VideoOptions, frames: set[int]) -> dict[int, np.ndarray]:
    """The visible-object maps (see frames_and_truth) of the given frames of video `index`,
    rendered again (the ground-truth masks; the truth JSON holds boxes only)."""
    out: dict[int, np.ndarray] = {}

    def keep(i, vis):
        if i in frames:
            out[i] = vis.copy()

    it, _ = frames_and_truth(seed, index, opt, on_visible=keep)
    for i, _frame in enumerate(it):
        if i >= max(frames, default=-1):
            break
    return out


def write_video(path: str | Path, frames, fps: int, codec: str = "h264") -> int:
    """Encode frames (H, W, 3) uint8 with PyAV; returns the number of frames written. h264 is
    yuv420p at CRF 18 (one thread, so the bytes are the same on every run); ffv1 is lossless."""
    import av

    n = 0
    with av.open(str(path), mode="w", format=CONTAINERS[codec]) as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                if codec == "h264":
                    stream = container.add_stream("libx264", rate=fps)
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
                    stream.thread_count = 1
                else:
                    stream = container.add_stream("ffv1", rate=fps)
                    stream.pix_fmt = "bgr0"
                stream.width, stream.height = w, h
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n


def generate_video(folder: str | Path, seed: int, index: int, opt: VideoOptions, write_file=None) -> dict:
    """Write video `index` and its ground truth JSON into `folder`; returns the truth.

    `write_file(path, writer)` lets the caller route the writes through atomic temp files
    (default: write in place)."""
    folder = Path(folder)
    name = f"video-{index:05d}"
    video = folder / (name + CODECS[opt.codec])
    frames, truth = frames_and_truth(seed, index, opt)
    truth["video"] = video.name
    truth["config"] = opt.config()

    def _video(tmp):
        write_video(tmp, frames, opt.fps, opt.codec)

    def _json(tmp):
        Path(tmp).write_text(json.dumps(truth) + "\n", encoding="utf-8")

    if write_file is None:
        _video(video)
        _json(folder / (name + ".json"))
    else:
        write_file(video, _video)
        write_file(folder / (name + ".json"), _json)
    return truth


def parse_range(text: str, lo: int, hi: int) -> tuple[int, int]:
    """'3-6' -> (3, 6); '4' -> (4, 4); ValueError naming the allowed bounds."""
    parts = text.split("-")
    try:
        a, b = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        a = b = None
    if a is None or not lo <= a <= b <= hi:
        raise ValueError(f"{text!r}: expected A-B or A with {lo} <= A <= B <= {hi}")
    return a, b


def generate(folder: str | Path, n: int, seed: int, opt: VideoOptions, write_file=None, progress=None) -> list[dict]:
    """Videos 0 .. n-1 and their truth files; returns one manifest line per video."""
    rows = []
    for i in range(n):
        t = generate_video(folder, seed, i, opt, write_file=write_file)
        rows.append({"video": t["video"], "truth": Path(t["video"]).with_suffix(".json").name, "frames": t["frames"],
                     "shots": len(t["shots"]), "cuts": t["cuts"], "captions": [s["caption"] for s in t["shots"]]})
        if progress is not None:
            progress.update(1)
    return rows
