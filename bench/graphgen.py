"""Benchmark of `gaml graphgen` (Graph Beta Diffusion): one JSON row per line.

In one run: the train-vs-test floor, an Erdos-Renyi and an SBM baseline fitted to the
training set, and GBD trained with `gaml graphgen train` (its defaults unless --steps) and
sampled with `gaml graphgen sample`; MMD of degree, clustering and orbit statistics against
the test set with both kernels (emd: GraphRNN/GDSS; tv: GBD's tables), training time and
sampling time per graph. Published numbers are printed as rows marked "reference" (not
measured here).

    python bench/graphgen.py                       # defaults: about 37 min on 2 idle CPU cores (--sets 2: 46 min)
    python bench/graphgen.py --model gbd.safetensors         # score a trained model: 256 graphs, about 8 min
    python bench/graphgen.py --steps 500 -n 64     # a quick look
    python bench/graphgen.py --sets 2              # GBD scored on 2 sample sets (seeds S, S+1): mean and each set
    python bench/graphgen.py --data ego-like --steps 1500 --train-args "--klub fixed --node-loss per-node"
    python bench/graphgen.py --data sbm --no-gbd   # floor and baselines only (GBD on sbm's 40-200 nodes is long on CPU)

--data picks the data set of `gaml graphgen data` (community-small, sbm, ego-like, grid);
--train-args passes more options to `gaml graphgen train` (they are recorded in the row).

One set of 256 graphs moves GBD's clustering MMD by about +-15% between sampling seeds, so with
--sets K the GBD row carries the mean over K sets (what the ratios use) and each set's figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _cli import gaml, row  # bench/ is on sys.path when a bench runs as a script

# GDSS (Jo et al. 2022), Table 1, community-small, Gaussian-EMD kernels as in gaml's `emd`.
REFERENCE = [
    {"model": "GDSS (paper)", "kernel": "emd", "degree": 0.045, "clustering": 0.086, "orbit": 0.007},
]


def evaluate(samples: Path, test: Path, train: Path) -> dict:
    out = {}
    for kernel in ("emd", "tv"):
        e = gaml("graphgen", "eval", samples, "--ref", test, "--train", train, "--kernel", kernel)
        out[kernel] = {k: e[k] for k in ("degree", "clustering", "orbit")}
        out.update({k: e[k] for k in ("connected", "unique", "novel")})
    return out


def mean_of(rows: list[dict]) -> dict:
    """The mean of evaluate() results over sample sets (nested kernel dicts included)."""
    out = {}
    for k, v in rows[0].items():
        if isinstance(v, dict):
            out[k] = mean_of([r[k] for r in rows])
        else:
            out[k] = round(sum(r[k] for r in rows) / len(rows), 6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0, help="data set seed (and of the samplers)")
    ap.add_argument("-n", type=int, default=256, help="graphs generated per model")
    ap.add_argument("--steps", type=int, default=None, help="GBD training steps (default: gaml graphgen train's)")
    ap.add_argument("--sample-steps", type=int, default=1000, help="GBD reverse steps")
    ap.add_argument("--sets", type=int, default=1, help="GBD sample sets of -n graphs (sampling seeds seed .. seed+K-1); "
                    "the GBD row reports their mean and each set")
    ap.add_argument("--keep", default=None, help="folder to keep data, model and samples in")
    ap.add_argument("--data", default="community-small", help="data set of `gaml graphgen data --name`")
    ap.add_argument("--train-args", default="", help="more options for `gaml graphgen train`, one string")
    ap.add_argument("--no-gbd", action="store_true", help="only the floor and the baselines")
    ap.add_argument("--no-baselines", action="store_true", help="only the floor and GBD")
    ap.add_argument("--model", default=None, help="score this GBD artifact (trained on the same --seed's community-small "
                    "by `gaml graphgen train`) instead of training one; its training time is read from the artifact")
    args = ap.parse_args()
    if args.sets < 1:
        ap.error("--sets must be at least 1")

    from gaml_cli.graphs import baselines
    from gaml_cli.graphs.io import read_graphs, write_graphs

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-graphgen-"))
    tmp.mkdir(parents=True, exist_ok=True)
    data = args.data
    gaml("graphgen", "data", "--name", data, "--seed", args.seed, "--out", tmp / "data")
    train, test = tmp / "data" / "train.jsonl", tmp / "data" / "test.jsonl"
    tr = read_graphs(train)

    floor = evaluate(train, test, train)
    row(bench="graphgen", data=data, seed=args.seed, model="train vs test (floor)", n=len(tr), **floor)
    results = {"floor": floor}

    base = () if args.no_baselines else (("Erdos-Renyi (fitted)", baselines.ErdosRenyi), ("SBM (fitted)", baselines.BlockModel))
    for name, cls in base:
        t0 = time.perf_counter()
        model = cls.fit(tr)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        graphs = model.sample(args.n, seed=args.seed)
        per_graph = (time.perf_counter() - t0) / args.n
        path = tmp / f"{name.split()[0].lower()}.jsonl"
        write_graphs(path, graphs)
        r = evaluate(path, test, train)
        results[name] = r
        row(bench="graphgen", data=data, seed=args.seed, model=name, n=args.n, train_seconds=round(fit_s, 2),
            seconds_per_graph=round(per_graph, 5), **r)

    if args.no_gbd:
        return
    model_path = tmp / "gbd.safetensors"
    if args.model:
        from gaml_cli.core.artifacts import read_header

        model_path = Path(args.model)
        t, wall = read_header(model_path).config["train"], None
    else:
        targs = ["graphgen", "train", "--data", train, "--out", model_path, "--seed", args.seed]
        if args.steps:
            targs += ["--steps", args.steps]
        targs += args.train_args.split()
        t0 = time.perf_counter()
        t = gaml(*targs)
        wall = round(time.perf_counter() - t0, 1)
    per_set, seconds = [], []
    for k in range(args.sets):
        out = tmp / ("gbd.jsonl" if k == 0 else f"gbd-{k}.jsonl")
        s = gaml("graphgen", "sample", "--model", model_path, "-n", args.n, "--steps", args.sample_steps,
                 "--seed", args.seed + k, "--out", out)
        seconds.append(s["seconds_per_graph"])
        per_set.append(evaluate(out, test, train))
    r = mean_of(per_set)
    results["GBD"] = r
    extra = {"sets": [{"seed": args.seed + k, **e} for k, e in enumerate(per_set)]} if args.sets > 1 else {}
    extra_args = {"train_args": args.train_args} if args.train_args else {}
    row(bench="graphgen", data=data, seed=args.seed, model=f"GBD, gaml graphgen train ({t['steps']} steps)", n=args.n, **extra_args,
        train_seconds=t["train_seconds"], train_wall_seconds=wall, parameters=t["parameters"],
        sample_steps=args.sample_steps, seconds_per_graph=round(sum(seconds) / len(seconds), 4), **r, **extra)

    er = results.get("Erdos-Renyi (fitted)")
    for kernel in ("emd", "tv"):
        ratios = {k: {"vs_floor": round(r[kernel][k] / max(floor[kernel][k], 1e-12), 2),
                      **({"vs_erdos_renyi": round(r[kernel][k] / max(er[kernel][k], 1e-12), 3)} if er else {})}
                  for k in r[kernel]}
        row(bench="graphgen", data=data, seed=args.seed, model="GBD ratios", kernel=kernel, **ratios)
    for ref in REFERENCE if data == "community-small" else ():
        row(bench="graphgen", data=data, reference=True, **ref)


if __name__ == "__main__":
    main()
