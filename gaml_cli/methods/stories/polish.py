"""`gaml dataset polish --backend rules`: stories of up to 5 frames, entity words made consistent.

Openstory++ groups the frames of a video by up to 5 and asks an LLM to rewrite each frame's
caption with the group's nouns, so one character keeps one name across the story (3 tries,
else the originals). The `rules` backend does the part that needs no model, for captions in the
shapes world ("a red circle and a white square on a blue background", with `entities` from
`gaml dataset caption`):

- frames are grouped per video (`video_id`, else `video`), in frame order, into stories of up to
  --story-len frames; each record gets `story` ("<video_id>-NNN") and `story_frame` (0-based);
- within a story, frames of one shot show the same objects, so each colour's shape is unified
  to the shape most of that shot's frames give it (ties: the first frame's), and the background
  word to the shot's most frequent one;
- `origin_caption` keeps the first caption (an existing `origin_caption` is kept), `caption`
  is the polished one, `polished` says whether it changed.

An LLM backend (transformers causal LM by id or folder) is not built yet (docs/stories.md).
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from typing import Callable

BACKENDS = ("rules",)
_BG = re.compile(r" on an? (\w+) background$")


def validate_record(rec: dict) -> None:
    if not isinstance(rec.get("caption"), str):
        raise ValueError("no 'caption' in the record (run gaml dataset caption first)")
    ents = rec.get("entities", [])
    if not isinstance(ents, list) or not all(isinstance(e, dict) and "color" in e and "shape" in e for e in ents):
        raise ValueError("'entities' must be a list of {\"color\", \"shape\"}")


def _majority(values: list[str]) -> str:
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)  # ties: the earliest


def _rewrite(caption: str, ents: list[dict], shape_of: dict[str, str], background: str | None) -> tuple[str, list[dict]]:
    new_ents = [{**e, "shape": shape_of.get(e["color"], e["shape"])} for e in ents]
    text = caption
    for old, new in zip(ents, new_ents):
        if old["shape"] != new["shape"]:
            text = text.replace(f"a {old['color']} {old['shape']}", f"a {new['color']} {new['shape']}", 1)
    m = _BG.search(text)
    if background and m and m.group(1) != background:
        text = text[:m.start()] + f" on a {background} background"
    return text, new_ents


def polish(records: list[dict], emit: Callable[[dict], None], story_len: int = 5) -> dict:
    t0 = time.perf_counter()
    videos: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        videos[str(rec.get("video_id") or rec.get("video") or "")].append(i)
    out: list[dict | None] = [None] * len(records)
    stories = changed = 0
    for vid, idx in videos.items():
        idx.sort(key=lambda i: (records[i].get("frame_index", 0), i))
        for k in range(0, len(idx), story_len):
            group = idx[k:k + story_len]
            story = f"{vid}-{k // story_len:03d}" if vid else f"story-{stories:06d}"
            stories += 1
            by_shot: dict = defaultdict(list)
            for i in group:
                by_shot[records[i].get("shot")].append(i)
            for shot_frames in by_shot.values():
                shapes: dict[str, list[str]] = defaultdict(list)
                bgs = []
                for i in shot_frames:
                    for e in records[i].get("entities", []):
                        shapes[e["color"]].append(e["shape"])
                    m = _BG.search(records[i]["caption"])
                    if m:
                        bgs.append(m.group(1))
                shape_of = {c: _majority(v) for c, v in shapes.items()}
                background = _majority(bgs) if bgs else None
                for i in shot_frames:
                    rec = records[i]
                    text, ents = _rewrite(rec["caption"], rec.get("entities", []), shape_of, background)
                    new = dict(rec)
                    new["origin_caption"] = rec.get("origin_caption", rec["caption"])
                    new["caption"] = text
                    if "entities" in rec:
                        new["entities"] = ents
                    new["story"] = story
                    new["story_frame"] = group.index(i)
                    new["polished"] = text != rec["caption"]
                    changed += new["polished"]
                    out[i] = new
    for rec in out:
        emit(rec)
    return {"records": len(records), "stories": stories, "changed": changed, "backend": "rules",
            "seconds": round(time.perf_counter() - t0, 3)}
