"""`gaml dataset polish --backend rules`: stories of up to 5 frames, entity words made consistent.

Openstory++ groups the frames of a video by up to 5 and asks an LLM to rewrite each frame's
caption with the group's nouns, so one character keeps one name across the story (3 tries,
else the originals). The `rules` backend does the part that needs no model, for captions in the
shapes world ("a red circle and a white square on a blue background", with `entities` from
`gaml dataset caption`):

- frames are grouped per video (`video_id`, else `video`), in frame order, into stories of up to
  --story-len frames; each record gets `story` ("<video_id>-NNN") and `story_frame` (0-based);
  `--shard i/N` takes slice i of the videos (in order of first appearance), so a story is never
  split between jobs;
- within a story, frames of one shot show the same objects, so each colour's shape is unified
  to the shape most of that shot's frames give it (ties: the first frame's), and the background
  word to the shot's most frequent one; a colour that two objects of one frame share is left
  alone (it does not name one object);
- `origin_caption` keeps the first caption (an existing `origin_caption` is kept), `caption`
  is the polished one, `polished` says whether it changed.

Backend `llm` (`--model` a transformers causal LM: hub id, alias or folder): for each frame the
model is asked to rewrite the caption using the story's nouns (the `entities`' shapes when the
records have them, else nouns_of(): the head word of each "a/an/the ..." phrase); greedy first,
then two sampled tries (seeded per story, frame and try); a rewrite is accepted when it is one
non-empty line of at most twice the caption's words plus 10 that names at least one of the
story's nouns. After 3 rejected tries the original caption stays (Openstory++'s rule) and the
frame counts under `fallbacks`.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from typing import Callable

BACKENDS = ("rules",)
_BG = re.compile(r" on an? (\w+) background$")


_NP = re.compile(r"\b(?:a|an|the|one|two|three)\s+((?:[a-z]+\s+){0,3}?)([a-z]+)(?=\s+(?:on|in|and|with|at|of|near|under|over|by|beside|behind|is|are)\b|\s*[,.;]|\s*$)")


def nouns_of(caption: str) -> list[str]:
    """Offline noun guess: the last word of each phrase opened by a determiner and closed by a
    preposition, conjunction, punctuation or the end ("a red circle and a white square on a blue
    background" -> circle, square, background). No tagger data needed."""
    out = []
    for m in _NP.finditer(caption.lower()):
        w = m.group(2)
        if w not in out:
            out.append(w)
    return out


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


def _videos(records: list[dict], shard) -> dict[str, list[int]]:
    """Record indices per video (first appearance order), the --shard slice of the videos."""
    from ...core.shards import take_shard

    videos: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        videos[str(rec.get("video_id") or rec.get("video") or "")].append(i)
    keep = take_shard(list(videos), shard)
    return {k: videos[k] for k in keep}


def _stories(records: list[dict], videos: dict[str, list[int]], story_len: int):
    """(story id, record indices) of every story: each video's frames in frame order, cut into
    runs of story_len; ids `VIDEO-NNN`, or `story-NNNNNN` (a running count) without a video id."""
    count = 0
    for vid, idx in videos.items():
        idx.sort(key=lambda i: (records[i].get("frame_index", 0), i))
        for k in range(0, len(idx), story_len):
            yield (f"{vid}-{k // story_len:03d}" if vid else f"story-{count:06d}"), idx[k:k + story_len]
            count += 1


def polish(records: list[dict], emit: Callable[[dict], None], story_len: int = 5, shard=None) -> dict:
    t0 = time.perf_counter()
    videos = _videos(records, shard)
    out: list[dict | None] = [None] * len(records)
    stories = changed = 0
    for story, group in _stories(records, videos, story_len):
        stories += 1
        by_shot: dict = defaultdict(list)
        for i in group:
            by_shot[records[i].get("shot")].append(i)
        for shot_frames in by_shot.values():
            shapes: dict[str, list[str]] = defaultdict(list)
            twice: set[str] = set()  # a colour two objects of one frame share names no single object
            bgs = []
            for i in shot_frames:
                colours = [e["color"] for e in records[i].get("entities", [])]
                twice |= {c for c in colours if colours.count(c) > 1}
                for e in records[i].get("entities", []):
                    shapes[e["color"]].append(e["shape"])
                m = _BG.search(records[i]["caption"])
                if m:
                    bgs.append(m.group(1))
            shape_of = {c: _majority(v) for c, v in shapes.items() if c not in twice}
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
        if rec is not None:
            emit(rec)
    return {"records": sum(map(len, videos.values())), "stories": stories, "changed": changed, "backend": "rules",
            "seconds": round(time.perf_counter() - t0, 3)}


# --------------------------------------------------------------------------- llm backend

PROMPT = ("Rewrite the image caption so that it uses these story nouns where they fit: {nouns}.\n"
          "Caption: {caption}\nRewritten caption:")
TRIES = 3


def story_nouns(frames: list[dict]) -> list[str]:
    out: list[str] = []
    for rec in frames:
        words = [e["shape"] for e in rec.get("entities", [])] if rec.get("entities") else nouns_of(rec["caption"])
        for w in words:
            if w not in out and w != "background":
                out.append(w)
    return out


def acceptable(text: str, caption: str, nouns: list[str]) -> bool:
    text = text.strip()
    if not text or "\n" in text:
        return False
    if len(text.split()) > 2 * len(caption.split()) + 10:
        return False
    low = text.lower()
    return any(re.search(rf"\b{re.escape(n)}\b", low) for n in nouns) if nouns else True


class LLMRewriter:
    def __init__(self, name: str, device: str = "cpu", max_new_tokens: int = 40):
        from ...core import hub
        from ...core.errors import InputError

        path = hub.resolve(name, option="--model")
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True,
                                                              local_files_only=True).to(device).eval()
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path}: cannot load a causal language model ({first})") from None
        self.device = device
        self.max_new_tokens = max_new_tokens

    def generate(self, prompt: str, attempt: int, seed: int) -> str:
        import torch

        enc = self.tok(prompt, return_tensors="pt").to(self.device)
        kw = {"max_new_tokens": self.max_new_tokens, "pad_token_id": self.tok.pad_token_id
              if self.tok.pad_token_id is not None else self.tok.eos_token_id}
        if attempt == 0:
            kw["do_sample"] = False
        else:
            torch.manual_seed(seed)
            kw.update(do_sample=True, temperature=0.8, top_p=0.95)
        with torch.no_grad():
            out = self.model.generate(**enc, **kw)
        text = self.tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return text.strip().split("\n")[0].strip()


def polish_llm(records: list[dict], emit: Callable[[dict], None], model: str, story_len: int = 5,
               seed: int = 0, device: str = "cpu", progress=None, shard=None) -> dict:
    import zlib

    t0 = time.perf_counter()
    llm = LLMRewriter(model, device=device)
    videos = _videos(records, shard)
    out: list[dict | None] = [None] * len(records)
    stories = changed = fallbacks = tries = 0
    for story, group in _stories(records, videos, story_len):
        stories += 1
        nouns = story_nouns([records[i] for i in group])
        for j, i in enumerate(group):
            rec = records[i]
            prompt = PROMPT.format(nouns=", ".join(nouns), caption=rec["caption"])
            text = None
            for attempt in range(TRIES):
                tries += 1
                cand = llm.generate(prompt, attempt, zlib.crc32(f"{seed}/{story}/{j}/{attempt}".encode()))
                if acceptable(cand, rec["caption"], nouns):
                    text = cand
                    break
            if text is None:
                fallbacks += 1
                text = rec["caption"]
            new = dict(rec)
            new["origin_caption"] = rec.get("origin_caption", rec["caption"])
            new["caption"] = text
            new["story"] = story
            new["story_frame"] = j
            new["story_nouns"] = nouns
            new["polished"] = text != rec["caption"]
            changed += new["polished"]
            out[i] = new
            if progress is not None:
                progress.update(1)
    for rec in out:
        if rec is not None:
            emit(rec)
    return {"records": sum(map(len, videos.values())), "stories": stories, "changed": changed, "fallbacks": fallbacks,
            "generations": tries, "backend": "llm", "model": model, "seconds": round(time.perf_counter() - t0, 3)}
