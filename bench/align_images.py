"""Preference alignment of the shipped shapes teacher, in one run at equal budget: the starting
model, Diffusion-DPO, Diffusion-RPO (gaml's reconstruction) and supervised fine-tuning on the
chosen images only (SFT, the usual peer), each scored on the same captions and seeds.

    python bench/align_images.py [--pairs 1000] [--steps 1000] [--oracle size] [--eval-n 500] [--keep DIR]

Pairs: `gaml dataset prefs` (two samples of one caption from the teacher; the oracle, measured
from the pixels with scikit-image, prefers one). Scores: the oracle's mean over eval-n samples
(its shift against the starting model, and the bar: a quarter of the pairs' mean
chosen-minus-rejected gap), caption accuracy and FD from `gaml eval fd --ref shapes` (gaml's
classifier features). One JSON row per model on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import gaml, row  # noqa: E402


def captions(n: int, seed: int) -> list[str]:
    """Held-out captions in the shapes vocabulary (a different stream from the pairs')."""
    rng = random.Random(seed)
    shapes = ["circle", "square", "triangle", "diamond"]
    colors = ["red", "green", "blue", "yellow", "purple", "white", "black"]
    out = []
    for _ in range(n):
        c = rng.choice(colors)
        out.append(f"a {c} {rng.choice(shapes)} on a {rng.choice([b for b in colors if b != c])} background")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=None, help="align steps (default: the command's)")
    ap.add_argument("--oracle", default="size")
    ap.add_argument("--eval-n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="dpo,rpo,sft")
    ap.add_argument("--keep", default=None)
    ap.add_argument("--reuse", action="store_true",
                    help="with --keep: reuse DIR/prefs/prefs.jsonl and DIR/start.safetensors when present (the pairs "
                         "and the starting model's samples of an earlier run with the same --seed)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="gaml-align-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    prefs = work / "prefs" / "prefs.jsonl"
    if args.reuse and prefs.is_file():
        lines = [json.loads(line) for line in prefs.read_text().splitlines() if line.strip()]
        gap = sum(r["chosen_score"] - r["rejected_score"] for r in lines) / len(lines)
        ties = sum(1 for r in lines if r.get("label") == 0.5)
        row(kind="pairs", pairs=len(lines), ties=ties, oracle=lines[0]["oracle"], mean_gap=gap, bar_shift=gap / 4,
            reused=str(prefs))
    else:
        p = gaml("dataset", "prefs", "--model", "shapes", "--oracle", args.oracle, "-n", args.pairs,
                 "--seed", args.seed, "--out", work / "prefs")
        gap = p["mean_margin"]
        row(kind="pairs", pairs=p["pairs"], ties=p["ties"], oracle=args.oracle, mean_gap=gap,
            bar_shift=gap / 4, seconds=round(time.perf_counter() - t0, 1))
    caps = work / "eval-captions.txt"
    caps.write_text("\n".join(captions(args.eval_n, 10_000 + args.seed)) + "\n")

    def score(model: str, name: str, train: dict | None) -> dict:
        s = work / f"{name}.safetensors"
        if not (args.reuse and name == "start" and s.is_file()):
            gaml("sample", "--model", model, "--prompts", caps, "-n", args.eval_n, "--seed", 7, "--out", s)
        r = gaml("eval", "reward", "--images", s, "--oracle", args.oracle)
        f = gaml("eval", "fd", "--images", s, "--ref", "shapes")
        return {"model": name, "reward": r["mean"], "fd": f["fd"], "fd_floor": f.get("floor"),
                "accuracy": f.get("accuracy"), **({"train": train} if train else {})}

    base = score("shapes", "start", None)
    row(kind="model", **base, shift=0.0)
    steps = [] if args.steps is None else ["--steps", args.steps]
    for method in args.methods.split(","):
        out = work / f"run-{method}"
        t1 = time.perf_counter()
        if method in ("dpo", "rpo"):
            cmd = "rpo" if method == "rpo" else "diffusion-dpo"
            tr = gaml("align", cmd, "--model", "shapes", "--pairs", work / "prefs" / "prefs.jsonl", "--out", out,
                      "--seed", args.seed, *steps)
        else:  # SFT through the same loop and options, from Python (no command of its own)
            from gaml_cli.methods.rpo.run import AlignOptions, run

            o = AlignOptions(model="shapes", pairs=str(work / "prefs" / "prefs.jsonl"), out=str(out), method="sft",
                             seed=args.seed, **({"steps": args.steps} if args.steps else {}))
            tr = run(o)
        secs = round(time.perf_counter() - t1, 1)
        train = {k: tr.get(k) for k in ("steps", "train_seconds", "implicit_accuracy", "mse_w", "ref_mse_w",
                                        "mse_l", "ref_mse_l", "drift_warning")} | {"wall_seconds": secs}
        m = score(str(out), method, train)
        shift = m["reward"] - base["reward"]
        row(kind="model", **m, shift=shift, meets_shift=shift >= gap / 4,
            fd_ratio=m["fd"] / base["fd"] if base["fd"] else None,
            meets_quality=(m["accuracy"] or 0) >= 0.9 and m["fd"] <= 1.5 * base["fd"])
    row(kind="done", seconds=round(time.perf_counter() - t0, 1), work=str(work))


if __name__ == "__main__":
    main()
