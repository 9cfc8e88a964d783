"""Where a GBD model loses the structure of its training graphs: one JSON row per line.

Probes of a trained `gaml graphgen` model against the training graphs it was fitted to:

- loss: the training loss (KLUB_X + lambda KLUB_E) at fixed times t over all training graphs;
- denoise: noise every training graph to time t (the forward process, GBD's concentrations)
  and cut the single x0 prediction at 0.5: the edge errors per graph, beside the errors of the
  noisy state alone (z_t / alpha_t cut at 0.5), for t = 0.5 .. 0.8 (below 0.45 both are ~0);
- reconstruct: noise to t0 and run the reverse sampler from there to 0 (--steps grid): the share
  of graphs that come back isomorphic to the one that was noised, and the edge errors;
- sizes (with --samples): mean local clustering per node count in the samples beside the
  training graphs (community-small's communities are fixed graphs, so each size has its own
  clustering; a model that blends sizes shows here before it shows in the MMD);
- cuts (with --samples): the share of graphs whose best bisection cuts 0, 1-2 or 3+ edges, in
  the training graphs and the samples, and (with --ref) each group's MMD against the test graphs;
- halves (with --samples): the share of samples whose two halves (networkx's Kernighan-Lin
  bisection, best of 3 seeds) are both isomorphic to a half of some training graph, i.e. that
  rebuild training communities.

    python bench/graphgen_diagnose.py --model gbd.safetensors --data data/comm/train.jsonl \\
        --samples samples.jsonl --ref data/comm/test.jsonl

The probes use fixed seeds, so two models can be compared on the same noise.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

from _cli import row  # bench/ is on sys.path when a bench runs as a script


def noised(gbd, tens, t0: float, gen: torch.Generator):
    from gaml_cli.methods.gbd import diffusion as bd

    B = tens.A.shape[0]
    eta_n, eta_e = gbd.concentrations(tens.norm_deg)
    a = gbd.sched.alpha(torch.full((B,), t0)).view(-1, 1, 1)
    lz_x = bd.q_sample_logit(gbd.scale_shift(tens.onehot), a, eta_n.unsqueeze(-1), gen)
    up = torch.triu(bd.q_sample_logit(gbd.scale_shift(tens.A), a, eta_e, gen), 1)
    return lz_x, up + up.transpose(1, 2), eta_n, eta_e


def edge_errors(eh: torch.Tensor, cfg, tens) -> torch.Tensor:
    """Wrong node pairs per graph when x0_hat (scaled) is cut at 0.5."""
    M = tens.node_mask
    pair = (M.unsqueeze(2) & M.unsqueeze(1)) & ~torch.eye(M.shape[1], dtype=torch.bool).unsqueeze(0)
    wrong = (((eh - cfg.shift) / cfg.scale > 0.5) != (tens.A > 0.5)) & pair
    return wrong.sum((1, 2)).float() / 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="the training graphs (JSONL) the model was fitted to")
    ap.add_argument("--samples", default=None, help="the model's samples (JSONL), for the per-size clustering")
    ap.add_argument("--ref", default=None, help="test graphs (JSONL): the cuts probe's MMD per group of samples")
    ap.add_argument("--steps", type=int, default=100, help="reverse-step grid of the reconstruction probe")
    args = ap.parse_args()

    import networkx as nx

    from gaml_cli.graphs.io import read_graphs, to_networkx
    from gaml_cli.methods.gbd import data as gd, diffusion as bd
    from gaml_cli.methods.gbd.gbd import GBD
    from gaml_cli.methods.gbd.sample import load_model

    net, cfg, prof, _ = load_model(args.model)
    graphs = read_graphs(args.data)
    tens = gd.to_tensors(graphs, cfg.max_nodes, cfg.max_degree)
    gbd = GBD(cfg, prof["p_x"], float(prof["p_e"][0]))
    B, M = len(graphs), tens.node_mask
    n_frac = M.float().sum(1) / cfg.max_nodes
    base = {"bench": "graphgen-diagnose", "model": args.model, "graphs": B}

    with torch.no_grad():
        for t0 in (0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97):
            gen = torch.Generator().manual_seed(2)
            loss, kx, ke = gbd.loss(net, tens.A, tens.onehot, M, tens.norm_deg, gen, t=torch.full((B,), t0))
            row(**base, probe="loss", t=t0, loss=round(float(loss), 5), klub_x=round(kx, 6), klub_e=round(ke, 6))
        for t0 in (0.5, 0.6, 0.7, 0.8):
            gen = torch.Generator().manual_seed(0)
            lz_x, lz_e, eta_n, eta_e = noised(gbd, tens, t0, gen)
            t = torch.full((B,), t0)
            a = gbd.sched.alpha(t)
            _, eh = gbd.predict_x0(net, lz_x, lz_e, t, a, eta_n, eta_e, M, n_frac, tens.norm_deg)
            naive = (torch.sigmoid(lz_e) / a.view(-1, 1, 1)).clamp(0, 1)
            row(**base, probe="denoise", t=t0, edge_errors=round(float(edge_errors(eh, cfg, tens).mean()), 3),
                noisy_state_errors=round(float(edge_errors(naive, cfg, tens).mean()), 3))

        K = args.steps
        for t0 in (0.55, 0.65, 0.75):
            gen = torch.Generator().manual_seed(1)
            lz_x, lz_e, eta_n, eta_e = noised(gbd, tens, t0, gen)
            for k in range(round(t0 * K), 0, -1):
                t, s = torch.full((B,), k / K), torch.full((B,), (k - 1) / K)
                at, as_ = gbd.sched.alpha(t), gbd.sched.alpha(s)
                xh, eh = gbd.predict_x0(net, lz_x, lz_e, t, at, eta_n, eta_e, M, n_frac, tens.norm_deg)
                if k > 1:
                    a_s, a_t = as_.view(-1, 1, 1), at.view(-1, 1, 1)
                    lz_x = bd.reverse_step_logit(lz_x, xh, a_s, a_t, eta_n.unsqueeze(-1), gen)
                    up = torch.triu(bd.reverse_step_logit(lz_e, eh, a_s, a_t, eta_e, gen), 1)
                    lz_e = up + up.transpose(1, 2)
            err = edge_errors(eh, cfg, tens)
            row(**base, probe="reconstruct", t0=t0, reverse_steps=K, exact=round(float((err == 0).float().mean()), 3),
                edge_errors=round(float(err.mean()), 3))

    if args.samples:
        def by_size(gs):
            out = defaultdict(list)
            for g in gs:
                out[g.num_nodes].append(float(np.mean(list(nx.clustering(to_networkx(g)).values()))))
            return out

        samples = read_graphs(args.samples)
        tr, sa = by_size(graphs), by_size(samples)
        for n in sorted(set(tr) | set(sa)):
            row(**base, probe="sizes", nodes=n, train_graphs=len(tr.get(n, [])), sample_graphs=len(sa.get(n, [])),
                train_clustering=round(float(np.mean(tr[n])), 4) if n in tr else None,
                sample_clustering=round(float(np.mean(sa[n])), 4) if n in sa else None,
                sample_clustering_std=round(float(np.std(sa[n])), 4) if n in sa else None)

        from networkx.algorithms.community import kernighan_lin_bisection

        def bisect(g):
            """The graph's two halves (networkx's Kernighan-Lin, best of 3 seeds) and the edges between them."""
            G = to_networkx(g)
            best = min((kernighan_lin_bisection(G, seed=k) for k in range(3)), key=lambda ab: nx.cut_size(G, *ab))
            return [G.subgraph(h).copy() for h in best], nx.cut_size(G, *best)

        cut_train, cut_samples = [bisect(g) for g in graphs], [bisect(g) for g in samples]

        known = defaultdict(list)
        for hs, _ in cut_train:
            for h in hs:
                if not any(nx.is_isomorphic(h, k) for k in known[h.number_of_nodes()]):
                    known[h.number_of_nodes()].append(h)
        both = sum(all(any(nx.is_isomorphic(h, k) for k in known[h.number_of_nodes()]) for h in hs)
                   for hs, _ in cut_samples)
        row(**base, probe="halves", sample_graphs=len(samples), both_halves_seen=round(both / len(samples), 3),
            distinct_training_halves=sum(len(v) for v in known.values()))

        # cuts: group graphs by the edges between their two halves (0 / 1-2 / 3+; the training
        # graphs have 1-2 bridges, 94% of them); with --ref, each group's MMD against it shows
        # which kind of sample carries the error
        from gaml_cli.graphs import mmd as M

        ref = read_graphs(args.ref) if args.ref else None

        for name, gs, cuts in (("train", graphs, cut_train), ("samples", samples, cut_samples)):
            groups = defaultdict(list)
            for g, (_, c) in zip(gs, cuts):
                groups["0" if c == 0 else "1-2" if c <= 2 else "3+"].append(g)
            for key in ("0", "1-2", "3+"):
                members = groups.get(key, [])
                extra = {}
                if ref is not None and len(members) >= 5:
                    extra = {f"mmd_{k}": round(v, 4) for k, v in M.mmd_all(ref, members, kernel="emd").items()
                             if k in M.STATS}
                row(**base, probe="cuts", of=name, cut=key, share=round(len(members) / len(gs), 3), **extra)


if __name__ == "__main__":
    main()
