"""Training throughput and peak memory of `gaml embed graphmae` and `gaml embed diggr` on one large
random graph (node level): the issue's GPU shape is 100,000 nodes. The step is gaml's own (the
Method.step of methods/graphmae and methods/diggr, Adam as in the shared fit loop), on a random
graph built directly as an edge list (average degree `--degree`, `--features` Gaussian features),
so no N x N matrix is made.

    python bench/embed_speed.py --nodes 100000 --device cuda      # the GPU row (needs a GPU)
    python bench/embed_speed.py --nodes 5000                      # the same script on CPU

One JSON row per method: steps/s and nodes/s after warm-up, seconds per step, peak GPU memory
(torch.cuda.max_memory_allocated; null on CPU), the device.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _cli import row  # noqa: E402


def random_graph(n: int, degree: float, features: int, seed: int = 0):
    from torch_geometric.data import Data
    from torch_geometric.utils import coalesce, to_undirected

    g = torch.Generator().manual_seed(seed)
    m = int(n * degree / 2)
    e = torch.randint(n, (2, m), generator=g)
    e = e[:, e[0] != e[1]]
    ei = coalesce(to_undirected(e), num_nodes=n)
    return Data(x=torch.randn(n, features, generator=g), edge_index=ei, num_nodes=n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--degree", type=float, default=10.0)
    ap.add_argument("--features", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--factors", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    from gaml_cli.methods.diggr.model import DiGGR
    from gaml_cli.methods.diggr.run import _step as diggr_step
    from gaml_cli.methods.graphmae.model import GraphMAE

    dev = torch.device(args.device)
    d = random_graph(args.nodes, args.degree, args.features).to(dev)
    base = {"encoder": "gat", "in_dim": args.features, "hidden": args.hidden, "heads": 4, "layers": 2,
            "mask_rate": 0.5, "replace_rate": 0.05, "alpha": 2.0}
    cases = [("graphmae", GraphMAE(base), lambda m, gen: m.loss(d.x, d.edge_index, gen)),
             ("diggr", DiGGR({**base, "factors": args.factors, "prior_shape": 1.0, "prior_rate": 1.0,
                              "edge_split": "edge", "factor_encoder": "shared", "factor_weight": 1.0,
                              "latent_weight": 1.0, "latent_layers": 1, "representation": "concat"}),
              lambda m, gen: diggr_step(m, d, gen)[0])]
    for name, model, loss_fn in cases:
        model = model.to(dev).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=2e-4)
        gen = torch.Generator().manual_seed(0)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            loss = loss_fn(model, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        sec = (time.perf_counter() - t0) / args.steps
        peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None
        row(kind="embed-speed", method=name, nodes=args.nodes, edges=int(d.edge_index.shape[1]), hidden=args.hidden,
            features=args.features, steps=args.steps, seconds_per_step=round(sec, 4), steps_per_s=round(1 / sec, 2),
            nodes_per_s=round(args.nodes / sec), peak_gib=peak, device=str(dev),
            device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu")
        del model, opt


if __name__ == "__main__":
    main()
