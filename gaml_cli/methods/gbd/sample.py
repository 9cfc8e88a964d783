"""GBD's reverse sampler and the model artifact (network + training-set profiles).

A sample starts from a random training graph's node count and normalised degree profile (GBD
Sec. 3.3: the concentration of every node and edge at sampling time comes from it), z at t = 1
drawn from Beta(eta alpha_1 x, eta (1 - alpha_1 x)) with x the scaled value of an empty entry, then K
reverse steps t_k = k / K -> t_{k-1}: predict x0, draw p ~ Beta(eta (alpha_s - alpha_t) x0_hat,
eta (1 - alpha_s x0_hat)) and move z_s = z_t + (1 - z_t) p (in logit space). The graph is the
last prediction mapped back to [0, 1] and cut at 0.5. Sample i draws everything from its own
generator seeded by (seed, i), so a sample does not depend on the batch or on -n.

Where GBD's released sampler (xinyangATK/GraphBetaDiffusion, graph_beta_diffusion_general.py,
sample_batch) differs: its time grid is K points from 1 down to 1e-5 and then 0, so its last
prediction is made at t = 1e-5, gaml's at t = 1/K; it cuts the last edge prediction, mapped
back, at 0.9 (diffusion_utils.sample_beta_features), gaml at 0.5; and an edge takes the
concentration of its row's node (get_eta_e), gaml that of its higher-degree end (symmetric).
It also takes raw rather than normalised degrees for the profile (PAPERS.md).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ...core.artifacts import load_artifact, save_artifact
from ...core.runtime import sample_seed
from ...graphs.io import Graph, from_adjacency
from . import diffusion as bd
from .gbd import GBD, GBDConfig, build_net

KIND = "gbd"
PROFILE_KEYS = ("profile_n", "profile_norm_deg", "p_x", "p_e")
INIT_X0 = 0.01


def save_model(path, net, cfg: GBDConfig, profiles: dict, config_extra: dict, seed: int, parents) -> Path:
    tensors = {f"net.{k}": v.detach().float().contiguous() for k, v in net.state_dict().items()}
    tensors.update({k: v.contiguous() for k, v in profiles.items()})
    config = {"model": asdict(cfg), **config_extra}
    return save_artifact(path, tensors, kind=KIND, config=config, seed=seed, parents=parents)


def load_model(path, device="cpu"):
    from ...core.errors import InputError

    art = load_artifact(path, KIND, framework="pt", device="cpu")
    try:
        mc = dict(art.config["model"])
        mc["eta"], mc["thresholds"] = tuple(mc["eta"]), tuple(mc["thresholds"])
        cfg = GBDConfig(**mc)
        net = build_net(cfg)
        state = {k[4:]: v for k, v in art.tensors.items() if k.startswith("net.")}
        net.load_state_dict(state)
        prof = {k: art.tensors[k] for k in PROFILE_KEYS}
    except (KeyError, TypeError, RuntimeError) as exc:
        raise InputError(f"{path}: not a usable GBD model ({str(exc).splitlines()[0][:120]})") from None
    return net.to(device).eval(), cfg, prof, art.config


@torch.no_grad()
def sample_batch(net, cfg: GBDConfig, prof: dict, indices: list[int], seed: int, steps: int,
                 device="cpu") -> list[Graph]:
    gbd = GBD(cfg, prof["p_x"], float(prof["p_e"][0]))
    sched = gbd.sched
    gens = [torch.Generator().manual_seed(sample_seed(seed, i)) for i in indices]
    B, N, D = len(indices), cfg.max_nodes, cfg.D
    # the node count and degree profile of a random training graph, per sample
    G = len(prof["profile_n"])
    pick = [int(torch.randint(G, (1,), generator=g)) for g in gens]
    n = prof["profile_n"][pick]
    norm_deg = prof["profile_norm_deg"][pick].float()
    node_mask = torch.arange(N).unsqueeze(0) < n.unsqueeze(1)
    eta_n, eta_e = gbd.concentrations(norm_deg)
    # z at t = 1 as the forward process leaves an all-low graph (x0 = 0.01 before scale and shift,
    # as the GBD reference starts): at alpha_1 ~ 2e-6 the logits still carry the scale 1 / (eta
    # alpha x0), so the start must look like data the network was trained on, not like a mean
    xbar_x = gbd.scale_shift(torch.full((B, N, D), INIT_X0))
    xbar_e = gbd.scale_shift(torch.full((B, N, N), INIT_X0))
    a1 = sched.alpha(torch.ones(B)).view(-1, 1, 1)

    def per_sample(fn, *tensors):
        return torch.stack([fn(*(t[b] for t in tensors), generator=gens[b]) for b in range(B)])

    def sym(lz):
        up = torch.triu(lz, 1)
        return up + up.transpose(1, 2)

    lz_x = per_sample(bd.q_sample_logit, xbar_x, a1.expand(B, 1, 1), eta_n.unsqueeze(-1))
    lz_e = sym(per_sample(bd.q_sample_logit, xbar_e, a1.expand(B, 1, 1), eta_e))
    n_frac = n.float() / N
    net = net.to(device)
    eh = None
    for k in range(steps, 0, -1):
        t = torch.full((B,), k / steps)
        s = torch.full((B,), (k - 1) / steps)
        at, as_ = sched.alpha(t), sched.alpha(s)
        xh, eh = gbd.predict_x0(net, lz_x.to(device), lz_e.to(device), t.to(device), at.to(device),
                                eta_n.to(device), eta_e.to(device), node_mask.to(device), n_frac.to(device),
                                norm_deg.to(device), by_size=True)
        xh, eh = xh.cpu(), eh.cpu()
        if k > 1:
            a_t, a_s = at.view(-1, 1, 1), as_.view(-1, 1, 1)
            lz_x = per_sample(bd.reverse_step_logit, lz_x, xh, a_s, a_t, eta_n.unsqueeze(-1))
            lz_e = sym(per_sample(bd.reverse_step_logit, lz_e, eh, a_s, a_t, eta_e))
    adj = ((eh - cfg.shift) / cfg.scale > 0.5)
    out = []
    for b in range(B):
        k = int(n[b])
        out.append(from_adjacency(adj[b, :k, :k].numpy().astype(np.float32)))
    return out


def sample(net, cfg, prof, n: int, seed: int, steps: int, batch_size: int = 64, device="cpu",
           progress=None, workers: int = 1) -> Iterator[Graph]:
    """n graphs in order, `batch_size` at a time. On CPU with `workers` > 1, that many batches
    (of at most n / workers graphs each) are denoised at once on their own threads, each with
    its share of the intra-op threads; a graph depends only on (seed, its index), so the
    graphs are the same whatever the batching."""
    if workers <= 1 or torch.device(device).type != "cpu":
        for lo in range(0, n, batch_size):
            idx = list(range(lo, min(n, lo + batch_size)))
            yield from sample_batch(net, cfg, prof, idx, seed, steps, device)
            if progress is not None:
                progress(len(idx))
        return
    from collections import deque

    from ...core.runtime import thread_pool_share

    size = max(1, min(batch_size, -(-n // workers)))
    batches = [list(range(lo, min(n, lo + size))) for lo in range(0, n, size)]
    with thread_pool_share(workers) as pool:
        pending: deque = deque()
        for i, idx in enumerate(batches):
            pending.append((len(idx), pool.submit(sample_batch, net, cfg, prof, idx, seed, steps, device)))
            # keep `workers` batches in flight; after the last one is submitted, drain them in order
            while pending and (len(pending) == workers or i == len(batches) - 1):
                k, fut = pending.popleft()
                yield from fut.result()
                if progress is not None:
                    progress(k)
