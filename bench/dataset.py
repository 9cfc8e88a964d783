"""Shot boundaries of `gaml dataset keyframes` against the ground truth of synthetic videos.

Renders videos with `gaml dataset videos` settings gaml was not tuned on (other seeds, random
RGB colours, other shot lengths and frame sizes), runs gaml's content detector (the scan pass
of keyframes: decode + detect) and, when PySceneDetect is installed, its own ContentDetector
(`scenedetect.detect(path, ContentDetector())`, defaults except min_scene_len) on the same
files, and prints one JSON row per (set, detector): cut precision and recall (a cut counts
within --tolerance frames), shots with at least one keyframe (gaml: full keyframes run), and
frames per second of the detection pass. For gaml it then runs the offline `shapes` backends
of `annotate` and `caption` on the keyframes and scores them against the ground truth rendered
again (datasets.videos.visible_maps, mapped through the same resize + centre crop): box IoU and
mask IoU of the best-matching instance per visible object, label accuracy ("<colour> <shape>"),
false positives (instances matching no object at mask IoU 0.5), caption entity accuracy; polish
(rules) and pack on the results; and the time per frame of every stage.

    python bench/dataset.py --videos 12 --out /tmp/bench-stories > bench/results/dataset.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gaml_cli.datasets import videos as V  # noqa: E402
from gaml_cli.methods.stories.keyframes import KeyframesOptions, keyframes, scan  # noqa: E402
from gaml_cli.methods.stories.shots import match_cuts  # noqa: E402

SETS = {
    # name: (seed, VideoOptions) -- the unit tests and the development runs used seeds 0-3
    "shapes-palette": (101, V.VideoOptions()),
    "random-colours": (202, V.VideoOptions(palette="random", shot_frames=(10, 60))),
    "random-640x360-ffv1": (303, V.VideoOptions(width=640, height=360, palette="random", shot_frames=(9, 40),
                                                objects=(2, 4), codec="ffv1")),
}


def _total(rows):
    tp = sum(r["tp"] for r in rows)
    found = sum(r["found"] for r in rows)
    true = sum(r["true"] for r in rows)
    return {"tp": tp, "found": found, "true": true, "precision": tp / found if found else 1.0,
            "recall": tp / true if true else 1.0}


def _annotate_and_caption(recs, truths, paths, seed, opt, out) -> dict:
    import numpy as np
    from PIL import Image

    from gaml_cli.methods.stories.annotate import AnnotateOptions, annotate
    from gaml_cli.methods.stories.caption import CaptionOptions, caption
    from gaml_cli.methods.stories.regions import iou_box

    numbered = list(enumerate(recs, 1))
    ann: list[dict] = []
    t0 = time.perf_counter()
    annotate(AnnotateOptions(records="-", out=str(out)), numbered, ann.append)
    ann_s = time.perf_counter() - t0
    cap: list[dict] = []
    t0 = time.perf_counter()
    caption(CaptionOptions(records="-"), numbered, cap.append)
    cap_s = time.perf_counter() - t0
    from gaml_cli.methods.stories.pack import PackOptions, pack
    from gaml_cli.methods.stories.polish import polish

    stories: list[dict] = []
    t0 = time.perf_counter()
    polish(cap, stories.append)
    pol_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    packed = pack(PackOptions(records="-", out=str(out) + "-wds"), list(enumerate(ann, 1)))
    pack_s = time.perf_counter() - t0
    by_image = {a["image"]: a for a in ann}
    box_iou, mask_iou, label_ok, fp, ent_ok, ent_n = [], [], [], 0, 0, 0
    for p, t in zip(paths, truths):
        mine = [r for r in recs if r["video"] == p]
        maps = V.visible_maps(seed, t["index"], opt, {r["frame_index"] for r in mine})
        for r in mine:
            shot = t["shots"][r["shot"]]
            vis = maps[r["frame_index"]]
            with Image.open(r["image"]) as im:
                size = im.size[0]
            h, w = vis.shape
            sc = size / min(h, w)
            nw, nh = max(size, round(w * sc)), max(size, round(h * sc))
            left, top = (nw - size) // 2, (nh - size) // 2
            gt = np.asarray(Image.fromarray(vis.astype(np.uint8)).resize((nw, nh), Image.Resampling.NEAREST)
                            .crop((left, top, left + size, top + size)))
            a = by_image.get(r["image"])
            pred = np.asarray(Image.open(a["mask_image"])) if a else np.zeros_like(gt)
            inst = a["mask"][1:] if a else []
            matched = set()
            for o in shot["objects"]:
                g = gt == o["id"]
                if g.sum() < 64:
                    continue
                ys, xs = np.nonzero(g)
                gb = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
                best, best_iou = None, 0.0
                for m in inst:
                    pm = pred == m["value"]
                    iou = float((pm & g).sum() / max((pm | g).sum(), 1))
                    if iou > best_iou:
                        best, best_iou = m, iou
                mask_iou.append(best_iou)
                box_iou.append(iou_box(best["box"], gb) if best else 0.0)
                label_ok.append(bool(best) and best["label"] == f"{o['color']} {o['shape']}")
                if best is not None and best_iou >= 0.5:
                    matched.add(best["value"])
            fp += sum(1 for m in inst if m["value"] not in matched)
        for c in cap:
            if c["video"] != p:
                continue
            shot = t["shots"][c["shot"]]
            want = [f"{o['color']} {o['shape']}" for o in shot["objects"]]
            got = [f"{e['color']} {e['shape']}" for e in c["entities"]]
            ent_n += len(want)
            ent_ok += sum(min(want.count(x), got.count(x)) for x in set(want))
    n = max(len(recs), 1)
    return {"objects_scored": len(mask_iou), "box_iou": round(float(np.mean(box_iou)), 4) if box_iou else None,
            "mask_iou": round(float(np.mean(mask_iou)), 4) if mask_iou else None,
            "label_accuracy": round(float(np.mean(label_ok)), 4) if label_ok else None, "false_positives": fp,
            "caption_entity_accuracy": round(ent_ok / max(ent_n, 1), 4),
            "annotate_s_per_frame": round(ann_s / n, 4), "caption_s_per_frame": round(cap_s / n, 4),
            "polish_s_per_frame": round(pol_s / n, 5), "polish_changed": sum(r["polished"] for r in stories),
            "pack_s_per_frame": round(pack_s / n, 5), "pack_bytes": packed["bytes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=12, help="videos per set")
    ap.add_argument("--out", default=None, help="work folder (default: a temp folder)")
    ap.add_argument("--tolerance", type=int, default=2)
    ap.add_argument("--min-scene-len", type=int, default=8, help="PySceneDetect's min_scene_len (gaml's --min-shot)")
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="gaml-bench-stories-"))
    for name, (seed, opt) in SETS.items():
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        truths = [V.generate_video(folder, seed, i, opt) for i in range(args.videos)]
        render_s = time.perf_counter() - t0
        frames = sum(t["frames"] for t in truths)
        paths = [str(folder / t["video"]) for t in truths]
        kopt = KeyframesOptions(videos=paths, out=str(work / f"{name}-kf"))
        rows, t0 = [], time.perf_counter()
        for p, t in zip(paths, truths):
            rows.append(match_cuts(scan(p, kopt).cuts, t["cuts"], args.tolerance))
        det_s = time.perf_counter() - t0
        recs: list[dict] = []
        t0 = time.perf_counter()
        keyframes(kopt, recs.append)
        kf_s = time.perf_counter() - t0
        covered = 0
        for p, t in zip(paths, truths):
            mine = [r for r in recs if r["video"] == p]
            for s in t["shots"]:
                covered += any(s["start_frame"] <= r["frame_index"] <= s["end_frame"] for r in mine)
        n_shots = sum(len(t["shots"]) for t in truths)
        quality = _annotate_and_caption(recs, truths, paths, seed, opt, work / f"{name}-masks")
        common = {"set": name, "videos": len(paths), "frames": frames, "shots": n_shots,
                  "size": [opt.width, opt.height], "codec": opt.codec, "tolerance": args.tolerance}
        print(json.dumps({**common, "detector": "gaml", **_total(rows), "detect_fps": round(frames / det_s, 1),
                          "keyframes": len(recs), "true_shots_with_keyframe": covered,
                          "keyframes_fps": round(frames / kf_s, 1), "render_fps": round(frames / render_s, 1),
                          **quality,
                          "threads": os.environ.get("OMP_NUM_THREADS")}), flush=True)
        try:
            from scenedetect import ContentDetector, detect
        except ImportError:
            continue
        rows, t0 = [], time.perf_counter()
        for p, t in zip(paths, truths):
            scenes = detect(p, ContentDetector(min_scene_len=args.min_scene_len))
            cuts = [s[0].get_frames() for s in scenes[1:]]
            rows.append(match_cuts(cuts, t["cuts"], args.tolerance))
        det_s = time.perf_counter() - t0
        import scenedetect

        print(json.dumps({**common, "detector": f"pyscenedetect {scenedetect.__version__} ContentDetector",
                          **_total(rows), "detect_fps": round(frames / det_s, 1)}), flush=True)


if __name__ == "__main__":
    main()
