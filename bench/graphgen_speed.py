"""Throughput and peak memory of `gaml graphgen` (GBD) training and sampling: one JSON row per line.

For each network size given (--sizes; `default` is `gaml graphgen train`'s, `reference` GBD's
community-small denoiser: 6 layers, dx 256, de 64, batch 128), it trains --steps optimizer
steps on the community-small training set in this process (the loop of `gaml graphgen train`)
and then samples -n graphs with --sample-steps reverse steps (the sampler of `gaml graphgen
sample`): steps/s, graphs/s, seconds and, on CUDA, the peak allocated GPU memory of each phase.
Quality is not measured here (too few steps); bench/graphgen.py does that.

    python bench/graphgen_speed.py --device cuda                  # on a GPU machine, about 1 min
    python bench/graphgen_speed.py --device cpu --steps 20 -n 16  # a quick look on CPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _cli import row  # bench/ is on sys.path when a bench runs as a script

# name: (layers, node/edge/global widths, batch size, learning rate); None: `gaml graphgen train`'s default
SIZES = {
    "default": (None, None, None, None),
    "reference": (6, (256, 64, 64), 128, 2e-4),
}


def cli_defaults() -> dict:
    """`gaml graphgen train`'s option defaults, read off the command, with its list options parsed."""
    import inspect

    from gaml_cli.commands.graphgen import _numbers, train as train_cmd

    d = {k: p.default for k, p in inspect.signature(train_cmd).parameters.items()}
    d["hidden"] = [int(v) for v in _numbers(d["hidden"], "--hidden", 3)]
    d["eta"] = _numbers(d["eta"], "--eta", 3)
    d["t_focus"] = _numbers(d["t_focus"], "--t-focus", 3)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="training graphs (JSONL); default: community-small, seed 0")
    ap.add_argument("--sizes", default="default,reference")
    ap.add_argument("--steps", type=int, default=300, help="timed optimizer steps per size")
    ap.add_argument("-n", type=int, default=256, help="graphs sampled per size")
    ap.add_argument("--sample-steps", type=int, default=100)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    import torch

    from gaml_cli.core import console
    from gaml_cli.core.runtime import pick_device
    from gaml_cli.graphs.datasets import generate
    from gaml_cli.graphs.io import read_graphs
    from gaml_cli.methods.gbd.sample import sample
    from gaml_cli.methods.gbd.train import TrainConfig, model_overrides, train

    console.set_options(quiet=True)
    dev = pick_device(args.device)
    cuda = dev.type == "cuda"
    name = torch.cuda.get_device_name() if cuda else "cpu"
    graphs = list(read_graphs(Path(args.data))) if args.data else generate("community-small", seed=0)[0]

    def peak() -> float | None:
        return round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None

    opts = cli_defaults()
    for size in args.sizes.split(","):
        layers, hidden, bs, lr = SIZES[size]
        layers, hidden = layers or opts["layers"], hidden or opts["hidden"]
        bs, lr = bs or opts["batch_size"], lr or opts["lr"]
        over = model_overrides(layers, hidden, opts["heads"], opts["eta"], opts["lambda_e"], opts["extra_features"],
                               opts["degree_input"], opts["rw_features"], opts["t_focus"])
        net = over["net"]
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        tc = TrainConfig(steps=args.steps, batch_size=bs, lr=lr, ema=opts["ema"], checkpoint_every=0)
        with tempfile.TemporaryDirectory() as d:
            ema, cfg, prof, rep = train(graphs, tc, Path(d) / "ckpt", dev, cfg_overrides=over)
        row(bench="graphgen-speed", phase="train", size=size, layers=net["layers"],
            hidden=f"{net['dx']},{net['de']},{net['dy']}", parameters=rep["parameters"], batch=bs,
            steps=args.steps, seconds=rep["train_seconds"],
            steps_per_s=round(args.steps / rep["train_seconds"], 2),
            graphs_per_s=round(args.steps * bs / rep["train_seconds"], 1), peak_gib=peak(), device=name,
            torch=torch.__version__)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = list(sample(ema, cfg, prof, args.n, seed=0, steps=args.sample_steps, device=dev))
        secs = time.perf_counter() - t0
        row(bench="graphgen-speed", phase="sample", size=size, n=len(out), reverse_steps=args.sample_steps,
            seconds=round(secs, 2), graphs_per_s=round(len(out) / secs, 2), peak_gib=peak(), device=name,
            torch=torch.__version__)


if __name__ == "__main__":
    main()
