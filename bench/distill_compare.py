"""One-step generators against their teacher in every feature space of `gaml eval fd`, over
sampling seeds: one JSON row per model and a summary row per pair, on stdout.

Each model (a `gaml distill` run folder, a generator, or the teacher at --teacher-steps) is
sampled with the same seeds (n samples each; balanced labels for digits, the same random
captions for shapes), scored with `gaml eval fd --format json` (gaml's classifier, the
scikit-learn MLP, pixels; FD and KID with their floors at the same n), and the per-space FD and
KID are given as mean and standard deviation over the sampling seeds, with the ratio of each
model's mean FD to the teacher's.

    python bench/distill_compare.py runs/sid-digits --seeds 0,1,2
    python bench/distill_compare.py runs/a runs/b --teacher shapes --ref shapes --guidance 1.5
    python bench/distill_compare.py runs/a --teacher-samples 'cache/teacher-s{seed}.safetensors'
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _cli import gaml, row


def scored(model: str, seed: int, n: int, ref: str, tmp: Path, name: str, cached: str | None = None,
           **sample_args) -> dict:
    """(eval fd's JSON, the sample summary or None) of one model at one sampling seed."""
    s = None
    out = Path(cached.format(seed=seed)) if cached else tmp / f"{name}-s{seed}.safetensors"
    if not out.is_file():
        extra = [a for k, v in sample_args.items() if v is not None for a in (f"--{k.replace('_', '-')}", str(v))]
        s = gaml("sample", "--model", model, "-n", n, "--seed", seed, "--out", out, "--batch-size", 500, *extra)
    return gaml("eval", "fd", "--images", out, "--ref", ref), s


def summarise(evals: list[dict]) -> dict:
    """Per space: FD / KID mean and sd over seeds, floors (mean), accuracy (mean)."""
    out: dict = {"accuracy": round(statistics.mean(e["accuracy"] for e in evals), 4) if evals[0].get("accuracy") is not None else None}
    for space in evals[0]["spaces"]:
        fd = [e["spaces"][space]["fd"] for e in evals]
        kid = [e["spaces"][space]["kid"] for e in evals]
        sd = statistics.stdev if len(evals) > 1 else (lambda v: 0.0)
        out[space] = {"fd": round(statistics.mean(fd), 4), "fd_sd": round(sd(fd), 4),
                      "fd_floor": round(statistics.mean(e["spaces"][space]["fd_floor"] for e in evals), 4),
                      "kid": round(statistics.mean(kid), 5), "kid_sd": round(sd(kid), 5),
                      "kid_se": round(statistics.mean(e["spaces"][space]["kid_se"] for e in evals), 5),
                      "kid_floor": round(statistics.mean(e["spaces"][space]["kid_floor"] for e in evals), 5),
                      "n": evals[0]["spaces"][space]["n"]}
    return out


def compare(models: list[str], args, tmp: Path) -> list[dict]:
    seeds = [int(s) for s in args.seeds.split(",")]
    t_ev, t_rate = [], []
    for seed in seeds:
        e, s = scored(args.teacher, seed, args.n, args.ref, tmp, "teacher", args.teacher_samples,
                      steps=args.teacher_steps, guidance=args.guidance)
        t_ev.append(e)
        if s:
            t_rate.append(s["images_per_s"])
    teacher = summarise(t_ev)
    row(bench="distill-compare", model=f"teacher ({2 * args.teacher_steps - 1} NFE)", seeds=seeds,
        images_per_s=round(statistics.mean(t_rate), 1) if t_rate else None, **teacher)
    rows = []
    for m in models:
        ev, rate = [], []
        for seed in seeds:
            e, s = scored(m, seed, args.n, args.ref, tmp, Path(m).name)
            ev.append(e)
            rate.append(s["images_per_s"])
        one = summarise(ev)
        ratios = {sp: round(one[sp]["fd"] / teacher[sp]["fd"], 3) for sp in one if sp != "accuracy"}
        r = {"bench": "distill-compare", "model": m, "seeds": seeds, "images_per_s": round(statistics.mean(rate), 1),
             **one, "fd_vs_teacher": ratios,
             "speedup": round(statistics.mean(rate) / statistics.mean(t_rate), 1) if t_rate else None}
        row(**r)
        rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="run folders or generator artifacts")
    ap.add_argument("--teacher", default="digits")
    ap.add_argument("--ref", default="digits")
    ap.add_argument("--guidance", type=float, default=None, help="the teacher's guidance (shapes: the --lsg of the runs)")
    ap.add_argument("--teacher-steps", type=int, default=18, help="Heun steps of the teacher (18: 35 NFE)")
    ap.add_argument("--teacher-samples", default=None, help="existing teacher samples, '{seed}' in the path")
    ap.add_argument("--seeds", default="0,1,2", help="sampling seeds")
    ap.add_argument("-n", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        compare(args.models, args, Path(d))


if __name__ == "__main__":
    main()
